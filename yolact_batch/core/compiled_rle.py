"""COCO run lengths of upsampled masks in one compiled loop (numba), the same pixels as ``paste_masks``.

``tiled_rle.mask_run_lengths`` decides a mask's pixels with a few dozen numpy calls per image;
their fixed costs and temporaries were most of the host work left. This walks each mask once,
column by column (the RLE's order), with the same decisions and the same arithmetic:

* a tile (output rows reading the same two source rows, times output columns reading the same
  two source columns) is on when its four source values are above ``threshold * (1 + MARGIN)``
  and finite, off when all four are at most ``threshold * (1 - MARGIN)`` (the weights are
  non-negative and sum to 1: rounding moves a pixel by a few ulps, far less than the margin);
  runs of tiles decided alike are one segment of a column;
* in the other tiles, each output column mixes the two source rows horizontally,
  ``v[r, a] * wa + v[r, b] * wb`` (float32, width first, as torch and ``paste_masks``), which
  may decide the column's rows the same way; otherwise each pixel is
  ``top * w0 + bottom * w1 > threshold``.

Products and sums stay separate float32 operations (numba fuses them only with fastmath, which
is off), so every pixel's decision is the one the full computation makes; the tests compare it
with ``paste_masks`` and the full-size upsample on values crowding the threshold. The sigmoid
stays in numpy, whose float32 ``exp`` is the one every other path uses.

numba is optional: without it ``available()`` is False and ``mask_rle`` takes the numpy path,
with the same results.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable

import numpy as np

from yolact_batch.core.tiled_rle import HUGE, AxisTiles, decision_bounds, footprints, sigmoid_


def _kernel(
    values, live, offsets, strides, row0s, col0s, y0s, y1s, x0s, x1s,
    row_tile_of, row_start, row_length, row_src0, row_src1, row_w0, row_w1,
    col_tile_of, col_start, col_length, col_src0, col_src1, col_w0, col_w1,
    height, width, threshold, above, below, huge,
):  # fmt: skip
    """Run lengths of every mask, concatenated, and how many each has (see ``compiled_run_lengths``)."""
    count = live.shape[0]
    n_pixels = height * width
    lengths = np.empty(count, np.int64)
    out = np.empty(4096 + 64 * count, np.int64)  # change positions, then run lengths
    k = 0
    # Per column tile: the row tiles as segments, runs of tiles decided alike merged (1 off, 2 on,
    # 0 undecided, each undecided tile a segment of its own).
    segment_code = np.empty(row_start.shape[0] + 1, np.int64)
    segment_tile = np.empty(row_start.shape[0] + 1, np.int64)
    segment_top = np.empty(row_start.shape[0] + 1, np.int64)
    segment_bottom = np.empty(row_start.shape[0] + 1, np.int64)
    # Per value: 1 certainly off, 2 certainly on, 0 neither; a tile's code is the AND of its corners'.
    codes = np.empty(values.shape[0], np.uint8)
    for i in range(values.shape[0]):
        v = values[i]
        codes[i] = np.uint8(v <= below) | (np.uint8(v > above and v < huge) << np.uint8(1))
    for m in range(count):
        if k == out.shape[0]:  # room for this mask's last run (a live mask's columns ask for more)
            bigger = np.empty(2 * out.shape[0], np.int64)
            bigger[:k] = out[:k]
            out = bigger
        first = k
        if live[m]:
            y0, y1, x0, x1 = y0s[m], y1s[m], x0s[m], x1s[m]
            g0, g1 = row_tile_of[y0], row_tile_of[y1 - 1] + 1
            # The value of source (r, c) is values[offset + (r - row0) * stride + c - col0].
            stride, row0 = strides[m], row0s[m]
            origin = offsets[m] - col0s[m]
            for t in range(col_tile_of[x0], col_tile_of[x1 - 1] + 1):
                a, b = col_src0[t], col_src1[t]
                n_segments = 0
                for g in range(g0, g1):
                    top = origin + (row_src0[g] - row0) * stride
                    bottom = origin + (row_src1[g] - row0) * stride
                    code = codes[top + a] & codes[top + b] & codes[bottom + a] & codes[bottom + b]
                    if code == 0 or n_segments == 0 or segment_code[n_segments - 1] != code:
                        segment_code[n_segments], segment_tile[n_segments] = code, g
                        segment_top[n_segments], segment_bottom[n_segments] = top, bottom
                        n_segments += 1
                for x in range(max(col_start[t], x0), min(col_start[t] + col_length[t], x1)):
                    if k + (y1 - y0) + 2 > out.shape[0]:  # room for every change this column can make
                        bigger = np.empty(2 * out.shape[0] + (y1 - y0), np.int64)
                        bigger[:k] = out[:k]
                        out = bigger
                    wa, wb = col_w0[x], col_w1[x]
                    column = x * height
                    on = False
                    for s in range(n_segments):
                        code, g = segment_code[s], segment_tile[s]
                        start = max(row_start[g], y0)
                        if code != 0:
                            if (code == 2) != on:
                                out[k] = column + start
                                k += 1
                                on = not on
                            continue
                        # Width first, then height, as torch: the same float32 operations.
                        top, bottom = segment_top[s], segment_bottom[s]
                        upper = values[top + a] * wa + values[top + b] * wb
                        lower = values[bottom + a] * wa + values[bottom + b] * wb
                        if upper > above and lower > above and upper < huge and lower < huge:
                            if not on:
                                out[k] = column + start
                                k += 1
                                on = True
                        elif upper <= below and lower <= below:
                            if on:
                                out[k] = column + start
                                k += 1
                                on = False
                        else:
                            for y in range(start, min(row_start[g] + row_length[g], y1)):
                                if (upper * row_w0[y] + lower * row_w1[y] > threshold) != on:
                                    out[k] = column + y
                                    k += 1
                                    on = not on
                    if on:  # the rows below the footprint are off
                        out[k] = column + y1
                        k += 1
        # Change positions -> run lengths. A change back at the same position cancels (a run that
        # ends a full-height column goes on into the next); a change at the image's end is none.
        previous, i, w = 0, first, first
        while i < k:
            position = out[i]
            if i + 1 < k and out[i + 1] == position:
                i += 2
                continue
            i += 1
            if position == n_pixels:
                continue
            out[w] = position - previous
            previous = position
            w += 1
        out[w] = n_pixels - previous
        k = w + 1
        lengths[m] = k - first
    return out[:k].copy(), lengths


def _encode(counts, lengths):
    """pycocotools' ``rleToString`` for each mask: its characters, concatenated, how many, and
    the mask's area (the sum of its odd-indexed runs, the runs of ones)."""
    chars = np.empty(7 * counts.shape[0] + 1, np.uint8)  # |deltas| < 2**34: at most 7 characters each
    sizes = np.empty(lengths.shape[0], np.int64)
    areas = np.zeros(lengths.shape[0], np.int64)
    p = start = 0
    for m in range(lengths.shape[0]):
        first = p
        for i in range(lengths[m]):
            x = counts[start + i]
            if i % 2 == 1:
                areas[m] += x
            if i > 2:  # every count after the third is stored as the delta to the one two back
                x -= counts[start + i - 2]
            more = True
            while more:
                c = x & 0x1F
                x >>= 5
                more = x != -1 if c & 0x10 else x != 0
                chars[p] = c + 48 + (0x20 if more else 0)
                p += 1
        sizes[m] = p - first
        start += lengths[m]
    return chars[:p], sizes, areas


