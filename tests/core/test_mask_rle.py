"""run_lengths and encode_run_lengths: every path (compiled, numpy tiles, pixels) gives pycocotools' result."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco_mask

from tests.core.test_tiled_rle import assert_same, paste_counts, random_case, split
from yolact_batch.core import compiled_rle, mask_rle
from yolact_batch.core.mask_rle import encode_run_lengths, mask_areas, run_lengths
from yolact_batch.core.masks import sigmoid
from yolact_batch.core.rle import counts_to_strings

PATHS = [False, pytest.param(True, marks=pytest.mark.skipif(not compiled_rle.available(), reason="numba missing"))]


@pytest.mark.parametrize("compiled", PATHS)
@pytest.mark.parametrize("size", [(10, 30), (30, 10), (7, 9), (20, 24), (45, 61)])
@pytest.mark.parametrize("logits", [False, True])
def test_run_lengths_any_image_size(size, logits, compiled):
    # Smaller than the prototypes on an axis: the pixel path; otherwise a kernel. Same counts either way.
    blocks, windows = random_case(11, count=7)
    values = [np.log(b / (1 - b)) for b in blocks] if logits else blocks
    with np.errstate(divide="ignore"):
        counts, lengths = run_lengths(values, windows, (20, 24), size, logits=logits, compiled=compiled)
    expected = paste_counts([sigmoid(v) for v in values] if logits else blocks, windows, (20, 24), *size)
    assert_same(split(counts, lengths), expected)
    np.testing.assert_array_equal(mask_areas(counts, lengths), [c[1::2].sum() for c in expected])
    assert mask_areas(np.zeros(0, np.int64), np.zeros(0, np.int64)).shape == (0,)


@pytest.mark.parametrize("compiled", PATHS)
def test_masks_on_several_canvases_give_the_same_counts(monkeypatch, compiled):
    blocks, windows = random_case(5, count=30)
    whole = run_lengths(blocks, windows, (20, 24), (97, 131), compiled=compiled)
    monkeypatch.setattr(mask_rle, "_CHUNK_ROWS", 7)  # many canvases of one to a few masks
    for got, expected in zip(run_lengths(blocks, windows, (20, 24), (97, 131), compiled=compiled), whole):
        np.testing.assert_array_equal(got, expected)
    assert_same(split(*whole), paste_counts(blocks, windows, (20, 24), 97, 131))


def test_no_masks_at_all():
    for compiled in (False, compiled_rle.available()):
        counts, lengths = run_lengths([], np.zeros((0, 4), np.int64), (20, 24), (40, 50), compiled=compiled)
        assert counts.shape == lengths.shape == (0,)
        strings, areas = encode_run_lengths(counts, lengths, compiled=compiled)
        assert strings == [] and areas.shape == (0,)


@settings(max_examples=60, deadline=None)
@given(
    masks=st.lists(
        st.lists(st.integers(0, 1), min_size=12, max_size=12).map(lambda bits: np.array(bits, np.uint8)),
        max_size=6,
    ),
    scale=st.sampled_from([1, 3, 50, 4000]),
)
def test_prop_encoded_run_lengths_are_pycocotools_strings_and_areas(masks, scale):
    # Masks of a 12 x (scale) image whose columns repeat a 12-pixel pattern: runs from 1 pixel to
    # tens of thousands, so that the strings hold values of one to several characters.
    binary = [np.asfortranarray(np.repeat(m[:, None], scale, axis=1)) for m in masks]
    expected = [coco_mask.encode(b)["counts"].decode() for b in binary]
    counts = [np.diff(np.r_[0, np.flatnonzero(np.diff(np.r_[0, b.ravel("F")])), b.size]) for b in binary]
    lengths = np.array([len(c) for c in counts], np.int64)
    flat = np.concatenate(counts).astype(np.int64) if counts else np.zeros(0, np.int64)
    areas = [int(b.sum()) for b in binary]
    assert counts_to_strings(counts) == expected
    for compiled in (False, True) if compiled_rle.available() else (False,):
        strings, got = encode_run_lengths(flat, lengths, compiled=compiled)
        assert strings == expected and got.tolist() == areas and got.dtype == np.int64
