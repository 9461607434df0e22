"""Fast NMS against slow reference oracles, hand tables and properties (as torchvision tests NMS)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yolact_batch.core.nms import (
    cross_class_fast_nms,
    fast_nms,
    fast_nms_on_demand,
    greedy_nms,
    greedy_nms_on_demand,
)


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _iou32(a, b):
    """One IoU in float32 scalars, in the reference's operation order; two empty boxes give NaN."""
    w = max(np.float32(0), min(a[2], b[2]) - max(a[0], b[0]))
    h = max(np.float32(0), min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    with np.errstate(invalid="ignore"):
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def reference_fast_nms(boxes, scores, iou_threshold, top_k, max_detections, iou=_iou):
    """Literal, loop-by-loop Fast NMS: per class, top_k best, drop if any better one overlaps
    (a NaN IoU drops it too: the reference keeps a box only if ``max IoU <= threshold``)."""
    kept = []
    for c in range(scores.shape[0]):
        order = sorted(range(scores.shape[1]), key=lambda i: -scores[c, i])[:top_k]
        for rank, i in enumerate(order):
            if all(iou(boxes[j], boxes[i]) <= iou_threshold for j in order[:rank]):
                kept.append((float(scores[c, i]), c, i))
    kept.sort(key=lambda t: -t[0])
    return kept[:max_detections]


def reference_greedy_nms(boxes, scores, iou_threshold, score_threshold, max_detections, iou=_iou):
    """Literal torchvision NMS per class: a box is dropped if a kept better one overlaps it
    (IoU > threshold: a NaN IoU drops nothing)."""
    kept = []
    for c in range(scores.shape[0]):
        order = sorted(
            (i for i in range(scores.shape[1]) if scores[c, i] > score_threshold), key=lambda i: -scores[c, i]
        )
        alive = []
        for i in order:
            if not any(iou(boxes[j], boxes[i]) > iou_threshold for j in alive):
                alive.append(i)
        kept += [(float(scores[c, i]), c, i) for i in alive]
    kept.sort(key=lambda t: -t[0])
    return kept[:max_detections]


def random_case(seed, n=60, classes=4):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 0.8, (n, 2))
    wh = rng.uniform(0.02, 0.4, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    # Clusters of near-duplicates so suppression actually happens.
    boxes[n // 2 :] = boxes[: n - n // 2] + rng.normal(0, 0.01, (n - n // 2, 4)).astype(np.float32)
    scores = rng.permutation(classes * n).reshape(classes, n).astype(np.float32) / (classes * n)  # distinct
    return boxes, scores


def as_triples(result):
    idx, cls, sc = result
    return [(float(s), int(c), int(i)) for i, c, s in zip(idx, cls, sc)]


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("top_k,max_det", [(200, 100), (7, 100), (200, 5), (1, 3)])
def test_fast_nms_matches_oracle(seed, top_k, max_det):
    boxes, scores = random_case(seed)
    got = as_triples(fast_nms(boxes, scores, iou_threshold=0.5, top_k=top_k, max_detections=max_det))
    assert got == reference_fast_nms(boxes, scores, 0.5, top_k, max_det)


@pytest.mark.parametrize("seed", range(10))
def test_cross_class_fast_nms_matches_oracle(seed):
    boxes, scores = random_case(seed)
    best = scores.max(axis=0, keepdims=True)
    expected = [(s, int(scores[:, i].argmax()), i) for s, _, i in reference_fast_nms(boxes, best, 0.5, 200, 100)]
    assert as_triples(cross_class_fast_nms(boxes, scores, iou_threshold=0.5, top_k=200, max_detections=100)) == expected


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("cross_class", [False, True])
def test_fast_nms_on_demand_reads_only_what_it_needs_and_matches_the_oracle(seed, cross_class):
    boxes, scores = random_case(seed, n=300)
    best = scores.max(axis=0)
    read = set()

    def boxes_of(i):
        read.update(i.tolist())
        return boxes[i]

    got = as_triples(fast_nms_on_demand(boxes_of, lambda i: scores[:, i], best, top_k=200, max_detections=10,
                                        cross_class=cross_class))  # fmt: skip
    if cross_class:
        ranked = reference_fast_nms(boxes, best[None], 0.5, 200, 10)
        expected = [(s, int(scores[:, i].argmax()), i) for s, _, i in ranked]
    else:
        expected = reference_fast_nms(boxes, scores, 0.5, 200, 10)
    assert got == expected
    assert len(read) < len(boxes)  # 10 detections need far fewer than the 300 candidates
    assert fast_nms_on_demand(boxes_of, lambda i: scores[:, i], best[:0])[0].shape == (0,)


@pytest.mark.parametrize("seed", range(10))
def test_greedy_nms_matches_oracle(seed):
    boxes, scores = random_case(seed)
    got = as_triples(greedy_nms(boxes, scores, iou_threshold=0.5, score_threshold=0.3, max_detections=100))
    assert got == reference_greedy_nms(boxes, scores, 0.5, 0.3, 100)


@pytest.mark.parametrize("nms", [fast_nms, cross_class_fast_nms, greedy_nms])
def test_empty_inputs_give_empty_arrays(nms):
    for scores in (np.zeros((3, 0), np.float32), np.zeros((0, 5), np.float32)):
        idx, cls, sc = nms(np.zeros((scores.shape[1], 4), np.float32), scores)
        assert idx.shape == cls.shape == sc.shape == (0,)
        assert idx.dtype == cls.dtype == np.int64 and sc.dtype == np.float32


# Hand-written table: two boxes of one class; the second overlaps the first by exactly the IoU given.
@pytest.mark.parametrize(
    "iou_threshold,second_box,kept",
    [
        (0.5, [0, 0, 10, 10], 1),  # duplicate: suppressed
        (0.5, [5, 0, 15, 10], 2),  # IoU 1/3 <= 0.5: kept
        (1 / 3, [5, 0, 15, 10], 2),  # exactly at the threshold: kept (suppression is strict >)
        (0.3, [5, 0, 15, 10], 1),
        (0.5, [20, 20, 30, 30], 2),  # disjoint
    ],
)
def test_threshold_table(iou_threshold, second_box, kept):
    boxes = np.array([[0, 0, 10, 10], second_box], np.float32)
    scores = np.array([[0.9, 0.8]], np.float32)
    for nms in (fast_nms, greedy_nms):
        extra = {"score_threshold": 0.0} if nms is greedy_nms else {}
        assert len(nms(boxes, scores, iou_threshold=np.float32(iou_threshold), **extra)[0]) == kept


def test_fast_nms_suppressed_box_still_suppresses():
    # A > B > C in score; A overlaps B, B overlaps C, A does not overlap C.
    boxes = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]], np.float32)
    scores = np.array([[0.9, 0.8, 0.7]], np.float32)
    assert fast_nms(boxes, scores, iou_threshold=0.3)[0].tolist() == [0]  # C dropped by dropped B
    assert greedy_nms(boxes, scores, iou_threshold=0.3, score_threshold=0)[0].tolist() == [0, 2]


