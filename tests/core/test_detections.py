import numpy as np
import pytest

from yolact_batch.core import rle
from yolact_batch.core.coco import coco_bbox, instances
from yolact_batch.core.detections import Detections


def make(n=3, size=(10, 20)):
    masks = np.zeros((n, *size), bool)
    for i in range(n):
        masks[i, i : i + 2, i : i + 3] = True
    return Detections(
        boxes=np.array([[i, i, i + 3, i + 2] for i in range(n)], np.float32),
        scores=np.linspace(0.9, 0.5, n).astype(np.float32),
        class_ids=np.arange(n, dtype=np.int64),
        rles=tuple(rle.encode(m) for m in masks),
        image_size=size,
        class_names=("a", "b", "c"),
        category_ids=(1, 5, 7),
    )


def test_boolean_and_integer_indexing():
    dets = make()
    high = dets[dets.scores > 0.6]
    assert len(high) == 2 and high.names == ["a", "b"] and high.areas.tolist() == [6, 6]
    assert len(dets[[2]]) == 1 and dets[2].class_ids.tolist() == [2]
    assert len(dets[dets.scores > 1]) == 0


def test_shape_errors_name_expected_and_actual():
    dets = make()
    with pytest.raises(ValueError, match=r"boxes: expected shape \(3, 4\), got \(3, 5\)"):
        Detections(np.zeros((3, 5), np.float32), dets.scores, dets.class_ids, dets.rles, dets.image_size)
    with pytest.raises(ValueError, match="expected 3 RLEs"):
        Detections(dets.boxes, dets.scores, dets.class_ids, dets.rles[:2], dets.image_size)
    with pytest.raises(ValueError, match="does not match image_size"):
        Detections(dets.boxes, dets.scores, dets.class_ids, dets.rles, (11, 20))


def test_empty_is_a_value():
    empty = Detections.empty((4, 5))
    assert len(empty) == 0 and empty.masks().shape == (0, 4, 5) and instances(empty) == []


def test_masks_round_trip_and_coco_edge():
    dets = make()
    assert dets.masks().sum(axis=(1, 2)).tolist() == [6, 6, 6]
    first = instances(dets)[0]
    assert first["category_id"] == 1 and first["category"] == "a" and first["bbox"] == [0.0, 0.0, 3.0, 2.0]
    assert coco_bbox([1.04, 2, 5.5, 9]) == [1.0, 2.0, 4.5, 7.0]


def test_to_supervision():
    sv = pytest.importorskip("supervision")
    converted = make().to_supervision()
    assert isinstance(converted, sv.Detections) and converted.mask.shape == (3, 10, 20)
    assert list(converted.data["class_name"]) == ["a", "b", "c"]
    image = np.zeros((10, 20, 3), np.uint8)
    annotated = sv.MaskAnnotator().annotate(image.copy(), converted)
    assert annotated.shape == image.shape and annotated[0:2, 0:3].any() and not annotated[9, 19].any()


def test_equality_is_by_value_and_explicit():
    a, b = make(), make()
    assert a == b and not (a != b)
    assert a[[0, 1]] == b[:2]
    assert a != b[:2] and a != b[b.scores < 0.9]
    changed = Detections(a.boxes + 1, a.scores, a.class_ids, a.rles, a.image_size, a.class_names, a.category_ids)
    assert a != changed
    assert Detections.empty((10, 20)) == Detections.empty((10, 20)) != Detections.empty((10, 21))
    assert a != "not detections"
    with pytest.raises(TypeError):
        hash(a)
