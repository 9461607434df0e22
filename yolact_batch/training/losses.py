"""YOLACT's training losses: smooth-L1 boxes, OHEM classification, prototype masks, semantic seg.

Each function returns a sum over one batch; ``yolact_loss`` normalises them as the paper does
(box, class and mask terms by the number of positive priors, the semantic term by the batch
size) and weights them with the reference's alphas.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from yolact_batch.torchnet.graph import crop_masks
from yolact_batch.training.targets import Match, match


@dataclass(frozen=True)
class LossWeights:
    """Loss weights and mining settings (the reference's yolact_base values).

    Attributes:
        box: weight of the smooth-L1 box term (``bbox_alpha``).
        conf: weight of the classification term (``conf_alpha``).
        mask: weight of the prototype mask term (``mask_alpha``).
        semantic: weight of the auxiliary semantic segmentation term.
        negpos_ratio: hard negatives kept per positive prior (OHEM).
        max_masks: positives per image that train masks (a random subset beyond it).
    """

    box: float = 1.5
    conf: float = 1.0
    mask: float = 6.125
    semantic: float = 1.0
    negpos_ratio: int = 3
    max_masks: int = 100


@dataclass(frozen=True)
class Targets:
    """Ground truth of one image, relative to the network input.

    Attributes:
        boxes: ``float32[G, 4]`` relative xyxy boxes.
        labels: ``int64[G]`` foreground class indices (0-based).
        masks: ``float32[G, Hp, Wp]`` binary masks at prototype resolution.
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor


def box_loss(loc: torch.Tensor, target: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 (beta 1) of ``loc`` ``[..., P, 4]`` against ``target``, summed over positive priors."""
    return F.smooth_l1_loss(loc[positive], target[positive], reduction="sum")


def hard_negatives(conf_logits: torch.Tensor, labels: torch.Tensor, negpos_ratio: int) -> torch.Tensor:
    """OHEM: per image, the ``negpos_ratio * num_pos`` background priors the network finds hardest.

    Args:
        conf_logits: ``float32[B, P, C]``.
        labels: ``int64[B, P]`` (see ``Match.labels``).

    Returns:
        ``bool[B, P]``, true for the negatives kept (hardness: background cross-entropy).
    """
    with torch.no_grad():
        hardness = torch.logsumexp(conf_logits, dim=-1) - conf_logits[..., 0]
        hardness = torch.where(labels == 0, hardness, -torch.inf)  # positives and neutrals never qualify
        order = hardness.argsort(dim=1, descending=True, stable=True)
        rank = order.argsort(dim=1, stable=True)
        num_pos = (labels > 0).sum(dim=1, keepdim=True)
        num_neg = torch.minimum(negpos_ratio * num_pos, (labels == 0).sum(dim=1, keepdim=True))
        return rank < num_neg


def conf_loss(conf_logits: torch.Tensor, labels: torch.Tensor, negpos_ratio: int = 3) -> torch.Tensor:
    """Softmax cross-entropy over the positive priors and the OHEM negatives, summed."""
    selected = (labels > 0) | hard_negatives(conf_logits, labels, negpos_ratio)
    return F.cross_entropy(conf_logits[selected], labels[selected], reduction="sum")


def mask_loss(
    proto: torch.Tensor, coeffs: torch.Tensor, gt_boxes: torch.Tensor, gt_masks: torch.Tensor
) -> torch.Tensor:
    """Prototype mask loss of one image, summed over its instances.

    Each mask ``sigmoid(proto @ coeffs)`` is compared with its ground truth by binary
    cross-entropy inside the ground-truth box only (padded by one prototype pixel, as at
    inference), and divided by that box's area so large and small objects weigh the same.

    Args:
        proto: ``float32[Hp, Wp, M]`` prototypes.
        coeffs: ``float32[N, M]`` coefficients of the positive priors.
        gt_boxes: ``float32[N, 4]`` the relative xyxy box each prior matched.
        gt_masks: ``float32[N, Hp, Wp]`` the matching binary masks.
    """
    height, width = proto.shape[:2]
    logits = torch.einsum("hwm,nm->nhw", proto, coeffs)
    # BCE on logits is the stable form of BCE(sigmoid(logits)).
    pixel_loss = F.binary_cross_entropy_with_logits(logits, gt_masks, reduction="none")
    pixel_loss = crop_masks(pixel_loss, gt_boxes)
    area = ((gt_boxes[:, 2] - gt_boxes[:, 0]) * width * (gt_boxes[:, 3] - gt_boxes[:, 1]) * height).clamp(min=1)
    return (pixel_loss.sum(dim=(1, 2)) / area).sum()


def semantic_loss(segment_logits: torch.Tensor, targets: list[Targets]) -> torch.Tensor:
    """Per-class BCE of the semantic head ``[B, C, h, w]`` against the union of each class's masks.

    Summed over the batch, averaged over pixels.
    """
    num_classes, height, width = segment_logits.shape[1:]
    total = segment_logits.new_zeros(())
    for logits, t in zip(segment_logits, targets):
        semantic = torch.zeros(num_classes, height, width)
        if len(t.labels):
            small = F.interpolate(t.masks[None], size=(height, width), mode="bilinear", align_corners=False)[0]
            for label, mask in zip(t.labels.tolist(), small.gt(0.5).float()):
                semantic[label] = torch.maximum(semantic[label], mask)
        total = total + F.binary_cross_entropy_with_logits(logits, semantic, reduction="sum") / (height * width)
    return total


def yolact_loss(
    loc: torch.Tensor,
    conf_logits: torch.Tensor,
    coeffs: torch.Tensor,
    proto: torch.Tensor,
    segment_logits: torch.Tensor,
    targets: list[Targets],
    priors: torch.Tensor,
    weights: LossWeights = LossWeights(),
) -> dict[str, torch.Tensor]:
    """The weighted, normalised losses of a batch: ``{"box", "conf", "mask", "semantic", "total"}``.

    Args:
        loc, conf_logits, coeffs, proto: the network's ``heads`` (``[B, P, 4]``, ``[B, P, C]``,
            ``[B, P, M]``, ``[B, Hp, Wp, M]``).
        segment_logits: ``[B, C - 1, h, w]`` semantic head on P3.
        targets: the ground truth of each image.
        priors: ``float32[P, 4]`` priors ``(cx, cy, w, h)``.
        weights: loss weights and mining settings.
    """
    matches: list[Match] = [match(t.boxes, t.labels, priors) for t in targets]
    labels = torch.stack([m.labels for m in matches])
    loc_target = torch.stack([m.loc for m in matches])
    positive = labels > 0
    num_pos = max(int(positive.sum()), 1)

    mask_total = loc.new_zeros(())
    for b, (m, t) in enumerate(zip(matches, targets)):
        idx = torch.nonzero(m.positive).squeeze(1)
        if idx.numel() == 0:
            continue
        if idx.numel() > weights.max_masks:
            idx = idx[torch.randperm(idx.numel())[: weights.max_masks]]
        gt = m.gt_index[idx]
        mask_total = mask_total + mask_loss(proto[b], coeffs[b, idx], t.boxes[gt], t.masks[gt])

    losses = {
        "box": weights.box * box_loss(loc, loc_target, positive) / num_pos,
        "conf": weights.conf * conf_loss(conf_logits, labels, weights.negpos_ratio) / num_pos,
        "mask": weights.mask * mask_total / num_pos,
        "semantic": weights.semantic * semantic_loss(segment_logits, targets) / len(targets),
    }
    losses["total"] = sum(losses.values())
    return losses