def test_classes_do_not_suppress_each_other():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([[0.9, 0.1], [0.8, 0.2]], np.float32)  # same box 0 in both classes
    idx, cls, sc = fast_nms(boxes, scores)
    # All four survive, low scores included: Fast NMS has no second threshold.
    assert list(zip(idx.tolist(), cls.tolist())) == [(0, 0), (0, 1), (1, 1), (1, 0)]
    assert cross_class_fast_nms(boxes, scores)[0].tolist() == [0, 1]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 0.9))
def test_fast_nms_keeps_a_subset_of_greedy_and_is_permutation_invariant(seed, thr):
    boxes, scores = random_case(seed, n=30, classes=2)
    fast = set(
        map(
            tuple, np.stack(fast_nms(boxes, scores, iou_threshold=thr, top_k=1000, max_detections=1000)[:2], 1).tolist()
        )
    )
    greedy = greedy_nms(boxes, scores, iou_threshold=thr, score_threshold=-1, max_detections=1000)
    assert fast <= set(map(tuple, np.stack(greedy[:2], 1).tolist()))
    perm = np.random.default_rng(seed).permutation(len(boxes))
    idx, cls, sc = fast_nms(boxes[perm], scores[:, perm], iou_threshold=thr, top_k=1000, max_detections=1000)
    assert set(zip(perm[idx].tolist(), cls.tolist())) == fast


@pytest.mark.parametrize("nms", [fast_nms, cross_class_fast_nms, greedy_nms])
@pytest.mark.parametrize(
    "boxes, scores, message",
    [
        (np.zeros((3, 5), np.float32), np.zeros((2, 3), np.float32), r"boxes must have shape \[N, 4\], got \[3, 5\]"),
        (np.zeros(4, np.float32), np.zeros((2, 1), np.float32), r"boxes must have shape \[N, 4\], got \[4\]"),
        (np.zeros((3, 4), np.float32), np.zeros((2, 4), np.float32), r"scores must have shape \[C, N\] with N = 3"),
        (np.zeros((3, 4), np.float32), np.zeros(3, np.float32), r"scores must have shape \[C, N\]"),
    ],
)
def test_nms_input_errors(nms, boxes, scores, message):
    with pytest.raises(ValueError, match=message):
        nms(boxes, scores)


def test_best_scores_shape_is_checked():
    with pytest.raises(ValueError, match=r"best_scores must have shape \[3\], got \[2\]"):
        fast_nms(np.zeros((3, 4), np.float32), np.zeros((2, 3), np.float32), best_scores=np.zeros(2, np.float32))


