"""yolact_batch.core.rle against pycocotools (the oracle) and its own round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as coco

from yolact_batch.core import rle

# pycocotools' decode trips a numpy 2 copy-keyword DeprecationWarning; not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def coco_encode(mask: np.ndarray) -> dict:
    ref = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in ref["size"]], "counts": ref["counts"].decode("ascii")}


def coco_string(counts) -> str:
    """pycocotools' rleToString for arbitrary counts, via an uncompressed RLE.

    rleToString allocates 6 chars per count, so deltas of 2**29 or more (7
    chunks) overflow its buffer and can abort the process: keep counts < 2**29.
    """
    assert max(counts) < 2**29
    ref = coco.frPyObjects({"size": [1, 1], "counts": [int(c) for c in counts]}, 1, 1)
    return ref["counts"].decode("ascii")


def full_mask(box: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    m = np.zeros((height, width), np.uint8)
    m[top : top + box.shape[0], left : left + box.shape[1]] = box
    return m


def check(mask: np.ndarray) -> dict:
    got = rle.encode(mask)
    assert got == coco_encode(mask)
    assert isinstance(got["counts"], str)
    return got


def _edge_masks():
    cases = {}
    for h, w in [(0, 0), (0, 5), (4, 0), (1, 1), (1, 7), (7, 1), (5, 6)]:
        cases[f"zeros{h}x{w}"] = np.zeros((h, w), bool)
        cases[f"ones{h}x{w}"] = np.ones((h, w), bool)
    for r, c in [(0, 0), (0, 5), (4, 0), (4, 5)]:
        m = np.zeros((5, 6), bool)
        m[r, c] = True
        cases[f"corner{r}{c}"] = m
    cases["checker"] = (np.indices((7, 9)).sum(0) % 2).astype(bool)
    cases["checker_inv"] = ~cases["checker"]
    cols = np.zeros((5, 6), bool)
    cols[:, 1:3] = True  # a run crossing a column boundary
    cols[:, 5] = True  # a run ending with the image
    cases["full_cols"] = cols
    wrap = np.zeros((5, 6), bool)
    wrap[3:, 1] = True
    wrap[:2, 2] = True  # bottom of column 1 + top of column 2 = one run
    cases["wrap"] = wrap
    row1 = np.zeros((1, 8), bool)
    row1[0, [0, 1, 2, 5, 7]] = True
    cases["1xN"] = row1
    cases["Nx1"] = row1.T.copy()
    cases["last_pixel"] = np.zeros((3, 4), bool)
    cases["last_pixel"][-1, -1] = True
    return cases


EDGE = _edge_masks()


@pytest.mark.parametrize("name", sorted(EDGE))
def test_edge_masks(name):
    mask = EDGE[name]
    got = check(mask)
    assert rle.area(got) == mask.sum()
    np.testing.assert_array_equal(rle.decode(got), mask)


def test_conventions():
    assert rle.encode(np.zeros((0, 0), bool))["counts"] == "0"
    assert rle.string_to_counts(rle.encode(np.zeros((3, 4), bool))["counts"]).tolist() == [12]
    assert rle.string_to_counts(rle.encode(np.ones((3, 4), bool))["counts"]).tolist() == [0, 12]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("density", [0.02, 0.3, 0.5, 0.9, 0.995])
@pytest.mark.parametrize("shape", [(1, 40), (40, 1), (13, 17), (64, 48), (120, 160)])
def test_random_masks(seed, density, shape):
    mask = np.random.default_rng(seed).random(shape) < density
    got = check(mask)
    assert rle.area(got) == int(mask.sum())
    np.testing.assert_array_equal(rle.decode(got), mask)


def test_input_layouts_and_dtypes():
    rng = np.random.default_rng(1)
    base = rng.random((30, 40)) < 0.4
    for m in [
        base,
        np.asfortranarray(base),
        base[::2, 1::3],
        base.T,
        base.astype(np.uint8) * 255,
        base.astype(np.float32),
        base.astype(np.int64),
    ]:
        check(m)
    # Non-binary bytes: pycocotools breaks runs on any value change; so do we.
    check(rng.integers(0, 3, (9, 11)).astype(np.uint8))


def test_large_counts():
    big = np.zeros((1500, 1000), bool)  # 1.5e6 zeros > 2**20
    check(big)
    big[700:1300, 10] = True
    big[-1, -1] = True
    got = check(big)
    assert rle.area(got) == 601
    assert rle.string_to_counts(got["counts"]).max() > 2**20


def test_decode_and_area_match_pycocotools():
    rng = np.random.default_rng(2)
    for _ in range(20):
        m = rng.random(tuple(rng.integers(1, 50, 2))) < rng.random()
        ref = coco.encode(np.asfortranarray(m.astype(np.uint8)))
        np.testing.assert_array_equal(rle.decode(ref), coco.decode(ref).astype(bool))
        assert rle.area(ref) == int(coco.area(ref))


@pytest.mark.parametrize("seed", range(30))
def test_encode_in_box_random(seed):
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(1, 60, 2))
    for _ in range(20):
        mode = rng.integers(5)
        if mode == 0:  # full image
            top, left, h, w = 0, 0, height, width
        elif mode == 1:  # full height, a column band
            left = int(rng.integers(0, width))
            top, h, w = 0, height, int(rng.integers(0, width - left + 1))
        else:  # arbitrary, pushed to an edge sometimes
            h, w = int(rng.integers(0, height + 1)), int(rng.integers(0, width + 1))
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            if mode == 3:
                top, left = (0, width - w) if rng.random() < 0.5 else (height - h, 0)
        box = rng.random((h, w)) < rng.choice([0.0, 0.1, 0.5, 0.95, 1.0])
        got = rle.encode_in_box(box, top, left, height, width)
        assert got == coco_encode(full_mask(box, top, left, height, width))


def test_encode_in_box_edges():
    H, W = 6, 5
    cases = [
        (np.ones((6, 2), bool), 0, 1),  # full-height band: runs cross columns
        (np.ones((6, 2), bool), 0, 3),  # ... and end with the image
        (np.ones((3, 5), bool), 3, 0),  # bottom rows, last pixel on
        (np.ones((3, 5), bool), 0, 0),  # top rows, first pixel on
        (np.ones((6, 5), bool), 0, 0),  # full image
        (np.zeros((6, 5), bool), 0, 0),
        (np.zeros((0, 3), bool), 2, 1),
        (np.zeros((4, 0), bool), 2, 5),
        (np.zeros((0, 0), bool), 6, 5),
    ]
    for box, top, left in cases:
        assert rle.encode_in_box(box, top, left, H, W) == coco_encode(full_mask(box, top, left, H, W))
    assert rle.encode_in_box(np.zeros((0, 0), bool), 0, 0, 0, 0)["counts"] == "0"
    with pytest.raises(ValueError):
        rle.encode_in_box(np.ones((3, 3), bool), 4, 0, 6, 5)
    with pytest.raises(ValueError):
        rle.encode_in_box(np.ones((3, 3), bool), 0, -1, 6, 5)


def test_counts_to_string_matches_rleToString():
    rng = np.random.default_rng(3)
    fixed = [
        [0],
        [5],
        [0, 12],
        [2**20 + 1, 3, 2**21],
        [2**29 - 1, 0, 0, 2**29 - 1],
        [9, 1, 8, 2, 1, 30, 0, 1],
    ]  # the last has negative deltas
    rand = [rng.integers(0, 2 ** rng.integers(1, 30), rng.integers(1, 30)).tolist() for _ in range(100)]
    for counts in fixed + rand:
        for dtype in (np.uint32, np.int64):
            s = rle.counts_to_string(np.array(counts, dtype))
            assert s == coco_string(counts)
            assert rle.string_to_counts(s).tolist() == counts


def test_counts_to_string_uint32_extremes():
    # 7-chunk deltas (beyond the oracle's safe range); string recorded from
    # pycocotools' rleToString, whose arithmetic is in 64-bit long.
    counts = [5, 2**31, 3, 7, 2**32 - 1, 1]
    s = rle.counts_to_string(np.array(counts, np.uint32))
    assert s == "5PPPPPP23WPPPPPNlooooo3J"
    assert rle.string_to_counts(s).tolist() == counts


def test_string_to_counts_rejects_garbage():
    with pytest.raises(ValueError):
        rle.string_to_counts("3P")  # last chunk still has the continuation bit
    with pytest.raises(ValueError):
        rle.string_to_counts("3 ")
    with pytest.raises(ValueError):
        rle.decode({"size": [2, 2], "counts": "3"})  # counts sum to 3, not 4


# --- property tests -------------------------------------------------------

masks = st.tuples(st.integers(0, 24), st.integers(0, 24)).flatmap(lambda s: arrays(np.bool_, s))


@settings(max_examples=200, deadline=None)
@given(masks)
def test_prop_encode_round_trip(mask):
    got = rle.encode(mask)
    assert got == coco_encode(mask)
    np.testing.assert_array_equal(rle.decode(got), mask)
    assert rle.area(got) == int(mask.sum())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=40))
def test_prop_counts_string_identity(counts):
    s = rle.counts_to_string(np.array(counts, np.uint32))
    assert rle.string_to_counts(s).tolist() == counts
    assert rle.counts_to_string(rle.string_to_counts(s)) == s


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_prop_encode_in_box(data):
    height, width = data.draw(st.integers(0, 20)), data.draw(st.integers(0, 20))
    top, left = data.draw(st.integers(0, height)), data.draw(st.integers(0, width))
    h, w = data.draw(st.integers(0, height - top)), data.draw(st.integers(0, width - left))
    box = data.draw(arrays(np.bool_, (h, w)))
    got = rle.encode_in_box(box, top, left, height, width)
    full = full_mask(box, top, left, height, width)
    assert got == coco_encode(full)
    assert rle.area(got) == int(box.sum())


def test_counts_to_strings_keeps_each_mask_in_place_around_empty_ones():
    a, b = np.array([3, 2, 1]), np.array([12, 7])
    expected = [rle.counts_to_string(a), rle.counts_to_string(b)]
    assert rle.counts_to_strings([np.zeros(0, np.int64), a, np.zeros(0, np.int64), b]) == [
        "",
        expected[0],
        "",
        expected[1],
    ]
    assert rle.counts_to_strings([np.zeros(0, np.int64)] * 2) == ["", ""]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
def test_bbox_matches_pycocotools_tobbox(h, w, seed, density):
    mask = np.random.default_rng(seed).random((h, w)) < density
    encoded = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    ours = rle.bbox({"size": [h, w], "counts": encoded["counts"].decode()})
    assert ours == [float(v) for v in coco.toBbox(encoded)]


@pytest.mark.parametrize(
    "mask, box",
    [
        (np.zeros((3, 4), bool), [0.0, 0.0, 0.0, 0.0]),  # empty: no box
        (np.ones((3, 4), bool), [0.0, 0.0, 4.0, 3.0]),  # full
        (np.eye(3, dtype=bool), [0.0, 0.0, 3.0, 3.0]),  # one pixel per column
        (np.pad(np.ones((1, 1), bool), ((1, 1), (2, 0))), [2.0, 1.0, 1.0, 1.0]),  # a single pixel
    ],
)
def test_bbox_table(mask, box):
    assert rle.bbox(rle.encode(mask)) == box
