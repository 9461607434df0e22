"""Box operations on numpy arrays, named and documented after ``torchvision.ops.boxes``.

The internal box format is ``(x1, y1, x2, y2)`` ("xyxy"). Decoded network boxes are
relative to the image (0..1); ``boxes_to_pixels`` turns them into integer pixel boxes
exactly as the reference's ``postprocess`` does. COCO ``xywh`` appears only at the edge.
"""

from __future__ import annotations

import numpy as np

VARIANCES = (0.1, 0.2)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of ``boxes`` (``[..., 4]`` in ``(x1, y1, x2, y2)``), shape ``[...]``."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _box_inter_union(boxes1: np.ndarray, boxes2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Broadcasts [..., N, 1] against [..., 1, M] one coordinate at a time (contiguous
    # [N, M] passes, not strided [N, M, 2] ones); same float op order as the reference's jaccard.
    x1a, y1a, x2a, y2a = (boxes1[..., :, None, i] for i in range(4))
    x1b, y1b, x2b, y2b = (boxes2[..., None, :, i] for i in range(4))
    w = np.minimum(x2a, x2b) - np.maximum(x1a, x1b)
    np.maximum(w, 0, out=w)
    h = np.minimum(y2a, y2b) - np.maximum(y1a, y1b)
    np.maximum(h, 0, out=h)
    inter = w * h
    union = box_area(boxes1)[..., :, None] + box_area(boxes2)[..., None, :] - inter
    return inter, union


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise intersection-over-union.

    Args:
        boxes1: ``[..., N, 4]`` in ``(x1, y1, x2, y2)``.
        boxes2: ``[..., M, 4]`` in ``(x1, y1, x2, y2)``; leading dims broadcast with ``boxes1``.

    Returns:
        ``[..., N, M]`` IoU values. Two empty boxes give NaN (0/0), as in the reference.
    """
    inter, union = _box_inter_union(boxes1, boxes2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def box_convert(boxes: np.ndarray, in_fmt: str, out_fmt: str) -> np.ndarray:
    """Convert ``[..., 4]`` boxes between ``"xyxy"``, ``"xywh"`` (COCO) and ``"cxcywh"``."""
    formats = ("xyxy", "xywh", "cxcywh")
    if in_fmt not in formats or out_fmt not in formats:
        raise ValueError(f"box formats must be among {formats}, got {in_fmt!r} -> {out_fmt!r}")
    boxes = np.asarray(boxes)
    if in_fmt == out_fmt:
        return boxes.copy()
    if in_fmt == "xywh":
        xyxy = np.concatenate([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], axis=-1)
    elif in_fmt == "cxcywh":
        xyxy = np.concatenate([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], axis=-1)
    else:
        xyxy = boxes
    if out_fmt == "xyxy":
        return xyxy.copy() if xyxy is boxes else xyxy
    if out_fmt == "xywh":
        return np.concatenate([xyxy[..., :2], xyxy[..., 2:] - xyxy[..., :2]], axis=-1)
    return np.concatenate([(xyxy[..., :2] + xyxy[..., 2:]) / 2, xyxy[..., 2:] - xyxy[..., :2]], axis=-1)


def decode_boxes(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Decode box regressions against priors (SSD-style, variances 0.1 / 0.2).

    Args:
        loc: ``float32[P, 4]`` regressions ``(dx, dy, dw, dh)``.
        priors: ``float32[P, 4]`` priors ``(cx, cy, w, h)``, relative.

    Returns:
        ``float32[P, 4]`` relative boxes ``(x1, y1, x2, y2)``, not clamped.
    """
    v0, v1 = np.float32(VARIANCES[0]), np.float32(VARIANCES[1])
    centers = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(loc[:, 2:] * v1)
    top_left = centers - sizes / np.float32(2)
    return np.concatenate([top_left, sizes + top_left], axis=1)


def boxes_to_pixels(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Relative ``(x1, y1, x2, y2)`` boxes to integer pixel boxes, as the reference does.

    Scales by the image size (float32), orders each pair, clamps to ``[0, width]`` /
    ``[0, height]`` and truncates toward zero.

    Returns:
        ``int64[N, 4]`` in ``(x1, y1, x2, y2)``.
    """
    scale = np.array([width, height, width, height], dtype=np.float32)
    scaled = boxes.astype(np.float32, copy=False) * scale
    low = np.clip(np.minimum(scaled[:, :2], scaled[:, 2:]), 0, None)
    high = np.minimum(np.maximum(scaled[:, :2], scaled[:, 2:]), scale[:2])
    return np.concatenate([low, high], axis=1).astype(np.int64)
