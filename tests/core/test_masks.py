"""The region-only mask upsample against the full-size computation it replaces."""

import numpy as np
import pytest

from yolact_batch.core.masks import (
    AxisResize,
    assemble_masks,
    crop_windows,
    paste_mask,
    paste_masks,
    sigmoid,
    upsample_masks,
)


def full_reference(mask, box, height, width, threshold=0.5):
    """Crop at prototype resolution (loop over pixels), upsample everything, threshold."""
    hp, wp = mask.shape
    x1, x2 = sorted((np.float32(box[0]) * np.float32(wp), np.float32(box[2]) * np.float32(wp)))
    y1, y2 = sorted((np.float32(box[1]) * np.float32(hp), np.float32(box[3]) * np.float32(hp)))
    x1, y1 = max(x1 - 1, 0), max(y1 - 1, 0)
    x2, y2 = min(x2 + 1, wp), min(y2 + 1, hp)
    cropped = np.array(
        [[mask[r, c] if (x1 <= c < x2 and y1 <= r < y2) else 0 for c in range(wp)] for r in range(hp)], np.float32
    )
    return upsample_masks(cropped[None], height, width)[0] > threshold


@pytest.mark.parametrize("matrix_macs", [0, 10**12], ids=["gather", "matrix"])
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("size", [(480, 640), (20, 20), (7, 33), (1, 50), (64, 1)])
def test_paste_mask_equals_full_computation(seed, size, matrix_macs):
    rng = np.random.default_rng(seed)
    hp = wp = 20
    mask = sigmoid(rng.normal(0, 3, (hp, wp)).astype(np.float32))
    box = np.sort(rng.uniform(-0.2, 1.2, 4).reshape(2, 2), axis=0).T.reshape(-1)[[0, 2, 1, 3]].astype(np.float32)
    window = crop_windows(box[None], hp, wp)[0]
    r0, r1, c0, c1 = window
    rows, cols = AxisResize.create(hp, size[0]), AxisResize.create(wp, size[1])
    [(block, top, left)] = paste_masks([mask[r0:r1, c0:c1]], window[None], rows, cols, matrix_macs=matrix_macs)
    full = np.zeros(size, bool)
    full[top : top + block.shape[0], left : left + block.shape[1]] = block
    np.testing.assert_array_equal(full, full_reference(mask, box, *size))


def test_axis_resize_matches_torch_convention():
    # align_corners=False: output pixel o samples input (o + 0.5) * in/out - 0.5, clamped at 0.
    r = AxisResize.create(2, 4)
    assert r.idx0.tolist() == [0, 0, 0, 1] and r.idx1.tolist() == [1, 1, 1, 1]
    # At the last index torch keeps the fractional weight on the same pixel (idx0 == idx1).
    np.testing.assert_allclose(r.w1, [0.0, 0.25, 0.75, 0.25])
    same = AxisResize.create(5, 5)
    assert same.idx0.tolist() == list(range(5)) and np.all(same.w0 == 1)


def test_crop_windows_padding_and_clamp():
    boxes = np.array([[0.25, 0.5, 0.5, 0.75], [-1, -1, 2, 2], [0.5, 0.5, 0.5, 0.5]], np.float32)
    assert crop_windows(boxes, 8, 8).tolist() == [[3, 7, 1, 5], [0, 8, 0, 8], [3, 5, 3, 5]]
    # Wholly above/left of or below/right of the grid: empty, never a negative end.
    off = np.array([[0.2, -0.5, 0.6, -0.4], [-0.9, 0.2, -0.5, 0.4], [1.5, 1.5, 1.8, 1.9]], np.float32)
    windows = crop_windows(off, 20, 20)
    assert np.all(windows >= 0) and np.all(windows[:, 1] >= windows[:, 0]) and np.all(windows[:, 3] >= windows[:, 2])
    assert [(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in windows.tolist()] == [0, 0, 0]


def test_assemble_masks_shape_and_values():
    proto = np.zeros((4, 5, 3), np.float32)
    coeffs = np.zeros((2, 3), np.float32)
    out = assemble_masks(proto, coeffs)
    assert out.shape == (2, 4, 5) and np.all(out == 0.5)


def test_empty_window_gives_empty_mask():
    rows, cols = AxisResize.create(10, 30), AxisResize.create(10, 30)
    block, _, _ = paste_mask(np.zeros((0, 3), np.float32), np.array([4, 4, 2, 5]), rows, cols)
    assert block.shape == (0, 0)


@pytest.mark.parametrize("size", [(333, 517), (17, 23), (40, 50)], ids=["up", "down", "same"])
def test_matrix_and_gather_paths_give_the_same_bits(size):
    # Values crowding the threshold: any difference in float rounding between the two
    # paths would flip some pixels.
    rng = np.random.default_rng(3)
    hp, wp = 40, 50
    rows, cols = AxisResize.create(hp, size[0]), AxisResize.create(wp, size[1])
    windows, blocks = [], []
    for _ in range(60):
        r0, c0 = rng.integers(0, hp - 1), rng.integers(0, wp - 1)
        r1, c1 = rng.integers(r0 + 1, hp + 1), rng.integers(c0 + 1, wp + 1)
        windows.append((r0, r1, c0, c1))
        blocks.append((0.5 + rng.normal(0, 1e-3, (r1 - r0, c1 - c0))).astype(np.float32))
    gather = list(paste_masks(blocks, np.array(windows), rows, cols, matrix_macs=0))
    matrix = list(paste_masks(blocks, np.array(windows), rows, cols, matrix_macs=10**12))
    assert sum(a.sum() for a, _, _ in gather) > 0
    for (a, ta, la), (b, tb, lb) in zip(gather, matrix):
        assert (ta, la) == (tb, lb)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("size", [(480, 640), (550, 550), (100, 37), (13, 200), (138, 138)])
def test_paste_masks_match_torch_interpolate(seed, size):
    """The independent oracle: torch's bilinear ``F.interpolate(align_corners=False)``, which the
    reference uses, on the whole cropped prototype-resolution mask, thresholded at 0.5."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    hp = wp = 138
    mask = sigmoid(rng.normal(0, 4, (hp, wp)).astype(np.float32))
    box = np.sort(rng.uniform(-0.1, 1.1, 4).reshape(2, 2), axis=0).T.reshape(-1)[[0, 2, 1, 3]].astype(np.float32)
    window = crop_windows(box[None], hp, wp)[0]
    r0, r1, c0, c1 = window
    cropped = np.zeros_like(mask)
    cropped[r0:r1, c0:c1] = mask[r0:r1, c0:c1]
    expected = (
        torch.nn.functional.interpolate(
            torch.from_numpy(cropped)[None, None], size=size, mode="bilinear", align_corners=False
        )[0, 0].numpy()
        > 0.5
    )
    rows, cols = AxisResize.create(hp, size[0]), AxisResize.create(wp, size[1])
    [(block, top, left)] = paste_masks([mask[r0:r1, c0:c1]], window[None], rows, cols)
    full = np.zeros(size, bool)
    full[top : top + block.shape[0], left : left + block.shape[1]] = block
    np.testing.assert_array_equal(full, expected)
