"""``detect`` (Detect for raw heads) against a literal oracle: best class, decode, NMS loops."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.core.test_nms import _iou32, reference_fast_nms, reference_greedy_nms
from yolact_batch.core.postprocess import detect
from yolact_batch.core.settings import DetectSettings


def reference_detect(loc, conf, priors, s):
    """Row by row: candidates whose best foreground score (NaN if any is) beats the threshold,
    SSD decoding in float32, then the loop NMS over all candidates."""
    best = np.array([np.nan if np.isnan(row).any() else row.max(initial=-np.inf) for row in conf[:, 1:]], np.float32)
    cand = [p for p in range(len(conf)) if best[p] > s.conf_threshold]
    boxes = []
    for p in cand:
        cx = priors[p, 0] + loc[p, 0] * np.float32(0.1) * priors[p, 2]
        cy = priors[p, 1] + loc[p, 1] * np.float32(0.1) * priors[p, 3]
        w, h = priors[p, 2] * np.exp(loc[p, 2] * np.float32(0.2)), priors[p, 3] * np.exp(loc[p, 3] * np.float32(0.2))
        x1, y1 = cx - w / np.float32(2), cy - h / np.float32(2)
        boxes.append([x1, y1, w + x1, h + y1])
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    scores = conf[cand, 1:].T
    rows = best[None, cand] if s.cross_class_nms else scores
    if s.nms == "greedy":
        kept = reference_greedy_nms(boxes, rows, s.iou_threshold, s.conf_threshold, s.max_detections, iou=_iou32)
    else:
        kept = reference_fast_nms(boxes, rows, s.iou_threshold, s.top_k, s.max_detections, iou=_iou32)
    return [
        (sc, int(scores[:, i].argmax()) if s.cross_class_nms else c, cand[i], boxes[i].tolist()) for sc, c, i in kept
    ]


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 40),
    st.integers(1, 5),
    st.sampled_from(["fast", "greedy"]),
    st.booleans(),
    st.sampled_from([0.05, 0.3, 0.9]),
    st.integers(1, 12),
    st.integers(1, 12),
    st.booleans(),
)
def test_detect_matches_the_reference_loops(seed, priors_n, classes, nms, cross, conf_thr, top_k, max_det, nan):
    rng = np.random.default_rng(seed)
    # Scores from a few levels (ties; at 0.9 often no candidate at all); clustered boxes.
    conf = (rng.integers(0, 5, (priors_n, classes)) / 4).astype(np.float32)
    if nan and priors_n:
        conf[rng.integers(0, priors_n), rng.integers(0, classes)] = np.nan  # never a candidate
    priors = rng.uniform(0.2, 0.4, (priors_n, 4)).astype(np.float32)
    loc = rng.normal(0, 0.5, (priors_n, 4)).astype(np.float32)
    s = DetectSettings(conf_threshold=conf_thr, top_k=top_k, max_detections=max_det, cross_class_nms=cross, nms=nms)
    boxes, got_classes, scores, prior_idx = detect(loc, conf, priors, s)
    assert boxes.dtype == scores.dtype == np.float32 and got_classes.dtype == prior_idx.dtype == np.int64
    assert boxes.shape == (len(scores), 4)
    got = [(sc, c, p, b) for sc, c, p, b in zip(scores, got_classes.tolist(), prior_idx.tolist(), boxes.tolist())]
    assert got == reference_detect(loc, conf, priors, s)


def test_no_candidate_gives_empty_arrays():
    conf = np.full((30, 4), 0.01, np.float32)
    for s in (DetectSettings(), DetectSettings(cross_class_nms=True), DetectSettings(nms="greedy")):
        boxes, classes, scores, prior_idx = detect(np.zeros((30, 4), np.float32), conf, np.ones((30, 4), np.float32), s)
        assert boxes.shape == (0, 4) and classes.shape == scores.shape == prior_idx.shape == (0,)
