"""The ``graph`` contract head in torch, against the golden Detect output and a slow numpy oracle."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from yolact_batch.core.configs import ModelConfig, PriorConfig, get_config  # noqa: E402
from yolact_batch.core.priors import make_priors  # noqa: E402
from yolact_batch.core.settings import DetectSettings  # noqa: E402
from yolact_batch.torchnet.graph import GraphHead  # noqa: E402

TINY = ModelConfig(
    name="tiny",
    backbone="resnet50",
    priors=PriorConfig(input_size=64, conv_sizes=(8, 4), scales=(16, 32)),
    class_names=("a", "b", "c", "d"),
)


def _oracle(loc, conf, mask, proto, priors, detect, score_threshold, crop):
    """One image, the reference's way: boolean filtering, sort, per-class Fast NMS, global sort."""
    center = priors[:, :2] + loc[:, :2] * np.float32(0.1) * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * np.float32(0.2))
    top_left = center - size / np.float32(2)
    boxes = np.concatenate([top_left, size + top_left], axis=1)

    fg = conf[:, 1:]
    candidates = np.flatnonzero(fg.max(axis=1) > detect.conf_threshold)
    if detect.cross_class_nms:
        groups = [(fg[candidates].max(axis=1), fg[candidates].argmax(axis=1))]
    else:
        groups = [(fg[candidates, c], np.full(len(candidates), c)) for c in range(fg.shape[1])]
    found = []  # (score, class, prior)
    for scores, classes in groups:
        order = np.argsort(-scores, kind="stable")[: detect.top_k]
        b = boxes[candidates[order]]
        for j in range(len(order)):
            ious = [_iou(b[i], b[j]) for i in range(j)]
            if max(ious, default=0.0) <= detect.iou_threshold:
                found.append((scores[order[j]], classes[order[j]], candidates[order[j]]))
    found.sort(key=lambda d: -d[0])
    found = [d for d in found[: detect.max_detections] if d[0] > score_threshold]
    priors_kept = np.array([d[2] for d in found], dtype=np.int64)
    logits = proto.reshape(-1, proto.shape[-1]) @ mask[priors_kept].T
    masks = (1 / (1 + np.exp(-logits))).T.reshape(len(found), *proto.shape[:2])
    if crop:
        for m, box in zip(masks, boxes[priors_kept]):
            h, w = m.shape
            x1, x2 = sorted((box[0] * w, box[2] * w))
            y1, y2 = sorted((box[1] * h, box[3] * h))
            cols, rows = np.arange(w), np.arange(h)
            keep_x = (cols >= max(x1 - 1, 0)) & (cols < min(x2 + 1, w))
            keep_y = (rows >= max(y1 - 1, 0)) & (rows < min(y2 + 1, h))
            m *= keep_y[:, None] & keep_x[None, :]
    return (
        boxes[priors_kept],
        np.array([d[0] for d in found], np.float32),
        np.array([d[1] for d in found], np.int64),
        masks,
    )


def _iou(a, b):
    w = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
    h = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _random_heads(seed, batch=2, config=TINY):
    rng = np.random.default_rng(seed)
    p, c = config.priors.num_priors, config.num_classes
    logits = rng.normal(0, 2, (batch, p, c)).astype(np.float32)
    logits[..., 0] += 2  # background-heavy, as trained models are
    conf = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    side = config.proto_size
    return (
        rng.normal(0, 0.5, (batch, p, 4)).astype(np.float32),
        conf.astype(np.float32),
        np.tanh(rng.normal(0, 1, (batch, p, 32))).astype(np.float32),
        np.maximum(rng.normal(0, 1, (batch, side, side, 32)), 0).astype(np.float32),
    )