def _grid_case(seed, n, classes):
    # Boxes on a small integer grid: duplicates, exact threshold IoUs (1/3, 1/2) and empty boxes
    # (NaN IoU with each other); scores from a few levels: ties within and across classes.
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 6, (n, 2, 2)).astype(np.float32)
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    return boxes, (rng.integers(0, 5, (classes, n)) / 4).astype(np.float32), rng


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 25),
    st.integers(1, 4),
    st.one_of(st.sampled_from([0.0, 1 / 3, 0.5, 1.0]), st.floats(0, 1)),
    st.integers(1, 30),
    st.integers(1, 30),
)
def test_fast_nms_matches_the_float32_oracle_with_ties_and_empty_boxes(seed, n, classes, thr, top_k, max_det):
    boxes, scores, _ = _grid_case(seed, n, classes)
    thr = np.float32(thr)
    got = as_triples(fast_nms(boxes, scores, iou_threshold=thr, top_k=top_k, max_detections=max_det))
    assert got == reference_fast_nms(boxes, scores, thr, top_k, max_det, iou=_iou32)
    best = scores.max(axis=0)
    ranked = reference_fast_nms(boxes, best[None], thr, top_k, max_det, iou=_iou32)
    got = cross_class_fast_nms(boxes, scores, iou_threshold=thr, top_k=top_k, max_detections=max_det)
    assert as_triples(got) == [(s, int(scores[:, i].argmax()), i) for s, _, i in ranked]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 25),
    st.integers(1, 4),
    st.one_of(st.sampled_from([0.0, 1 / 3, 0.5, 1.0]), st.floats(0, 1)),
    st.sampled_from([-1.0, 0.0, 0.25, 0.5]),
    st.integers(1, 30),
    st.booleans(),
)
def test_greedy_nms_matches_the_float32_oracle_with_ties_empty_boxes_and_nan_scores(
    seed, n, classes, thr, score_threshold, max_det, nan_scores
):
    boxes, scores, rng = _grid_case(seed, n, classes)
    if nan_scores and n:
        scores.flat[rng.integers(0, scores.size, 3)] = np.nan  # a NaN score never enters
    thr = np.float32(thr)
    kw = dict(iou_threshold=thr, score_threshold=score_threshold, max_detections=max_det)
    expected = reference_greedy_nms(boxes, scores, thr, score_threshold, max_det, iou=_iou32)
    assert as_triples(greedy_nms(boxes, scores, **kw)) == expected
    best = scores.max(axis=0)  # NaN where any class score is: the candidate never enters
    ranked = reference_greedy_nms(boxes, best[None], thr, score_threshold, max_det, iou=_iou32)
    got = greedy_nms(boxes, scores, cross_class=True, **kw)
    assert as_triples(got) == [(s, int(scores[:, i].argmax()), i) for s, _, i in ranked]


@pytest.mark.parametrize("seed", range(10))
def test_greedy_nms_on_demand_reads_only_what_it_needs_and_matches_the_oracle(seed):
    boxes, scores = random_case(seed, n=300)
    read = set()

    def boxes_of(i):
        read.update(i.tolist())
        return boxes[i]

    best = np.where(scores > 0.1, scores, -np.inf).max(axis=0)
    got = greedy_nms_on_demand(boxes_of, lambda i: scores[:, i], best, score_threshold=0.1, max_detections=10)
    assert as_triples(got) == reference_greedy_nms(boxes, scores, 0.5, 0.1, 10)
    assert len(read) < len(boxes)


@pytest.mark.parametrize("seed", range(8))
def test_greedy_nms_one_kept_box_at_a_time_decides_as_the_pairs_do(seed, monkeypatch):
    # Past _MAX_PAIRS (degenerate heads: thousands of entries of one class) greedy NMS takes the
    # classic loop, whose memory is linear in the entries; both follow the float32 oracle.
    from yolact_batch.core import nms

    boxes, scores, _ = _grid_case(seed, 25, 2)
    kw = dict(iou_threshold=np.float32(0.5), score_threshold=0.0, max_detections=30)
    by_pairs = [as_triples(greedy_nms(boxes, scores, cross_class=c, **kw)) for c in (False, True)]
    monkeypatch.setattr(nms, "_MAX_PAIRS", 0)
    one_by_one = [as_triples(greedy_nms(boxes, scores, cross_class=c, **kw)) for c in (False, True)]
    assert one_by_one == by_pairs
    assert by_pairs[0] == reference_greedy_nms(boxes, scores, kw["iou_threshold"], 0.0, 30, iou=_iou32)


def test_greedy_nms_of_thousands_of_overlapping_boxes_stays_small():
    # 4,000 copies of one box in one class: 8 M pairs, over _MAX_PAIRS. The best one is kept alone.
    boxes = np.tile(np.array([[10, 10, 50, 50]], np.float32), (4000, 1))
    scores = np.linspace(0.9, 0.1, 4000, dtype=np.float32)[None]
    idx, classes, kept = greedy_nms(boxes, scores, iou_threshold=0.5, score_threshold=0.05, max_detections=100)
    assert idx.tolist() == [0] and classes.tolist() == [0] and kept.tolist() == [np.float32(0.9)]
