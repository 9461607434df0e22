"""Mask scores (YOLACT++) through Detections, the row instances and the COCO results."""

from __future__ import annotations

import numpy as np
import pytest

from yolact_batch.core.coco import coco_results, instances, segm_score
from yolact_batch.core.detections import Detections

RLE = {"size": [4, 4], "counts": "`0"}  # an empty 4x4 mask


def _dets(mask_scores=None, n=3):
    return Detections(
        boxes=np.tile(np.array([[0, 0, 2, 2]], np.float32), (n, 1)),
        scores=np.linspace(0.9, 0.5, n).astype(np.float32),
        class_ids=np.zeros(n, np.int64),
        rles=(RLE,) * n,
        image_size=(4, 4),
        class_names=("thing",),
        category_ids=(7,),
        mask_scores=mask_scores,
    )


def test_mask_scores_are_optional_and_validated():
    assert _dets().mask_scores is None
    np.testing.assert_array_equal(_dets().segm_scores, _dets().scores)
    with pytest.raises(ValueError, match=r"mask_scores: expected shape \(3,\), got \(2,\)"):
        _dets(np.zeros(2, np.float32))


def test_indexing_keeps_mask_scores_aligned():
    dets = _dets(np.array([0.1, 0.8, 0.3], np.float32))
    picked = dets[dets.mask_scores > 0.2]
    np.testing.assert_array_equal(picked.mask_scores, np.float32([0.8, 0.3]))
    np.testing.assert_array_equal(picked.scores, dets.scores[1:])
    assert dets[[2]].mask_scores.tolist() == [pytest.approx(0.3)]
    assert _dets()[:1].mask_scores is None


def test_segm_results_use_the_mask_score_in_box_score_order():
    dets = _dets(np.array([0.1, 0.8, 0.3], np.float32))
    items = instances(dets)
    assert [i["mask_score"] for i in items] == pytest.approx([0.1, 0.8, 0.3])
    bbox, segm = coco_results(5, items, iou_type="bbox"), coco_results(5, items, iou_type="segm")
    both = coco_results(5, items)
    assert [e["score"] for e in both] == [e["score"] for e in bbox]
    assert [e["mask_score"] for e in both] == [e["score"] for e in segm]
    assert [e["score"] for e in bbox] == pytest.approx(dets.scores.tolist())  # box scores, descending
    assert [e["score"] for e in segm] == pytest.approx([0.1, 0.8, 0.3])  # same order, not re-sorted
    assert all(e["category_id"] == 7 and e["image_id"] == 5 for e in bbox + segm)


def test_yolact_and_older_rows_score_masks_by_the_box_score():
    items = instances(_dets())
    assert all(i["mask_score"] is None for i in items)
    segm = coco_results(1, items, iou_type="segm")
    assert all("mask_score" not in e for e in coco_results(1, items))
    assert [e["score"] for e in segm] == [i["score"] for i in items]
    older = {k: v for k, v in items[0].items() if k != "mask_score"}  # written before mask scores existed
    assert segm_score(older) == older["score"]


def test_equality_compares_mask_scores():
    a = _dets(np.array([0.1, 0.8, 0.3], np.float32))
    assert a == _dets(np.array([0.1, 0.8, 0.3], np.float32))
    assert a != _dets(np.array([0.1, 0.8, 0.4], np.float32))
    assert a != _dets() and _dets() == _dets()


def test_supervision_confidence_is_the_mask_score():
    sv = pytest.importorskip("supervision")
    converted = _dets(np.array([0.1, 0.8, 0.3], np.float32)).to_supervision()
    assert isinstance(converted, sv.Detections)
    np.testing.assert_array_equal(converted.confidence, np.float32([0.1, 0.8, 0.3]))
    np.testing.assert_array_equal(converted.data["box_score"], _dets().scores)
    np.testing.assert_array_equal(converted.data["mask_score"], converted.confidence)
    plain = _dets().to_supervision()
    np.testing.assert_array_equal(plain.confidence, _dets().scores)
    assert "mask_score" not in plain.data
