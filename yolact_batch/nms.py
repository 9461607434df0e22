"""Non-maximum suppression: YOLACT's Fast NMS (per class and cross-class) and greedy NMS.

All functions take candidate boxes ``float32[N, 4]`` in ``(x1, y1, x2, y2)`` and return
the same triple ``(indices, classes, scores)``, sorted by descending score:
``indices`` into the candidates (``int64[D]``), foreground ``classes`` (``int64[D]``)
and ``scores`` (``float32[D]``). No candidates gives three empty arrays.
"""

from __future__ import annotations

import numpy as np

from yolact_batch.boxes import box_iou


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)


def _top_k_desc(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of each row of ``scores``, sorted descending."""
    n = scores.shape[-1]
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
    else:
        part = np.broadcast_to(np.arange(n), scores.shape).copy()
    order = np.argsort(-np.take_along_axis(scores, part, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(part, order, axis=-1)


def _fast_nms_in_score_order(
    boxes: np.ndarray,
    groups: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    max_detections: int,
) -> np.ndarray:
    """Fast NMS over entries already ranked within their group, evaluated lazily.

    ``boxes [E, 4]``, ``groups [E]`` and ``scores [E]`` list every group's candidates in
    descending score order, group after group. An entry is dropped when its IoU with any
    earlier entry of its group is ``> iou_threshold`` (dropped entries still suppress:
    that is Fast NMS). Because an entry's fate depends only on better entries of its own
    group, the entries can be visited in global score order and the work stops once
    ``max_detections`` survivors are known; the result equals the full ``[G, k, k]``
    IoU-matrix computation of the reference.

    Returns:
        ``int64[D]`` positions of the surviving entries, best first, ``D <= max_detections``.
    """
    order = np.argsort(-scores, kind="stable")  # stable: ties keep their in-group rank order
    prefix = min(len(order), max(4 * max_detections, 64))
    while True:
        picked = order[:prefix]
        same_group = groups[picked][:, None] == groups[picked][None, :]
        iou = box_iou(boxes[picked], boxes[picked])
        # Within a group, global order equals rank order, so "earlier" is the strict upper triangle.
        iou = np.where(np.triu(same_group, k=1), iou, 0)
        # A NaN IoU (two empty boxes) propagates through max and suppresses, as in torch.
        survivors = picked[iou.max(axis=0, initial=0) <= iou_threshold] if prefix else picked
        if len(survivors) >= max_detections or prefix == len(order):
            return survivors[:max_detections]
        prefix = min(len(order), prefix * 4)


def fast_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_detections: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLACT Fast NMS, one matrix per class.

    Each class keeps its ``top_k`` best candidates; a candidate is dropped when its IoU with
    any higher-scored candidate of its class is ``> iou_threshold`` (even if that one was
    dropped itself). The survivors of all classes are sorted and cut to ``max_detections``.

    Args:
        boxes: ``float32[N, 4]`` candidate boxes in ``(x1, y1, x2, y2)``.
        scores: ``float32[C, N]`` per-class scores of each candidate.
    """
    num_classes, n = scores.shape
    if n == 0 or num_classes == 0:
        return _empty()
    idx = _top_k_desc(scores, min(top_k, n)).ravel()  # [C * k], class-major, best first
    classes = np.repeat(np.arange(num_classes), len(idx) // num_classes)
    top_scores = scores[classes, idx]
    kept = _fast_nms_in_score_order(boxes[idx], classes, top_scores, iou_threshold, max_detections)
    return idx[kept].astype(np.int64), classes[kept].astype(np.int64), top_scores[kept]


def cross_class_fast_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_detections: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fast NMS over all classes at once: each candidate competes with its best class score.

    Args:
        boxes: ``float32[N, 4]`` candidate boxes in ``(x1, y1, x2, y2)``.
        scores: ``float32[C, N]`` per-class scores of each candidate.
    """
    if scores.shape[1] == 0 or scores.shape[0] == 0:
        return _empty()
    best = scores.max(axis=0)
    idx = _top_k_desc(best, min(top_k, best.shape[0]))
    kept = idx[_fast_nms_in_score_order(boxes[idx], np.zeros(len(idx), np.int64), best[idx], iou_threshold, max_detections)]
    return kept.astype(np.int64), scores.argmax(axis=0)[kept].astype(np.int64), best[kept]


def _best(indices, classes, scores, max_detections):
    order = np.argsort(-scores, kind="stable")[:max_detections]
    return indices[order].astype(np.int64), classes[order].astype(np.int64), scores[order]


def greedy_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.05,
    max_detections: int = 100,
    cross_class: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classic sequential NMS (torchvision semantics): only kept boxes suppress others.

    Per class (or over the best class with ``cross_class``), candidates scoring
    ``> score_threshold`` are visited best first; each suppresses the remaining ones whose
    IoU with it is ``> iou_threshold``.

    Args:
        boxes: ``float32[N, 4]`` candidate boxes in ``(x1, y1, x2, y2)``.
        scores: ``float32[C, N]`` per-class scores of each candidate.
    """
    if scores.shape[1] == 0 or scores.shape[0] == 0:
        return _empty()
    if cross_class:
        rows = [(scores.argmax(axis=0), scores.max(axis=0))]
    else:
        rows = [(np.full(scores.shape[1], c), scores[c]) for c in range(scores.shape[0])]
    out_idx, out_cls, out_scores = [], [], []
    for classes, row in rows:
        cand = np.flatnonzero(row > score_threshold)
        cand = cand[np.argsort(-row[cand], kind="stable")]
        if cand.size == 0:
            continue
        iou = box_iou(boxes[cand], boxes[cand])
        alive = np.ones(cand.size, bool)
        for i in range(cand.size):
            if alive[i]:
                alive[i + 1 :] &= ~(iou[i, i + 1 :] > iou_threshold)
        kept = cand[alive]
        out_idx.append(kept)
        out_cls.append(classes[kept])
        out_scores.append(row[kept])
    if not out_idx:
        return _empty()
    return _best(np.concatenate(out_idx), np.concatenate(out_cls), np.concatenate(out_scores), max_detections)
