import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from yolact_batch.core.boxes import box_area, box_convert, box_iou, boxes_to_pixels, decode_boxes


def test_box_iou_table():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 10, 20, 20], [20, 20, 30, 30]], np.float32)
    expected = [1.0, 50 / 150, 0.0, 0.0]  # identical, half overlap, touching corner, disjoint
    np.testing.assert_allclose(np.diagonal(box_iou(a, b)), expected, rtol=1e-6)


def test_box_iou_shapes_and_empty():
    assert box_iou(np.zeros((0, 4), np.float32), np.zeros((3, 4), np.float32)).shape == (0, 3)
    batched = box_iou(np.zeros((7, 5, 4), np.float32) + [0, 0, 1, 1], np.zeros((7, 5, 4), np.float32) + [0, 0, 1, 1])
    assert batched.shape == (7, 5, 5) and np.all(batched == 1)


box_arrays = arrays(np.float32, (6, 4), elements=st.floats(0, 100, width=32)).map(
    lambda b: np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:]) + 1], axis=1)
)


@given(box_arrays, box_arrays)
def test_box_iou_properties(a, b):
    iou = box_iou(a, b)
    np.testing.assert_allclose(iou, box_iou(b, a).T, rtol=1e-6)  # symmetric
    assert np.all((iou >= 0) & (iou <= 1 + 1e-6))
    np.testing.assert_allclose(np.diagonal(box_iou(a, a)), 1, rtol=1e-6)


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_box_convert_round_trip(fmt):
    boxes = np.array([[1, 2, 11, 22], [0, 0, 0, 0], [5, 5, 6, 8]], np.float64)
    there = box_convert(boxes, "xyxy", fmt)
    np.testing.assert_allclose(box_convert(there, fmt, "xyxy"), boxes)
    assert box_convert(boxes, "xyxy", "xywh").tolist()[0] == [1, 2, 10, 20]


def test_box_convert_rejects_unknown_format():
    with pytest.raises(ValueError, match="box formats"):
        box_convert(np.zeros((1, 4)), "xyxy", "yxyx")


def test_box_area():
    assert box_area(np.array([[0, 0, 2, 3], [1, 1, 1, 5]], np.float32)).tolist() == [6, 0]


def test_decode_boxes_zero_regression_gives_prior():
    priors = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    np.testing.assert_allclose(decode_boxes(np.zeros((1, 4), np.float32), priors), [[0.4, 0.3, 0.6, 0.7]], atol=1e-7)


def test_decode_boxes_variances():
    priors = np.array([[0.5, 0.5, 0.2, 0.2]], np.float32)
    loc = np.array([[1.0, 0.0, np.log(2) / 0.2, 0.0]], np.float32)  # shift x by 0.1*w, double the width
    np.testing.assert_allclose(decode_boxes(loc, priors), [[0.32, 0.4, 0.72, 0.6]], atol=1e-6)


def test_boxes_to_pixels_orders_clamps_truncates():
    rel = np.array([[0.5, 0.5, 0.25, 0.75], [-0.1, -0.2, 1.5, 1.2], [0.0999, 0.0, 0.2, 0.1]], np.float32)
    px = boxes_to_pixels(rel, width=100, height=10)
    assert px.dtype == np.int64
    assert px.tolist() == [[25, 5, 50, 7], [0, 0, 100, 10], [9, 0, 20, 1]]
