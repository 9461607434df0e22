"""Numpy post-processing fed the reference's raw heads reproduces its Detect, postprocess and JSON."""

import numpy as np
import pytest

from tests.conftest import golden_case, golden_params
from yolact_batch.core import rle
from yolact_batch.core.coco import coco_results
from yolact_batch.core.coco import instances as to_instances
from yolact_batch.core.configs import get_config
from yolact_batch.core.heads import RawHeads
from yolact_batch.core.postprocess import Postprocessor, detect
from yolact_batch.core.priors import make_priors

PRIORS = make_priors(get_config("yolact_base").priors)  # same layout for both golden configs


@pytest.mark.parametrize("config,image_id", golden_params())
def test_detect_matches_golden(config, image_id):
    g, _ = golden_case(config, image_id)
    boxes, classes, scores, prior_idx = detect(g["loc"][0], g["conf"][0], PRIORS)
    np.testing.assert_array_equal(classes, g["det_classes"])
    np.testing.assert_allclose(scores, g["det_scores"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(boxes, g["det_boxes"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(g["mask"][0][prior_idx], g["det_masks"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("config,image_id", golden_params())
def test_postprocess_and_json_match_golden(config, image_id):
    g, ref = golden_case(config, image_id)
    heads = RawHeads(g["loc"], g["conf"], g["mask"], g["proto"])
    dets = Postprocessor(get_config(config), "raw")(heads, [(ref["height"], ref["width"])])[0]
    np.testing.assert_array_equal(dets.boxes.astype(np.int64), g["post_boxes"])
    np.testing.assert_array_equal(dets.class_ids, g["post_classes"])
    np.testing.assert_allclose(dets.scores, g["post_scores"], atol=1e-6, rtol=0)
    items = to_instances(dets)
    bbox, segm = (
        coco_results(ref["image_id"], items, iou_type="bbox"),
        coco_results(ref["image_id"], items, iou_type="segm"),
    )
    assert [(b["category_id"], b["bbox"]) for b in bbox] == [
        (b["category_id"], b["bbox"]) for b in ref["bbox_detections"]
    ]
    np.testing.assert_allclose([b["score"] for b in bbox], [b["score"] for b in ref["bbox_detections"]], atol=1e-6)
    # Masks pixel-exact but for a few pixels whose value is within float rounding of 0.5.
    differing = sum(
        int((rle.decode(ours["segmentation"]) != rle.decode(theirs["segmentation"])).sum())
        for ours, theirs in zip(segm, ref["mask_detections"])
    )
    assert differing <= 5, f"{differing} mask pixels differ from the reference"
    np.testing.assert_array_equal(dets.areas, g["post_mask_area"])


@pytest.mark.parametrize("cross_class_nms", [False, True])
@pytest.mark.parametrize("config,image_id", golden_params()[:2])
def test_detect_equals_decoding_every_candidate(config, image_id, cross_class_nms):
    # detect decodes only the candidates Fast NMS reads: the same bits as decoding all of them first.
    from yolact_batch.core.boxes import decode_boxes
    from yolact_batch.core.nms import cross_class_fast_nms, fast_nms
    from yolact_batch.core.settings import DetectSettings

    g, _ = golden_case(config, image_id)
    loc, conf = g["loc"][0], g["conf"][0]
    best = conf[:, 1:].max(axis=1)
    candidates = np.flatnonzero(best > 0.05)
    boxes = decode_boxes(loc[candidates], PRIORS[candidates])
    nms = cross_class_fast_nms if cross_class_nms else fast_nms
    idx, classes, scores = nms(boxes, conf[candidates, 1:].T, best_scores=best[candidates])
    got = detect(loc, conf, PRIORS, DetectSettings(cross_class_nms=cross_class_nms))
    for a, b in zip(got, (boxes[idx], classes, scores, candidates[idx])):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cross_class_nms", [False, True])
@pytest.mark.parametrize("config,image_id", golden_params()[:2])
def test_greedy_detect_matches_the_loop_oracle(config, image_id, cross_class_nms):
    # Greedy NMS decides the best few hundred entries first; the literal per-class loop over all
    # candidates must agree (a higher threshold keeps the oracle quick: ~600 candidates).
    from tests.core.test_nms import _iou32, reference_greedy_nms
    from yolact_batch.core.boxes import decode_boxes
    from yolact_batch.core.settings import DetectSettings

    g, _ = golden_case(config, image_id)
    loc, conf = g["loc"][0], g["conf"][0]
    settings = DetectSettings(nms="greedy", conf_threshold=0.2, cross_class_nms=cross_class_nms)
    boxes, classes, scores, prior_idx = detect(loc, conf, PRIORS, settings)
    candidates = np.flatnonzero(conf[:, 1:].max(axis=1) > 0.2)
    all_boxes, all_scores = decode_boxes(loc[candidates], PRIORS[candidates]), conf[candidates, 1:].T
    rows = all_scores.max(axis=0, keepdims=True) if cross_class_nms else all_scores
    expected = reference_greedy_nms(all_boxes, rows, 0.5, 0.2, 100, iou=_iou32)
    assert [(float(s), int(i)) for s, _, i in expected] == list(
        zip(scores.tolist(), np.searchsorted(candidates, prior_idx).tolist())
    )
    want_classes = [int(all_scores[:, i].argmax()) if cross_class_nms else c for _, c, i in expected]
    assert classes.tolist() == want_classes
    np.testing.assert_array_equal(boxes, all_boxes[[i for _, _, i in expected]])