@functools.cache
def _compiled() -> tuple[Callable, Callable] | None:
    try:
        import numba
    except ImportError:
        return None
    jit = numba.njit(cache=True, nogil=True)
    return jit(_kernel), jit(_encode)


def available() -> bool:
    """Whether numba is installed (the kernel compiles on first use, then loads from its cache)."""
    return _compiled() is not None


def compiled_run_lengths(
    blocks: Iterable[np.ndarray],
    windows: np.ndarray,
    rows: AxisTiles,
    cols: AxisTiles,
    threshold: float = 0.5,
    *,
    logits: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``tiled_rle.mask_run_lengths`` (same arguments and result) in the compiled kernel.

    Raises:
        RuntimeError: numba is not installed (check ``available()`` first).
    """
    if _compiled() is None:
        raise RuntimeError("compiled_run_lengths needs numba: pip install numba (or use tiled_rle.mask_run_lengths)")
    above, below, threshold = decision_bounds(threshold, rows, cols, caller="compiled_run_lengths")
    windows = np.asarray(windows, np.int64).reshape(-1, 4)
    r0, r1, c0, c1 = windows.T
    y0, y1, x0, x1, live = footprints(windows, rows, cols)
    # Each live mask's window with a border of zeros, one value wide: every value its footprint
    # reads (a footprint reads at most one source beyond each side of its window), packed.
    heights, widths = np.where(live, r1 - r0 + 2, 0), np.where(live, c1 - c0 + 2, 0)
    sizes = heights * widths
    offsets = np.cumsum(sizes) - sizes
    values = np.full(int(sizes.sum()), -np.inf if logits else 0, np.float32)
    for block, ok, offset, h, w in zip(blocks, live.tolist(), offsets.tolist(), heights.tolist(), widths.tolist()):
        if ok:
            values[offset : offset + h * w].reshape(h, w)[1:-1, 1:-1] = block
    if logits:
        sigmoid_(values)
    return _compiled()[0](
        values, live, offsets, widths, r0 - 1, c0 - 1, y0, y1, x0, x1,
        rows.tile_of, rows.start, rows.length, rows.src0, rows.src1, rows.axis.w0, rows.axis.w1,
        cols.tile_of, cols.start, cols.length, cols.src0, cols.src1, cols.axis.w0, cols.axis.w1,
        rows.out_size, cols.out_size, threshold, above, below, HUGE,
    )  # fmt: skip


def compiled_encode(counts: np.ndarray, lengths: np.ndarray) -> tuple[list[str], np.ndarray]:
    """``rle.counts_to_strings`` and the areas of the masks whose run lengths are ``counts``,
    ``lengths`` (as ``compiled_run_lengths`` returns them), in the compiled encoder."""
    if _compiled() is None:
        raise RuntimeError("compiled_encode needs numba: pip install numba (or use rle.counts_to_strings)")
    chars, sizes, areas = _compiled()[1](np.asarray(counts, np.int64), np.asarray(lengths, np.int64))
    text, ends = chars.tobytes().decode("ascii"), np.cumsum(sizes).tolist()
    return [text[a:b] for a, b in zip([0] + ends[:-1], ends)], areas