@pytest.mark.parametrize(
    ("detect", "score_threshold", "crop"),
    [
        (DetectSettings(top_k=20, max_detections=15), 0.0, True),
        (DetectSettings(top_k=20, max_detections=15, iou_threshold=0.2), 0.3, True),
        # Fewer candidates than top_k, and more max_detections than classes * top_k (padding).
        (DetectSettings(conf_threshold=0.85, iou_threshold=0.3, top_k=50, max_detections=250), 0.0, False),
        (DetectSettings(top_k=8, max_detections=12, cross_class_nms=True), 0.0, True),  # padding past 8
        (DetectSettings(top_k=200, max_detections=100, cross_class_nms=True), 0.1, True),
    ],
)
@pytest.mark.parametrize("seed", range(3))
def test_matches_reference_oracle(detect, score_threshold, crop, seed):
    heads = _random_heads(seed)
    head = GraphHead(TINY, detect, score_threshold=score_threshold, crop=crop)
    with torch.no_grad():
        boxes, scores, classes, masks, num = (t.numpy() for t in head(*map(torch.from_numpy, heads)))
    k = detect.max_detections
    assert boxes.shape == (2, k, 4) and scores.shape == (2, k) and classes.shape == (2, k)
    assert masks.shape == (2, k, TINY.proto_size, TINY.proto_size) and num.dtype == np.int64
    priors = make_priors(TINY.priors)
    for b in range(2):
        want = _oracle(*(h[b] for h in heads), priors, detect, score_threshold, crop)
        n = len(want[1])
        assert num[b] == n
        np.testing.assert_array_equal(classes[b, :n], want[2])
        np.testing.assert_allclose(scores[b, :n], want[1], rtol=0, atol=0)
        np.testing.assert_allclose(boxes[b, :n], want[0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(masks[b, :n], want[3], rtol=0, atol=1e-6)
        # Padding: zeros everywhere after the valid prefix.
        assert not scores[b, n:].any() and not classes[b, n:].any()
        assert not boxes[b, n:].any() and not masks[b, n:].any()


def test_no_candidates_gives_empty_rows():
    loc, conf, mask, proto = _random_heads(0, batch=1)
    head = GraphHead(TINY, DetectSettings(conf_threshold=0.999, top_k=10, max_detections=5))
    with torch.no_grad():
        boxes, scores, classes, masks, num = head(*map(torch.from_numpy, (loc, conf, mask, proto)))
    assert num.tolist() == [0] and not scores.any() and not masks.any() and not boxes.any()


def test_greedy_is_refused():
    with pytest.raises(ValueError, match="Fast NMS only.*raw contract"):
        GraphHead(TINY, DetectSettings(nms="greedy"))


@pytest.mark.parametrize("image_id", [184324, 205401])
def test_golden_raw_heads_give_golden_detections(golden_arrays, image_id):
    """Fed the golden raw heads, the head reproduces the reference Detect output (bit-identical here)."""
    gold = golden_arrays("yolact_resnet50", image_id)
    head = GraphHead(get_config("yolact_resnet50"))
    np.testing.assert_array_equal(head.priors.numpy(), gold["priors"])
    with torch.no_grad():
        boxes, scores, classes, masks, num = (
            t[0].numpy() for t in head(*(torch.from_numpy(gold[k]) for k in ("loc", "conf", "mask", "proto")))
        )
    assert num == len(gold["det_scores"]) == 100
    np.testing.assert_array_equal(classes, gold["det_classes"])
    np.testing.assert_allclose(scores, gold["det_scores"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(boxes, gold["det_boxes"], rtol=0, atol=1e-6)
    # Masks from the golden coefficients of the kept detections, assembled and cropped in numpy.
    logits = gold["proto"][0] @ gold["det_masks"].T  # [Hp, Wp, N]
    want = np.moveaxis(1 / (1 + np.exp(-logits)), -1, 0)
    side = want.shape[-1]
    grid = np.arange(side, dtype=np.float32)
    for m, box in zip(want, gold["det_boxes"]):
        x1, x2 = sorted((box[0] * side, box[2] * side))
        y1, y2 = sorted((box[1] * side, box[3] * side))
        m *= ((grid >= max(y1 - 1, 0)) & (grid < min(y2 + 1, side)))[:, None]
        m *= ((grid >= max(x1 - 1, 0)) & (grid < min(x2 + 1, side)))[None, :]
    np.testing.assert_allclose(masks, want, rtol=0, atol=1e-6)
