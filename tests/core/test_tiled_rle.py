"""The run-length kernels (numpy tiles and the compiled loop) against the pixel-by-pixel
computations they replace (paste_masks and the full-size upsample).

Every test runs once per kernel (the ``kernel`` fixture); the compiled one is skipped, with the
reason, where numba is not installed.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco_mask

from yolact_batch.core import compiled_rle
from yolact_batch.core.masks import AxisResize, crop_windows, full_windows, paste_masks, sigmoid, upsample_masks
from yolact_batch.core.rle import counts_in_box, string_to_counts
from yolact_batch.core.tiled_rle import AxisTiles, mask_run_lengths

KERNELS = {"numpy": mask_run_lengths, "compiled": compiled_rle.compiled_run_lengths}
_kernel = {}


@pytest.fixture(autouse=True, params=sorted(KERNELS))
def kernel(request):
    if request.param == "compiled" and not compiled_rle.available():
        pytest.skip("numba is not installed: the compiled kernel is not used")
    _kernel["run"] = KERNELS[request.param]
    yield request.param
    _kernel.clear()


def split(counts, lengths):
    return np.split(counts, np.cumsum(lengths)[:-1]) if len(lengths) else []


def paste_counts(blocks, windows, proto_size, height, width, threshold=0.5):
    rows, cols = AxisResize.create(proto_size[0], height), AxisResize.create(proto_size[1], width)
    return [
        counts_in_box(mask, top, left, height, width)
        for mask, top, left in paste_masks(blocks, windows, rows, cols, threshold)
    ]


def full_size_counts(blocks, windows, proto_size, height, width, threshold=0.5):
    """Slowest oracle: every mask zero outside its window on the whole grid, upsampled to full
    size, thresholded, encoded by pycocotools."""
    out = []
    for block, (r0, r1, c0, c1) in zip(blocks, windows):
        grid = np.zeros(proto_size, np.float32)
        grid[r0:r1, c0:c1] = block
        binary = upsample_masks(grid[None], height, width)[0] > np.float32(threshold)
        rle = coco_mask.encode(np.asfortranarray(binary.astype(np.uint8)))
        out.append(string_to_counts(rle["counts"]))
    return out


def tiled_counts(blocks, windows, proto_size, height, width, threshold=0.5, logits=False):
    rows, cols = AxisTiles.create(proto_size[0], height), AxisTiles.create(proto_size[1], width)
    return split(*_kernel["run"](blocks, windows, rows, cols, threshold, logits=logits))


def assert_same(a, b):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        np.testing.assert_array_equal(x, y, err_msg=f"mask {i}")


def random_case(seed, proto_size=(20, 24), count=12):
    rng = np.random.default_rng(seed)
    hp, wp = proto_size
    masks = sigmoid(rng.normal(0, 3, (count, hp, wp)).astype(np.float32))
    boxes = np.sort(rng.uniform(-0.2, 1.2, (count, 2, 2)), axis=1).transpose(0, 2, 1).reshape(count, 4)
    windows = crop_windows(boxes[:, [0, 2, 1, 3]].astype(np.float32), hp, wp)
    blocks = [m[r0:r1, c0:c1] for m, (r0, r1, c0, c1) in zip(masks, windows)]
    return blocks, windows


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("size", [(20, 24), (21, 25), (60, 24), (20, 200), (97, 131), (480, 640)])
def test_tiled_counts_equal_the_full_size_computation(seed, size):
    blocks, windows = random_case(seed)
    expected = full_size_counts(blocks, windows, (20, 24), *size)
    assert_same(tiled_counts(blocks, windows, (20, 24), *size), expected)


@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.5, 0.99])
@pytest.mark.parametrize("crop", [True, False])
def test_thresholds_and_uncropped_masks(threshold, crop):
    blocks, windows = random_case(7, count=9)
    if not crop:
        rng = np.random.default_rng(1)
        windows = full_windows(9, 20, 24)
        blocks = [sigmoid(rng.normal(0, 3, (20, 24)).astype(np.float32)) for _ in range(9)]
    for size in [(20, 24), (77, 50)]:
        expected = paste_counts(blocks, windows, (20, 24), *size, threshold)
        assert_same(tiled_counts(blocks, windows, (20, 24), *size, threshold), expected)


def test_logits_are_the_sigmoid_of_each_block():
    rng = np.random.default_rng(3)
    logits = [rng.normal(0, 4, (5, 7)).astype(np.float32) for _ in range(6)]
    windows = np.array([[0, 5, 0, 7], [3, 8, 10, 17], [15, 20, 17, 24], [0, 5, 17, 24], [7, 12, 5, 12], [1, 6, 1, 8]])
    expected = paste_counts([sigmoid(x) for x in logits], windows, (20, 24), 90, 130)
    assert_same(tiled_counts(logits, windows, (20, 24), 90, 130, logits=True), expected)


def test_edge_cases_table():
    ones = np.ones((3, 4), np.float32)
    windows = np.array([
        [0, 3, 0, 4],      # top-left corner, all on
        [17, 20, 20, 24],  # far corner: the clamped last source row and column
        [5, 5, 5, 9],      # empty window: no pixel
        [0, 20, 0, 24],    # the whole grid, full height: runs wrap from column to column
        [8, 11, 0, 4],     # touching the left edge
    ])  # fmt: skip
    blocks = [ones, ones, np.zeros((0, 4), np.float32), np.full((20, 24), 0.75, np.float32), ones * 0.5]
    for size in [(20, 24), (40, 48), (41, 1000)]:
        expected = full_size_counts(blocks, windows, (20, 24), *size)
        got = tiled_counts(blocks, windows, (20, 24), *size)
        assert_same(got, expected)
    assert got[2].tolist() == [41 * 1000]  # an empty mask is one run of zeros
    assert got[3].tolist() == [0, 41 * 1000]  # a full one: a leading 0, one run of ones
    assert got[4].tolist() == [41 * 1000]  # exactly 0.5 is not > 0.5


def test_the_margin_is_needed():
    # At threshold 0.3 a bilinear mix of values one ulp above it can round to 0.3 itself (2 -> 7 has
    # such weights): deciding tiles by "all four corners above" without a margin would turn those pixels on.
    block = np.full((2, 2), np.nextafter(np.float32(0.3), np.float32(1)), np.float32)
    windows = np.array([[0, 2, 0, 2]])
    expected = full_size_counts([block], windows, (2, 2), 7, 7, 0.3)
    assert expected[0].tolist() != [0, 49]  # some pixel is off
    assert_same(tiled_counts([block], windows, (2, 2), 7, 7, 0.3), expected)


def test_no_masks_and_rejections():
    run = _kernel["run"]
    counts, lengths = run([], np.zeros((0, 4), np.int64), AxisTiles.create(4, 8), AxisTiles.create(4, 8))
    assert counts.size == 0 and lengths.size == 0
    with pytest.raises(ValueError, match="threshold"):
        run([], np.zeros((0, 4)), AxisTiles.create(4, 8), AxisTiles.create(4, 8), -0.1)
    with pytest.raises(ValueError, match="at least as large as the prototypes"):
        run([], np.zeros((0, 4)), AxisTiles.create(8, 4), AxisTiles.create(4, 8))


def test_non_finite_values_decide_like_the_pixel_path():
    block = np.array([[np.nan, 0.9, np.inf], [0.9, np.inf, 0.9], [-np.inf, 0.9, 3e38]], np.float32)
    windows = np.array([[2, 5, 3, 6], [0, 3, 0, 3]])
    for size in [(20, 24), (63, 101)]:
        with np.errstate(invalid="ignore"):  # inf * 0 in the pixel path
            expected = paste_counts([block, block], windows, (20, 24), *size)
        assert_same(tiled_counts([block, block], windows, (20, 24), *size), expected)


# Values crowding the threshold: exactly on it, a few ulps either side, or inside the margin.
_near = st.sampled_from([0.0, 1.0, -1.0, 2.0, -2.0, 8.0, -8.0, 1e-6, -1e-6, 4.9e-6, -4.9e-6, 1e-5, -1e-5, 0.3, -0.3])


# (The kernel fixture only picks the function: nothing to reset between examples.)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    hp=st.integers(1, 7),
    wp=st.integers(1, 7),
    scale_h=st.integers(1, 5),
    scale_w=st.integers(1, 5),
    extra_h=st.integers(0, 6),
    extra_w=st.integers(0, 6),
    threshold=st.sampled_from([0.5, 0.5, 0.0, 0.3, 0.7]),
)
def test_prop_values_crowding_the_threshold(data, hp, wp, scale_h, scale_w, extra_h, extra_w, threshold):
    height, width = hp * scale_h + extra_h, wp * scale_w + extra_w
    count = data.draw(st.integers(0, 4))
    blocks, windows = [], []
    t = np.float32(threshold)
    for _ in range(count):
        r0 = data.draw(st.integers(0, hp))
        r1 = data.draw(st.integers(r0, hp))
        c0 = data.draw(st.integers(0, wp))
        c1 = data.draw(st.integers(c0, wp))
        steps = data.draw(st.lists(_near, min_size=(r1 - r0) * (c1 - c0), max_size=(r1 - r0) * (c1 - c0)))
        # Offsets in ulps of the threshold (or relative amounts), so values sit on either side of it.
        base = np.float32(max(t, np.float32(1e-3)))
        values = np.array([t + np.float32(s) * (np.spacing(base) if abs(s) >= 1 else base) for s in steps], np.float32)
        blocks.append(np.maximum(values, np.float32(0)).reshape(r1 - r0, c1 - c0))
        windows.append([r0, r1, c0, c1])
    windows = np.array(windows, np.int64).reshape(-1, 4)
    expected = full_size_counts(blocks, windows, (hp, wp), height, width, threshold)
    assert_same(tiled_counts(blocks, windows, (hp, wp), height, width, threshold), expected)
    assert_same(paste_counts(blocks, windows, (hp, wp), height, width, threshold), expected)


def test_masks_with_many_runs():
    # Checkerboards at the prototypes' own size and just above it: a change at almost every pixel,
    # far more runs than the compiled kernel's first buffer holds (it grows).
    board = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)
    blocks, windows = [board] * 3, np.array([[0, 64, 0, 64]] * 3)
    for size in [(64, 64), (65, 67)]:
        expected = full_size_counts(blocks, windows, (64, 64), *size)
        assert sum(len(c) for c in expected) > 3 * 64 * 60
        assert_same(tiled_counts(blocks, windows, (64, 64), *size), expected)


def test_a_full_buffer_then_masks_with_nothing_to_draw():
    # The many runs of the checkerboards outgrow the compiled kernel's first buffer (twice); the
    # empty windows after them each still need their one run of zeros in the grown one.
    board = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)
    empty = np.zeros((0, 4), np.float32)
    blocks = [board] * 3 + [empty] * 10
    windows = np.array([[0, 64, 0, 64]] * 3 + [[5, 5, 0, 4]] * 10)
    expected = full_size_counts(blocks, windows, (64, 64), 64, 64)
    assert_same(tiled_counts(blocks, windows, (64, 64), 64, 64), expected)
