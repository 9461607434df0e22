"""Training targets: which prior predicts which ground-truth box, and the box regression targets.

Boxes are relative ``(x1, y1, x2, y2)``; priors are relative ``(cx, cy, w, h)`` as
``yolact_batch.core.priors.make_priors`` builds them. ``encode_boxes`` is the exact inverse of
``yolact_batch.core.boxes.decode_boxes`` (SSD variances 0.1 / 0.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from yolact_batch.core.boxes import VARIANCES

NEUTRAL = -1  # class target of priors that are neither positive nor negative (ignored by the loss)


def prior_boxes(priors: torch.Tensor) -> torch.Tensor:
    """Priors ``[P, 4]`` ``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``."""
    return torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], dim=1)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of ``[N, 4]`` and ``[M, 4]`` xyxy boxes -> ``[N, M]``."""
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(dim=1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(dim=1)
    return inter / (area1[:, None] + area2[None, :] - inter)


def encode_boxes(boxes: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Regression targets ``[P, 4]`` ``(dx, dy, dw, dh)`` of xyxy ``boxes`` ``[P, 4]`` against ``priors``."""
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    sizes = boxes[:, 2:] - boxes[:, :2]
    offsets = (centers - priors[:, :2]) / (VARIANCES[0] * priors[:, 2:])
    scales = torch.log(sizes / priors[:, 2:]) / VARIANCES[1]
    return torch.cat([offsets, scales], dim=1)


@dataclass(frozen=True)
class Match:
    """Targets of one image's priors.

    Attributes:
        labels: ``int64[P]``: ``c + 1`` for a positive prior of foreground class ``c``,
            0 for background, ``NEUTRAL`` for priors the classification loss ignores.
        gt_index: ``int64[P]`` the ground truth each prior overlaps most (meaningful for positives).
        loc: ``float32[P, 4]`` regression targets towards that ground truth.
    """

    labels: torch.Tensor
    gt_index: torch.Tensor
    loc: torch.Tensor

    @property
    def positive(self) -> torch.Tensor:
        return self.labels > 0


def match(
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    priors: torch.Tensor,
    *,
    pos_threshold: float = 0.5,
    neg_threshold: float = 0.4,
) -> Match:
    """Assign ground truths to priors by IoU, as YOLACT does.

    A prior is positive when its best IoU is ``>= pos_threshold``, background when it is
    ``< neg_threshold`` and neutral in between. Every ground truth also claims its own best
    prior (whatever the IoU), so no object goes untrained; ground truths claim in order of
    their best IoU, highest first, each taking its best prior not already claimed.

    Args:
        gt_boxes: ``float32[G, 4]`` relative xyxy boxes (``G`` may be 0).
        gt_labels: ``int64[G]`` foreground class indices (0-based).
        priors: ``float32[P, 4]`` priors ``(cx, cy, w, h)``.
        pos_threshold: IoU from which a prior is positive.
        neg_threshold: IoU below which a prior is background.
    """
    num_priors = priors.shape[0]
    if gt_boxes.shape[0] == 0:
        zeros = torch.zeros(num_priors, dtype=torch.int64)
        return Match(zeros, zeros.clone(), torch.zeros(num_priors, 4))
    iou = box_iou(gt_boxes, prior_boxes(priors))  # [G, P]
    best_iou, gt_index = iou.max(dim=0)
    claimable = iou.clone()
    for _ in range(gt_boxes.shape[0]):
        gt_best, prior_best = claimable.max(dim=1)
        g = int(gt_best.argmax())
        if gt_best[g] < 0:
            break
        p = int(prior_best[g])
        best_iou[p], gt_index[p] = 2.0, g  # above any threshold: always positive
        claimable[g, :] = -1
        claimable[:, p] = -1
    labels = gt_labels[gt_index] + 1
    labels = torch.where(best_iou < pos_threshold, NEUTRAL, labels)
    labels = torch.where(best_iou < neg_threshold, 0, labels)
    return Match(labels, gt_index, encode_boxes(gt_boxes[gt_index], priors))
