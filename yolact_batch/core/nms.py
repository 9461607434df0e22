"""Non-maximum suppression: YOLACT's Fast NMS (per class and cross-class) and greedy NMS.

All functions take candidate boxes ``float32[N, 4]`` in ``(x1, y1, x2, y2)`` and return
the same triple ``(indices, classes, scores)``, sorted by descending score:
``indices`` into the candidates (``int64[D]``), foreground ``classes`` (``int64[D]``)
and ``scores`` (``float32[D]``). No candidates gives three empty arrays.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from yolact_batch.core.boxes import box_iou


def _check_inputs(boxes: np.ndarray, scores: np.ndarray, best_scores: np.ndarray | None = None) -> None:
    """Shapes every NMS here expects, refused with the shape found (as torchvision's ``nms`` does)."""
    if np.ndim(boxes) != 2 or np.shape(boxes)[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {list(np.shape(boxes))}")
    if np.ndim(scores) != 2 or np.shape(scores)[1] != np.shape(boxes)[0]:
        raise ValueError(
            f"scores must have shape [C, N] with N = {np.shape(boxes)[0]} boxes, got {list(np.shape(scores))}"
        )
    if best_scores is not None and np.shape(best_scores) != (np.shape(boxes)[0],):
        raise ValueError(f"best_scores must have shape [{np.shape(boxes)[0]}], got {list(np.shape(best_scores))}")


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)


def _group_runs(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For entries listed best first: ``by_group``, the entries grouped (each group still best
    first), and ``rank``, the rank of ``by_group[p]`` within its group (0 = best)."""
    by_group = np.argsort(groups, kind="stable")
    sorted_groups = groups[by_group]
    first = np.ones(len(groups), bool)
    first[1:] = sorted_groups[1:] != sorted_groups[:-1]
    positions = np.arange(len(groups))
    return by_group, positions - np.maximum.accumulate(np.where(first, positions, 0))


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """For entries listed best first, the rank of each within its group (0 = best)."""
    by_group, rank = _group_runs(groups)
    out = np.empty(len(groups), np.int64)
    out[by_group] = rank
    return out


def _group_pairs(by_group: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``(better, worse)`` of entries of one group, from ``_group_runs``' result
    (``rank.sum()`` pairs)."""
    # by_group[p] pairs with the rank[p] entries before it in its group: the better ones.
    positions = np.arange(len(rank))
    worse = np.repeat(positions, rank)
    offset = np.arange(len(worse)) - np.repeat(np.cumsum(rank) - rank, rank)  # 0 .. rank[p] - 1
    better = np.repeat(positions - rank, rank) + offset
    return by_group[better], by_group[worse]


def _pair_iou(boxes: np.ndarray, better: np.ndarray, worse: np.ndarray) -> np.ndarray:
    """``box_iou(boxes[better], boxes[worse])`` of each pair alone (``[K]``, not ``[K, K]``)."""
    # [K, 1, 4]: one pair per leading index. np.take gathers rows ~10x faster than boxes[i].
    return box_iou(np.take(boxes, better, axis=0)[:, None], np.take(boxes, worse, axis=0)[:, None])[:, 0, 0]


def _suppressed(boxes: np.ndarray, groups: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Fast NMS's test for entries listed best first: is the IoU with any better entry of
    the same group ``> iou_threshold``? (Suppressed entries still suppress.)

    The reference builds one ``k x k`` upper-triangular IoU matrix per group; only its pairs
    (better, worse) of one group count, so the IoU of those pairs alone is computed.
    """
    better, worse = _group_pairs(*_group_runs(groups))
    iou = _pair_iou(boxes, better, worse)
    # The reference's maxima see its matrices' zeros too (a threshold below 0 suppresses all);
    # a NaN IoU (two empty boxes) suppresses, as in torch.
    suppressed = ~(np.zeros(len(groups), iou.dtype) <= iou_threshold)
    suppressed[worse[~(iou <= iou_threshold)]] = True
    return suppressed


# Pairs of one NMS call above which greedy NMS goes one kept box at a time (memory linear in the
# entries, not quadratic: about 50 bytes a pair would be 200 MB here). Tunes memory only.
_MAX_PAIRS = 4_000_000


def _greedy_kept(boxes: np.ndarray, groups: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Classic NMS for entries listed best first: is no better *kept* entry of the same group
    overlapping it with an IoU ``> iou_threshold``? (A NaN IoU suppresses nothing, as in torchvision.)"""
    by_group, rank = _group_runs(groups)
    if int(rank.sum()) > _MAX_PAIRS:
        return _greedy_kept_one_by_one(boxes, groups, iou_threshold)
    better, worse = _group_pairs(by_group, rank)
    hits = np.flatnonzero(_pair_iou(boxes, better, worse) > iou_threshold)
    hits = hits[np.argsort(better[hits], kind="stable")]
    suppressor, victims = better[hits], worse[hits]
    entries, starts = np.unique(suppressor, return_index=True)
    bounds = np.append(starts, len(hits)).tolist()
    kept = np.ones(len(groups), bool)
    # Best first: when entry i comes up, every better entry of its group has been decided.
    for k, i in enumerate(entries.tolist()):
        if kept[i]:
            kept[victims[bounds[k] : bounds[k + 1]]] = False
    return kept


def _greedy_kept_one_by_one(boxes: np.ndarray, groups: np.ndarray, iou_threshold: float) -> np.ndarray:
    """``_greedy_kept`` by the classic loop: each kept entry, best first, suppresses the worse
    entries of its group it overlaps (the same IoU of each pair, so the same decisions)."""
    kept = np.ones(len(groups), bool)
    for group in np.unique(groups).tolist():
        members = np.flatnonzero(groups == group)  # best first
        for j, entry in enumerate(members.tolist()):
            if kept[entry] and j + 1 < len(members):
                worse = members[j + 1 :]
                kept[worse[_pair_iou(boxes, np.full(len(worse), entry), worse) > iou_threshold]] = False
    return kept


Survivors = Callable[[Callable[[np.ndarray], np.ndarray], np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _nms_by_score(
    boxes_of: Callable[[np.ndarray], np.ndarray],
    columns_of: Callable[[np.ndarray], np.ndarray],
    best: np.ndarray,
    max_detections: int,
    survivors: Survivors,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An NMS over scores ``[C, N]`` in which an entry's fate depends only on better entries
    (Fast NMS: its rank within its class and the better boxes of its class; greedy NMS: the
    better kept boxes of its class), visiting entries from the best down.

    So the entries scoring at least some threshold ``t`` can be decided on their own, and if
    ``max_detections`` of them survive, nothing below ``t`` can make the cut. ``t`` starts
    high (about ``2 * max_detections`` entries) and is lowered until that holds or every
    entry is in; the result equals the NMS of all entries at once.
    ``best`` is each candidate's highest class score; ``columns_of(i)`` gives the scores
    ``[C, len(i)]`` and ``boxes_of(i)`` the boxes ``[len(i), 4]`` of candidates ``i``, which
    are all this reads (a few hundred of the thousands of candidates).
    ``survivors(boxes_of, idx, classes, scores)`` decides entries listed best first
    (candidate ``idx[j]`` in class ``classes[j]``): the positions of those it keeps, ascending.
    """
    num_candidates = best.shape[0]
    depth = 2 * max_detections
    while True:
        if depth >= num_candidates:
            threshold = -np.inf
        else:
            threshold = np.partition(best, num_candidates - depth)[num_candidates - depth]
        # Only candidates whose best score reaches t hold entries >= t; the column subset
        # keeps nonzero's order (class, then candidate).
        columns = np.flatnonzero(best >= threshold)
        block = columns_of(columns)
        classes, local = np.divmod(np.flatnonzero(block >= threshold), block.shape[1])  # np.nonzero, 3x faster
        entry_scores = block[classes, local]
        idx = columns[local]
        order = np.argsort(-entry_scores, kind="stable")  # ties: class, then candidate order
        classes, idx, entry_scores = classes[order], idx[order], entry_scores[order]
        keep = survivors(boxes_of, idx, classes, entry_scores)
        if len(keep) >= max_detections or threshold == -np.inf:
            keep = keep[:max_detections]
            return idx[keep].astype(np.int64), classes[keep].astype(np.int64), entry_scores[keep]
        depth *= 4


def _on_demand(boxes_of, scores_of, best_scores, max_detections, cross_class, survivors):
    """``_nms_by_score`` per class, or over each candidate's best score with ``cross_class``."""
    if np.ndim(best_scores) != 1:
        raise ValueError(f"best_scores must have shape [N], got {list(np.shape(best_scores))}")
    if best_scores.shape[0] == 0:
        return _empty()
    if not cross_class:
        return _nms_by_score(boxes_of, scores_of, best_scores, max_detections, survivors)
    idx, _, best = _nms_by_score(boxes_of, lambda i: best_scores[None, i], best_scores, max_detections, survivors)
    return idx, scores_of(idx).argmax(axis=0).astype(np.int64), best


def fast_nms_on_demand(
    boxes_of: Callable[[np.ndarray], np.ndarray],
    scores_of: Callable[[np.ndarray], np.ndarray],
    best_scores: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_detections: int = 100,
    cross_class: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``fast_nms`` (or ``cross_class_fast_nms``) fetching boxes and scores only as it needs them.

    The same result as ``fast_nms(boxes, scores, best_scores=best_scores)`` with
    ``boxes_of(i) == boxes[i]`` and ``scores_of(i) == scores[:, i]``: ``Detect`` decodes and
    gathers just the few hundred candidates this reads instead of all of them.

    Args:
        boxes_of: candidate indices ``int64[K]`` -> their boxes ``float32[K, 4]`` in ``(x1, y1, x2, y2)``.
        scores_of: candidate indices ``int64[K]`` -> their scores ``float32[C, K]``.
        best_scores: ``float32[N]`` each candidate's highest class score.
    """

    def survivors(boxes_of, idx, classes, scores):
        in_top_k = np.flatnonzero(_rank_within(classes) < top_k)
        return in_top_k[~_suppressed(boxes_of(idx[in_top_k]), classes[in_top_k], iou_threshold)]

    return _on_demand(boxes_of, scores_of, best_scores, max_detections, cross_class, survivors)


def _dense_fast_nms(boxes, scores, best_scores, iou_threshold, top_k, max_detections, *, cross_class):
    """``fast_nms_on_demand`` over whole arrays, their shapes checked first."""
    _check_inputs(boxes, scores, best_scores)
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        return _empty()
    best = scores.max(axis=0) if best_scores is None else best_scores
    return fast_nms_on_demand(
        boxes.__getitem__, lambda i: scores[:, i], best, iou_threshold=iou_threshold, top_k=top_k,
        max_detections=max_detections, cross_class=cross_class,
    )  # fmt: skip


def fast_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_detections: int = 100,
    best_scores: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLACT Fast NMS, one matrix per class.

    Each class keeps its ``top_k`` best candidates; a candidate is dropped when its IoU with
    any higher-scored candidate of its class is ``> iou_threshold`` (even if that one was
    dropped itself). The survivors of all classes are sorted and cut to ``max_detections``.

    Args:
        boxes: ``float32[N, 4]`` candidate boxes in ``(x1, y1, x2, y2)``.
        scores: ``float32[C, N]`` per-class scores of each candidate (a transposed view is fine).
        best_scores: ``float32[N]``, ``scores.max(axis=0)`` when the caller already has it
            (it costs as much as the rest of the function).

    Returns:
        ``(indices int64[K], classes int64[K], scores float32[K])``, best score first.
    """
    return _dense_fast_nms(boxes, scores, best_scores, iou_threshold, top_k, max_detections, cross_class=False)


def cross_class_fast_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_detections: int = 100,
    best_scores: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fast NMS over all classes at once: each candidate competes with its best class score.

    Args:
        boxes: ``float32[N, 4]`` candidate boxes in ``(x1, y1, x2, y2)``.
        scores: ``float32[C, N]`` per-class scores of each candidate.
        best_scores: ``float32[N]``, ``scores.max(axis=0)`` when the caller already has it.

    Returns:
        ``(indices int64[K], classes int64[K], scores float32[K])``, best score first.
    """
    return _dense_fast_nms(boxes, scores, best_scores, iou_threshold, top_k, max_detections, cross_class=True)


def greedy_nms_on_demand(
    boxes_of: Callable[[np.ndarray], np.ndarray],
    scores_of: Callable[[np.ndarray], np.ndarray],
    best_scores: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.05,
    max_detections: int = 100,
    cross_class: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``greedy_nms`` fetching boxes and scores only as it needs them (see ``fast_nms_on_demand``).

    Args:
        boxes_of: candidate indices ``int64[K]`` -> their boxes ``float32[K, 4]`` in ``(x1, y1, x2, y2)``.
        scores_of: candidate indices ``int64[K]`` -> their scores ``float32[C, K]``.
        best_scores: ``float32[N]`` each candidate's highest class score ``> score_threshold``
            (``-inf`` where it has none; with ``cross_class``, where its highest is not).
    """

    def survivors(boxes_of, idx, classes, scores):
        entering = np.flatnonzero(scores > score_threshold)
        return entering[_greedy_kept(boxes_of(idx[entering]), classes[entering], iou_threshold)]

    return _on_demand(boxes_of, scores_of, best_scores, max_detections, cross_class, survivors)


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

    Returns:
        ``(indices int64[K], classes int64[K], scores float32[K])``, best score first.
    """
    _check_inputs(boxes, scores)
    if scores.shape[1] == 0 or scores.shape[0] == 0:
        return _empty()
    # A NaN score never enters; with cross_class, neither does a candidate with one.
    if cross_class:
        best = scores.max(axis=0)
        best = np.where(best > score_threshold, best, -np.inf)
    else:
        best = np.where(scores > score_threshold, scores, -np.inf).max(axis=0)
    return greedy_nms_on_demand(
        boxes.__getitem__, lambda i: scores[:, i], best, iou_threshold=iou_threshold,
        score_threshold=score_threshold, max_detections=max_detections, cross_class=cross_class,
    )  # fmt: skip
