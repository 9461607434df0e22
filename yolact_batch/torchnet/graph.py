"""The ``graph`` contract in torch: raw heads -> fixed-size detections, ONNX-exportable.

Box decode, Fast NMS, the global top-``max_detections`` cut, mask assembly and crop, with static
shapes (only the batch axis is dynamic) and the reference's float32 operation order, so the
results equal the host post-processing. Output layout is ``yolact_batch.core.heads.GraphHeads``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from yolact_batch.core.boxes import VARIANCES
from yolact_batch.core.configs import ModelConfig
from yolact_batch.core.priors import make_priors
from yolact_batch.core.settings import DetectSettings

_NOT_CANDIDATE = -1.0  # score given to priors below conf_threshold; real scores are >= 0


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Regressions ``[..., P, 4]`` + priors ``[P, 4]`` (cx, cy, w, h) -> boxes ``(x1, y1, x2, y2)``."""
    center = priors[:, :2] + loc[..., :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[..., 2:] * VARIANCES[1])
    top_left = center - size / 2
    return torch.cat([top_left, size + top_left], dim=-1)


def pairwise_iou(boxes: torch.Tensor) -> torch.Tensor:
    """IoU of every pair in each group: ``[..., N, 4]`` xyxy -> ``[..., N, N]`` (row i, column j)."""
    a = boxes.unsqueeze(-2)  # [..., N, 1, 4]: box i
    b = boxes.unsqueeze(-3)  # [..., 1, N, 4]: box j
    wh = (torch.min(a[..., 2:], b[..., 2:]) - torch.max(a[..., :2], b[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return inter / (area.unsqueeze(-1) + area.unsqueeze(-2) - inter)


def crop_masks(masks: torch.Tensor, boxes: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """Zero masks ``[..., H, W]`` outside their boxes ``[..., 4]`` (relative xyxy), padded by ``padding`` px."""
    height, width = masks.shape[-2:]
    x1, x2 = _pixel_span(boxes[..., 0], boxes[..., 2], width, padding)
    y1, y2 = _pixel_span(boxes[..., 1], boxes[..., 3], height, padding)
    cols = torch.arange(width, dtype=masks.dtype, device=masks.device)
    rows = torch.arange(height, dtype=masks.dtype, device=masks.device)
    keep_x = (cols >= x1.unsqueeze(-1)) & (cols < x2.unsqueeze(-1))
    keep_y = (rows >= y1.unsqueeze(-1)) & (rows < y2.unsqueeze(-1))
    return masks * (keep_y.unsqueeze(-1) & keep_x.unsqueeze(-2)).to(masks.dtype)


def _pixel_span(a: torch.Tensor, b: torch.Tensor, size: int, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = a * size
    b = b * size
    low = (torch.min(a, b) - padding).clamp(min=0)
    high = (torch.max(a, b) + padding).clamp(max=size)
    return low, high


class GraphHead(nn.Module):
    """Raw heads -> ``(boxes, scores, classes, masks, num_detections[, mask_scores])`` for a batch.

    Args:
        config: the model config (priors, number of classes).
        detect: NMS settings; ``method`` must be ``"fast"``.
        score_threshold: detections are valid only with a score strictly above this.
        crop: zero each mask outside its box (prototype resolution, padding 1).
        maskiou_net: YOLACT++'s ``FastMaskIoUNet``: run on the (cropped) prototype-resolution
            sigmoid masks, before any upsampling or threshold, as the reference does; adds the
            ``mask_scores`` output ``score * IoU[class]``.
    """

    def __init__(
        self,
        config: ModelConfig,
        detect: DetectSettings = DetectSettings(),
        *,
        score_threshold: float = 0.0,
        crop: bool = True,
        maskiou_net: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if config.mask_rescoring and maskiou_net is None:
            raise ValueError(f"config {config.name!r} re-scores masks: GraphHead needs the network's maskiou_net")
        self.maskiou_net = maskiou_net
        self.check_settings(detect)
        self.detect = detect
        self.score_threshold = float(score_threshold)
        self.crop = crop
        num_priors = config.priors.num_priors
        self.top_k = min(detect.top_k, num_priors)
        groups = 1 if detect.cross_class_nms else config.num_classes - 1
        self.num_selected = min(detect.max_detections, groups * self.top_k)
        self.register_buffer("priors", torch.from_numpy(make_priors(config.priors)), persistent=False)
        above_diagonal = np.triu(np.ones((self.top_k, self.top_k), dtype=bool), k=1)
        self.register_buffer("above_diagonal", torch.from_numpy(above_diagonal), persistent=False)

    @staticmethod
    def check_settings(detect: DetectSettings) -> None:
        """Raise ValueError for settings the graph contract cannot bake in."""
        if detect.nms != "fast":
            raise ValueError(
                f"the graph contract implements Fast NMS only, got nms={detect.nms!r}; "
                "export the raw contract to run greedy NMS on the host"
            )

    def forward(
        self, loc: torch.Tensor, conf: torch.Tensor, mask: torch.Tensor, proto: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        boxes = decode_boxes(loc, self.priors)  # [B, P, 4]
        foreground = conf[..., 1:]  # [B, P, C]
        best, best_class = foreground.max(dim=-1)
        candidate = best > self.detect.conf_threshold
        if self.detect.cross_class_nms:
            group_scores = torch.where(candidate, best, _NOT_CANDIDATE).unsqueeze(1)  # [B, 1, P]
        else:
            group_scores = torch.where(candidate.unsqueeze(-1), foreground, _NOT_CANDIDATE).transpose(1, 2)
        # Top-k priors of each group (class), best first: [B, G, k].
        scores, prior_idx = group_scores.topk(self.top_k, dim=-1)
        group_boxes = _gather_rows(boxes, prior_idx.flatten(1)).unflatten(1, prior_idx.shape[1:])
        iou = torch.where(self.above_diagonal, pairwise_iou(group_boxes), 0.0)
        kept = (iou.max(dim=-2).values <= self.detect.iou_threshold) & (scores >= 0)

        # Global cut: the best kept (group, rank) entries, best first.
        flat_scores = torch.where(kept, scores, _NOT_CANDIDATE).flatten(1)
        top_scores, top_flat = flat_scores.topk(self.num_selected, dim=-1)  # [B, K]
        top_priors = torch.gather(prior_idx.flatten(1), 1, top_flat)
        if self.detect.cross_class_nms:
            classes = torch.gather(best_class, 1, top_priors)
        else:
            classes = torch.div(top_flat, self.top_k, rounding_mode="floor")
        valid = (top_scores >= 0) & (top_scores > self.score_threshold)
        out_boxes = _gather_rows(boxes, top_priors)
        coeffs = _gather_rows(mask, top_priors)  # [B, K, M]

        height, width = proto.shape[1:3]
        masks = torch.sigmoid(torch.matmul(coeffs, proto.flatten(1, 2).transpose(1, 2)))
        masks = masks.unflatten(2, (height, width))  # [B, K, Hp, Wp]
        if self.crop:
            masks = crop_masks(masks, out_boxes)

        out_scores = torch.where(valid, top_scores, 0.0)
        out_classes = torch.where(valid, classes, 0)
        out_boxes = torch.where(valid.unsqueeze(-1), out_boxes, 0.0)
        out_masks = torch.where(valid[..., None, None], masks, 0.0)
        num_detections = valid.sum(dim=1, dtype=torch.int64)
        outputs = [out_boxes, out_scores, out_classes, out_masks, num_detections]
        if self.maskiou_net is not None:
            iou = self.maskiou_net(masks.flatten(0, 1).unsqueeze(1)).unflatten(0, masks.shape[:2])  # [B, K, C]
            iou = torch.gather(iou, 2, out_classes.unsqueeze(-1)).squeeze(-1)
            outputs.append(out_scores * iou)  # 0 where invalid: out_scores is
        pad = self.detect.max_detections - self.num_selected
        if pad:  # pad axis 1 (detections) of every output but num_detections
            outputs = [t if t.dim() < 2 else F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in outputs]
        return tuple(outputs)


def _gather_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[b, index[b, i], :]`` for ``values [B, P, D]`` and ``index [B, N]`` -> ``[B, N, D]``."""
    return torch.gather(values, 1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


class YolactGraph(nn.Module):
    """A network returning raw heads followed by ``GraphHead``: images in, detections out.

    For YOLACT++ the head holds the network's ``maskiou_net`` (the same module, shared).
    """

    def __init__(self, network: nn.Module, head: GraphHead) -> None:
        super().__init__()
        self.network = network
        self.head = head

    def forward(self, images: torch.Tensor):
        return self.head(*self.network(images))
