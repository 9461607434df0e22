"""Mask rings and one-polygon merging, checked by rasterising with cv2.fillPoly (what
Ultralytics and supervision do with a YOLO polygon)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yolact_batch.core.polygons import MaskRings, mask_rings, merge_rings


def fill(polygon: np.ndarray, shape) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    if len(polygon):
        cv2.fillPoly(out, [polygon.reshape(-1, 1, 2).astype(np.int32)], 1)
    return out.astype(bool)


def area(ring) -> float:
    return cv2.contourArea(ring.astype(np.float32), oriented=True)


YY, XX = np.mgrid[:60, :80]
D2 = (YY - 30) ** 2 + (XX - 40) ** 2
RECT = (YY >= 10) & (YY < 20) & (XX >= 5) & (XX < 30)
RING = (D2 < 25**2) & (D2 >= 10**2)
TWO = ((YY - 10) ** 2 + (XX - 10) ** 2 < 8**2) | ((YY - 45) ** 2 + (XX - 65) ** 2 < 10**2)
SPECK = np.zeros((60, 80), bool)
SPECK[3, 3] = True
LINE = np.zeros((60, 80), bool)
LINE[50, 10:70] = True


@pytest.mark.parametrize(
    "mask, outer, holes, dropped",
    [(RECT, 1, 0, 0), (RING, 1, 1, 0), (TWO, 2, 0, 0), (SPECK, 0, 0, 1), (LINE, 0, 0, 1),
     (np.zeros((60, 80), bool), 0, 0, 0), (RECT | SPECK, 1, 0, 1)],
    ids=["rect", "ring", "two-parts", "speck", "line", "empty", "rect+speck"],
)  # fmt: skip
def test_rings_table(mask, outer, holes, dropped):
    rings = mask_rings(mask)
    assert (len(rings.outer), len(rings.holes), rings.dropped) == (outer, holes, dropped)
    assert all(area(r) < 0 for r in rings.outer) and all(area(r) > 0 for r in rings.holes)
    if mask is not TWO:  # bridged parts: test_parts_are_bridged_by_one_line
        expected = mask & ~SPECK & ~LINE if dropped else mask  # what is dropped is the speck or line
        assert np.array_equal(fill(merge_rings(rings), mask.shape), expected)


def test_rectangle_is_its_four_corners():
    (ring,) = mask_rings(RECT).outer
    assert ring.tolist() == [[5, 10], [5, 19], [29, 19], [29, 10]]  # as cv2.findContours traces it


def test_hole_survives_the_merge():
    merged = merge_rings(mask_rings(RING))
    assert np.array_equal(fill(merged, RING.shape), RING)  # lossless at tolerance 0, hole empty


def test_parts_are_bridged_by_one_line():
    filled = fill(merge_rings(mask_rings(TWO)), TWO.shape)
    extra = filled & ~TWO
    assert (TWO & ~filled).sum() == 0 and 0 < extra.sum() <= 60  # the bridge: at most a line across


def test_tolerance_simplifies_within_bounds():
    blob = cv2.GaussianBlur(np.random.default_rng(3).random((120, 160)), (0, 0), 6) > 0.5
    exact, coarse = mask_rings(blob, 0.0), mask_rings(blob, 2.0)
    assert sum(map(len, coarse.outer)) < sum(map(len, exact.outer))
    filled = fill(merge_rings(coarse), blob.shape)
    assert (filled & blob).sum() / (filled | blob).sum() > 0.9
    with pytest.raises(ValueError, match="tolerance"):
        mask_rings(blob, -1.0)


def test_small_mask_vanishes_under_a_large_tolerance():
    small = np.zeros((20, 20), bool)
    small[5:8, 5:8] = True  # 3x3: its outline is 4 corners 2 pixels apart
    assert len(mask_rings(small, 1.0).outer) == 1
    vanished = mask_rings(small, 3.0)  # Douglas-Peucker keeps 2 of the corners: no area left
    assert (vanished.outer, vanished.dropped) == ((), 1) and merge_rings(vanished).shape == (0, 2)


def test_merge_without_outer_ring():
    assert merge_rings(MaskRings((), (), 2)).shape == (0, 2)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(2.0, 6.0))
def test_fillpoly_of_merged_rings_covers_the_mask(seed, sigma):
    """Tolerance 0: every pixel comes back but those of degenerate parts (no area: dropped, as
    documented); extra pixels only on the bridges between rings."""
    mask = cv2.GaussianBlur(np.random.default_rng(seed).random((50, 70)), (0, 0), sigma) > 0.55
    rings = mask_rings(mask)
    filled = fill(merge_rings(rings), mask.shape)
    _, parts = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    for part in np.unique(parts[mask & ~filled]):
        assert not mask_rings(parts == part).outer  # a lost pixel's whole part is a speck or a line
    assert (filled & ~mask).sum() <= 2 * (len(rings.outer) + len(rings.holes)) * max(mask.shape)
