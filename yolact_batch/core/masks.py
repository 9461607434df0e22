"""Instance masks: assembly from prototypes, crop, bilinear upsample and threshold.

The reference builds ``sigmoid(proto @ coeffs.T)`` for every detection at prototype
resolution, zeroes it outside the (padded) box, upsamples the whole stack to the image
size with ``F.interpolate(bilinear, align_corners=False)`` and thresholds at 0.5. A mask
is zero outside its crop window, so only the output pixels whose bilinear footprint
touches that window can be on; ``paste_mask`` computes exactly those, with the same
float32 weights and operation order as torch, and nothing else: by gathers for large masks,
by products with one-hot weight matrices for small ones (one non-zero term per output, so
the same roundings; fewer numpy calls).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function in float32."""
    return np.float32(1) / (np.float32(1) + np.exp(-x))


def assemble_masks(proto: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """Full prototype-resolution masks, as the reference computes them.

    Args:
        proto: ``float32[Hp, Wp, M]`` prototypes.
        coeffs: ``float32[D, M]`` mask coefficients.

    Returns:
        ``float32[D, Hp, Wp]`` sigmoid masks (not cropped).
    """
    return sigmoid(np.moveaxis(proto @ coeffs.T, -1, 0))


def crop_windows(boxes: np.ndarray, height: int, width: int, padding: int = 1) -> np.ndarray:
    """The reference's crop, as integer windows at prototype resolution.

    A pixel ``(r, c)`` survives the crop when ``x1 <= c < x2`` and ``y1 <= r < y2`` with
    ``x1 = max(min(bx1, bx2) * W - padding, 0)`` and ``x2 = min(max(bx1, bx2) * W + padding, W)``
    (float32), and likewise for rows.

    Args:
        boxes: ``float32[D, 4]`` relative boxes ``(x1, y1, x2, y2)``.

    Returns:
        ``int64[D, 4]`` windows ``(row0, row1, col0, col1)``, half-open, ``row0 <= row1`` and
        ``col0 <= col1``.
    """

    def bounds(a, b, size):
        a = a * np.float32(size)
        b = b * np.float32(size)
        low = np.maximum(np.minimum(a, b) - np.float32(padding), 0)
        high = np.minimum(np.maximum(a, b) + np.float32(padding), np.float32(size))
        # Integer i satisfies low <= i < high  <=>  ceil(low) <= i < ceil(high).
        low, high = np.ceil(low).astype(np.int64), np.ceil(high).astype(np.int64)
        # A box wholly off the grid keeps nothing: an empty window (never a negative end,
        # which a slice would read as counting from the far side).
        return low, np.maximum(high, low)

    boxes = boxes.astype(np.float32, copy=False)
    r0, r1 = bounds(boxes[:, 1], boxes[:, 3], height)
    c0, c1 = bounds(boxes[:, 0], boxes[:, 2], width)
    return np.stack([r0, r1, c0, c1], axis=1).reshape(-1, 4)


def full_windows(count: int, height: int, width: int) -> np.ndarray:
    """Windows covering the whole prototype grid (no cropping), ``int64[count, 4]``."""
    return np.tile(np.array([0, height, 0, width], np.int64), (count, 1))


@dataclass(frozen=True)
class AxisResize:
    """Bilinear (``align_corners=False``) sampling of one axis, as torch computes it.

    Output index ``o`` reads input ``idx0[o]`` and ``idx1[o]`` with weights ``w0[o]``, ``w1[o]``.
    ``m0`` and ``m1`` (``float32[in, out]``) hold the same weights as one-hot columns: a product
    with either has exactly one non-zero term per output, so it rounds exactly like ``w * x``
    and the two matrix products sum to torch's ``w0 * x0 + w1 * x1`` bit for bit.
    """

    idx0: np.ndarray
    idx1: np.ndarray
    w0: np.ndarray
    w1: np.ndarray
    m0: np.ndarray = field(repr=False)
    m1: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        freeze_arrays(self)

    @classmethod
    @functools.lru_cache(maxsize=256)
    def create(cls, in_size: int, out_size: int) -> "AxisResize":
        """The sampling from ``in_size`` to ``out_size`` (cached: images share a few sizes)."""
        out = np.arange(out_size)
        if in_size == out_size:
            return cls._with_matrices(in_size, out, out, np.ones(out_size, np.float32), np.zeros(out_size, np.float32))
        ratio = np.float32(in_size) / np.float32(out_size)
        src = ratio * (out.astype(np.float32) + np.float32(0.5)) - np.float32(0.5)
        src = np.maximum(src, np.float32(0))
        idx0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
        w1 = np.clip(src - idx0.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
        idx1 = idx0 + (idx0 < in_size - 1)
        return cls._with_matrices(in_size, idx0, idx1, (np.float32(1) - w1).astype(np.float32), w1)

    @classmethod
    def _with_matrices(cls, in_size, idx0, idx1, w0, w1) -> "AxisResize":
        out = np.arange(len(idx0))
        m0 = np.zeros((in_size, len(idx0)), np.float32)
        m1 = np.zeros((in_size, len(idx0)), np.float32)
        m0[idx0, out], m1[idx1, out] = w0, w1
        return cls(idx0, idx1, w0, w1, m0, m1)

    def footprint(self, start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Output ranges ``[o0, o1)`` whose samples touch input ranges ``[start, stop)`` (vectorised)."""
        return np.searchsorted(self.idx1, start, "left"), np.searchsorted(self.idx0, stop, "left")


def freeze_arrays(obj: object) -> None:
    """Freeze the arrays of a cached (shared) instance."""
    for value in vars(obj).values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)


def check_threshold(threshold: float) -> None:
    """Refuse a negative mask threshold: pixels outside a mask's footprint are exactly 0 and must stay off."""
    if threshold < 0:
        raise ValueError(f"mask threshold must be >= 0, got {threshold}")


def paste_masks(
    blocks: Iterable[np.ndarray],
    windows: np.ndarray,
    rows: AxisResize,
    cols: AxisResize,
    threshold: float = 0.5,
    *,
    matrix_macs: int = 1_500_000,
) -> Iterator[tuple[np.ndarray, int, int]]:
    """Upsample cropped masks and threshold them, computing only where they can be non-zero.

    Args:
        blocks: ``float32[row1-row0, col1-col0]`` mask values inside each window; each mask
            is zero outside its window.
        windows: ``int64[D, 4]`` windows ``(row0, row1, col0, col1)`` at prototype resolution.
        rows, cols: the sampling of each axis from prototype to image size.
        threshold: a pixel is on when its value is ``> threshold`` (must be >= 0, so that
            pixels outside the footprint, which are exactly 0, stay off).
        matrix_macs: masks whose upsampling as matrix products (one-hot weights) costs at
            most this many multiply-adds take that path: few numpy calls, where per-call
            overhead dominates small masks; the others are gathered (cost independent of
            the window). Both give the same bits; this only tunes speed.

    Yields:
        ``(bool[h, w], top, left)`` per mask: the binary mask inside its output box, whose
        top-left pixel is ``(top, left)`` in the image; every pixel outside it is off.
    """
    check_threshold(threshold)
    windows = np.asarray(windows, np.int64).reshape(-1, 4)
    r0, r1, c0, c1 = windows.T
    y0, y1 = rows.footprint(r0, r1)
    x0, x1 = cols.footprint(c0, c1)
    empty = (r1 <= r0) | (c1 <= c0) | (y1 <= y0) | (x1 <= x0)
    # Input rows/cols read by each output range; the mask is zero there outside its window.
    ra, rb = rows.idx0[np.minimum(y0, len(rows.idx0) - 1)], rows.idx1[np.maximum(y1 - 1, 0)] + 1
    ca, cb = cols.idx0[np.minimum(x0, len(cols.idx0) - 1)], cols.idx1[np.maximum(x1 - 1, 0)] + 1
    # When downsampling, some window rows/cols are read by no output pixel: copy the overlap.
    lr, hr, lc, hc = np.maximum(r0, ra), np.minimum(r1, rb), np.maximum(c0, ca), np.minimum(c1, cb)
    table = np.stack([r0, r1, c0, c1, y0, y1, x0, x1, ra, rb, ca, cb, lr, hr, lc, hc], axis=1).tolist()
    threshold = np.float32(threshold)
    for block, skip, (r0, r1, c0, c1, y0, y1, x0, x1, ra, rb, ca, cb, lr, hr, lc, hc) in zip(
        blocks, empty.tolist(), table
    ):
        if skip:
            yield np.zeros((0, 0), bool), 0, 0
            continue
        h, w = r1 - r0, c1 - c0
        if h * (x1 - x0) * (w + y1 - y0) <= matrix_macs and np.isfinite(block).all():
            # (A NaN would spread through 0 * NaN to the whole mask; gathering keeps it local.)
            block = block.astype(np.float32, copy=False)
            horiz = block @ cols.m0[c0:c1, x0:x1]
            horiz += block @ cols.m1[c0:c1, x0:x1]
            values = rows.m0[r0:r1, y0:y1].T @ horiz
            values += rows.m1[r0:r1, y0:y1].T @ horiz
            yield values > threshold, y0, x0
            continue
        padded = np.zeros((rb - ra, cb - ca), np.float32)
        padded[lr - ra : hr - ra, lc - ca : hc - ca] = block[lr - r0 : hr - r0, lc - c0 : hc - c0]
        # Width first, then height: torch's order of float32 operations.
        horiz = padded[:, cols.idx0[x0:x1] - ca]
        horiz *= cols.w0[x0:x1]
        right = padded[:, cols.idx1[x0:x1] - ca]
        right *= cols.w1[x0:x1]
        horiz += right
        # In place on two gathered copies: these output-sized passes are the whole cost.
        values = np.take(horiz, rows.idx0[y0:y1] - ra, axis=0)
        values *= rows.w0[y0:y1, None]
        lower = np.take(horiz, rows.idx1[y0:y1] - ra, axis=0)
        lower *= rows.w1[y0:y1, None]
        values += lower
        yield values > threshold, y0, x0


def paste_mask(
    block: np.ndarray, window: np.ndarray, rows: AxisResize, cols: AxisResize, threshold: float = 0.5
) -> tuple[np.ndarray, int, int]:
    """``paste_masks`` for a single mask."""
    return next(paste_masks([block], np.asarray(window)[None], rows, cols, threshold))


def upsample_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsample of a ``float32[D, Hp, Wp]`` stack to ``[D, height, width]`` (slow, full size)."""
    rows = AxisResize.create(masks.shape[1], height)
    cols = AxisResize.create(masks.shape[2], width)
    horiz = masks[:, :, cols.idx0] * cols.w0 + masks[:, :, cols.idx1] * cols.w1
    return horiz[:, rows.idx0] * rows.w0[:, None] + horiz[:, rows.idx1] * rows.w1[:, None]
