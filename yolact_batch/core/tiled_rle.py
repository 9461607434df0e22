"""COCO run lengths of upsampled masks, decided tile by tile at prototype resolution.

A mask pixel is ``bilinear(values) > threshold``, where each output pixel mixes the same
two source rows and two source columns as every other pixel of its *tile* (output rows
with equal sources times output columns with equal sources). The bilinear weights are
non-negative and sum to 1 (within 2**-24), so when all four source values of a tile lie
above ``threshold * (1 + MARGIN)`` every pixel of the tile is on, and below
``threshold * (1 - MARGIN)`` every pixel is off: the float32 rounding of the two products
and two sums moves a value by a few ulps, far less than the margin. Only the other tiles
(the ones a mask boundary crosses, about a tenth of them) are computed pixel by pixel,
with the same float32 operations in the same order as ``masks.paste_masks`` (width
first, then height, as torch). The RLE needs only where each column changes, so decided
tiles contribute one run boundary per column where their class changes, and nothing else.

The masks are done many at a time: their windows are stacked on one canvas in prototype
columns, so that the classification, the tile codes and every later step are a few numpy
calls per canvas, not per mask (``mask_rle.run_lengths`` puts an image's masks on one canvas).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from yolact_batch.core.masks import AxisResize, check_threshold, freeze_arrays

# Relative distance from the threshold within which a source value leaves its tiles undecided.
MARGIN = 1e-5
# Source values at or above this (or not finite) are never "certainly on": their products
# could overflow, and inf * 0 is NaN, which is off.
HUGE = np.float32(1e38)
_OFF, _ON, _UNDECIDED = 1, 2, 0


@dataclass(frozen=True)
class AxisTiles:
    """The tiles of one axis: output indices with equal sources (runs of ``idx0``), runs
    longer than ``ceil(out / in)`` split so that padding every tile to the longest is cheap.

    Attributes:
        axis: the sampling of this axis.
        in_size, out_size: prototype and image size along the axis.
        start, length: ``int64[T]`` first output index and length of each tile.
        src0, src1: ``int64[T]`` the two source indices every output of the tile reads.
        tile_of: ``int64[out]`` the tile of each output index.
        w0, w1: ``float32[L, T]`` weights of the ``L`` outputs of each tile (a short
            tile repeats its last weight, so that its padded outputs repeat its last value).
        valid: ``bool[L, T]`` which of those ``L`` are real outputs.
        first_tile, tiles_of_source: ``int64[in]`` the tiles whose first source is ``s``.
        source_start, source_length: ``int64[in]`` the outputs whose first source is ``s``.
    """

    axis: AxisResize
    in_size: int
    out_size: int
    start: np.ndarray
    length: np.ndarray
    src0: np.ndarray
    src1: np.ndarray
    tile_of: np.ndarray
    w0: np.ndarray
    w1: np.ndarray
    valid: np.ndarray
    first_tile: np.ndarray
    tiles_of_source: np.ndarray
    source_start: np.ndarray
    source_length: np.ndarray

    def __post_init__(self) -> None:
        freeze_arrays(self)

    @classmethod
    @functools.lru_cache(maxsize=256)
    def create(cls, in_size: int, out_size: int) -> "AxisTiles":
        """The tiles from ``in_size`` to ``out_size`` (cached: images share a few sizes)."""
        axis = AxisResize.create(in_size, out_size)
        runs = np.flatnonzero(np.r_[True, axis.idx0[1:] != axis.idx0[:-1]])
        cap = -(-out_size // in_size)
        run_length = np.diff(np.r_[runs, out_size])
        pieces = -(-run_length // cap)
        piece = np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        start = np.repeat(runs, pieces) + cap * piece
        length = np.diff(np.r_[start, out_size])
        offset = np.arange(int(length.max()))[:, None]
        outputs = start + np.minimum(offset, length - 1)
        src0 = axis.idx0[start]
        sources = np.arange(in_size)
        first_tile = np.searchsorted(src0, sources)
        tiles_of_source = np.searchsorted(src0, sources, "right") - first_tile
        source_start = np.searchsorted(axis.idx0, sources)
        source_length = np.searchsorted(axis.idx0, sources, "right") - source_start
        return cls(
            axis, in_size, out_size, start, length, src0, axis.idx1[start],
            np.repeat(np.arange(len(start)), length),
            np.ascontiguousarray(axis.w0[outputs]), np.ascontiguousarray(axis.w1[outputs]), offset < length,
            first_tile, tiles_of_source, source_start, source_length,
        )  # fmt: skip

    @property
    def upsamples(self) -> bool:
        """Whether every source index is read (out >= in): the tiles cover the grid without gaps."""
        return self.out_size >= self.in_size


def sigmoid_(x: np.ndarray) -> None:
    """``masks.sigmoid`` in place, the same float32 operations (``-inf`` becomes exactly 0)."""
    np.negative(x, out=x)
    with np.errstate(over="ignore"):
        np.exp(x, out=x)
    x += np.float32(1)
    np.divide(np.float32(1), x, out=x)


def _key_range(starts: np.ndarray, lengths: np.ndarray, step: int) -> np.ndarray:
    """``starts[i] + step * j`` for ``j < lengths[i]``, all ``i`` concatenated."""
    ends = np.cumsum(lengths)
    j = np.arange(ends[-1] if ends.size else 0) - np.repeat(ends - lengths, lengths)
    return np.repeat(starts, lengths) + step * j


def decision_bounds(
    threshold: float, rows: AxisTiles, cols: AxisTiles, *, caller: str
) -> tuple[np.float32, np.float32, np.float32]:
    """``(above, below, threshold)`` in float32 for a run-length kernel (``caller``, named in
    errors): a value above ``above`` (below ``below``) keeps every pixel it is mixed into on
    (off); see the module's note on ``MARGIN``.

    Raises:
        ValueError: a negative threshold, or an image smaller than the prototypes on an axis.
    """
    check_threshold(threshold)
    if not (rows.upsamples and cols.upsamples):
        raise ValueError(f"{caller} needs an image at least as large as the prototypes; use paste_masks")
    t = float(threshold)
    return np.float32(t + t * MARGIN + 1e-30), np.float32(t - t * MARGIN), np.float32(t)


def footprints(
    windows: np.ndarray, rows: AxisTiles, cols: AxisTiles
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(y0, y1, x0, x1, live)``: per window ``int64[D, 4]``, the output rows ``[y0, y1)`` and
    columns ``[x0, x1)`` whose samples touch it (outside them every value is 0), and whether
    both the window and that footprint are non-empty."""
    r0, r1, c0, c1 = np.asarray(windows, np.int64).reshape(-1, 4).T
    y0, y1 = np.searchsorted(rows.axis.idx1, r0), np.searchsorted(rows.axis.idx0, r1)
    x0, x1 = np.searchsorted(cols.axis.idx1, c0), np.searchsorted(cols.axis.idx0, c1)
    return y0, y1, x0, x1, (r1 > r0) & (c1 > c0) & (y1 > y0) & (x1 > x0)


def mask_run_lengths(
    blocks: Iterable[np.ndarray],
    windows: np.ndarray,
    rows: AxisTiles,
    cols: AxisTiles,
    threshold: float = 0.5,
    *,
    logits: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """COCO run lengths of ``paste_masks(...)``'s binary masks, without their pixels.

    Args:
        blocks: per mask, ``float32[row1-row0, col1-col0]`` values inside its window (the
            mask is zero outside it); with ``logits``, values before the sigmoid.
        windows: ``int64[D, 4]`` windows ``(row0, row1, col0, col1)`` at prototype resolution.
        rows, cols: the tiles of each axis, from prototype to image size; both must upsample.
        threshold: a pixel is on when its value is ``> threshold`` (>= 0).
        logits: apply ``masks.sigmoid`` to the blocks first (batched; same bits).

    Returns:
        ``(counts, lengths)``: the column-major run lengths of every mask, concatenated
        (``int64``), and how many belong to each (``int64[D]``), as ``rle.counts_in_box``.
    """
    above, below, threshold = decision_bounds(threshold, rows, cols, caller="mask_run_lengths")
    height, width = rows.out_size, cols.out_size
    windows = np.asarray(windows, np.int64).reshape(-1, 4)
    count = len(windows)
    r0, r1, c0, c1 = windows.T
    y0, y1, x0, x1, live = footprints(windows, rows, cols)
    g0, g1 = rows.tile_of[np.minimum(y0, height - 1)], rows.tile_of[np.maximum(y1 - 1, 0)] + 1
    ra, rb = rows.src0[g0], rows.src1[np.maximum(g1 - 1, 0)] + 1
    # The canvas: each live mask's source rows [ra, rb), all prototype columns, stacked.
    span = np.where(live, rb - ra, 0)
    first_row = np.cumsum(span) - span
    canvas = np.full((int(span.sum()), cols.in_size), -np.inf if logits else 0, np.float32)
    places = np.stack([r0 - ra + first_row, r1 - ra + first_row, c0, c1], axis=1).tolist()
    for block, ok, (top, bottom, left, right) in zip(blocks, live.tolist(), places):
        if ok:
            canvas[top:bottom, left:right] = block
    if logits:
        sigmoid_(canvas)
    code = (canvas <= below).view(np.int8) + ((canvas > above) & (canvas < HUGE)).view(np.int8) * np.int8(2)

    # Tile codes (AND of the four corners: _ON, _OFF or _UNDECIDED), one row per row tile of
    # each mask, an all-_OFF row before every mask and after the last. Column tiles outside a
    # mask's footprint read only zeros outside its window: _OFF without further ado.
    groups = np.where(live, g1 - g0, 0)
    framed = np.where(live, groups + 1, 0)
    tile_row0 = 1 + np.cumsum(framed) - framed
    n_tile_rows = 1 + int(framed.sum())
    mask_of = np.repeat(np.arange(count), groups)
    g = _key_range(g0, groups, 1)
    tile_rows = _key_range(tile_row0, groups, 1)
    canvas_row = first_row[mask_of] - ra[mask_of]
    pairs = np.full((n_tile_rows, cols.in_size + 1), _OFF, np.int8)
    pairs[tile_rows, :-1] = code[canvas_row + rows.src0[g]] & code[canvas_row + rows.src1[g]]
    pairs[:, -1] = pairs[:, -2]  # the last source column is its own pair (clamped at the edge)
    # Tile codes by (row tile, source column s): the column tiles of s all read s and s + 1.
    tiles = pairs[:, :-1] & pairs[:, 1:]
    n_cols = cols.in_size
    flat = tiles.ravel()
    # Per tile row: its mask, row tile and first output row; the row after a mask's last
    # tile row starts at the end of its footprint.
    row_mask = np.zeros(n_tile_rows, np.int64)
    row_tile = np.zeros(n_tile_rows, np.int64)
    row_y = np.zeros(n_tile_rows, np.int64)
    row_mask[tile_rows], row_tile[tile_rows], row_y[tile_rows] = mask_of, g, rows.start[g]
    after = (tile_row0 + groups)[live]
    row_mask[after], row_y[after] = np.flatnonzero(live), y1[live]

    n_pixels = height * width
    stride = n_pixels + 1  # keys: mask * stride + column-major index of a run start
    keys = []
    # Decided tiles above decided tiles of the other class: a run starts in each of their columns.
    r, c = np.divmod(np.flatnonzero((flat[:-n_cols] + flat[n_cols:]) == _OFF + _ON), n_cols)
    keys.append(
        _key_range(
            row_mask[r + 1] * stride + row_y[r + 1] + cols.source_start[c] * height, cols.source_length[c], height
        )
    )
    undecided = np.flatnonzero(flat == _UNDECIDED)
    if undecided.size:
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf values decide like paste_masks: off
            bounds = (above, below, threshold)
            keys += _undecided_keys(undecided, flat, n_cols, canvas, first_row - ra, row_mask, row_tile, rows, cols,
                                    bounds, stride)  # fmt: skip
    return _counts_from_keys(np.concatenate(keys), count, n_pixels)


def _undecided_keys(u, flat, n_cols, canvas, canvas_row, row_mask, row_tile, rows, cols, bounds, stride):
    """Run starts inside, above and below the undecided tiles ``u`` (flat tile indices)."""
    above, below, threshold = bounds
    height, width_in = rows.out_size, cols.in_size
    # Each undecided (row tile, source column) as its column tiles ("pieces", mostly one).
    r, c = np.divmod(u, n_cols)
    per = cols.tiles_of_source[c]
    piece = _key_range(np.zeros(u.size, np.int64), per, 1)
    u, r, c = np.repeat(u, per), np.repeat(r, per), np.repeat(c, per)
    k = cols.first_tile[c] + piece
    n = u.size
    g, m = row_tile[r], row_mask[r]
    values = canvas.ravel()
    ia = (canvas_row[m] + rows.src0[g]) * width_in
    ib = (canvas_row[m] + rows.src1[g]) * width_in
    ja, jb = cols.src0[k], cols.src1[k]
    # [L, n] and [Lr, Lc, n] with the tile innermost: long numpy loops. Same operations as paste_masks.
    w0, w1 = cols.w0.take(k, axis=1), cols.w1.take(k, axis=1)
    upper = values[ia + ja] * w0
    upper += values[ia + jb] * w1
    lower = values[ib + ja] * w0
    lower += values[ib + jb] * w1
    valid = cols.valid.take(k, axis=1)
    base = m * stride + cols.start[k] * height + rows.start[g]
    # A column of a tile whose two (horizontally interpolated) sources are both clear of the
    # threshold is decided by them, like a tile by its corners; the others are computed per pixel.
    on_first = (upper > above) & (lower > above) & (upper < HUGE) & (lower < HUGE)
    undecided = ~(on_first | ((upper <= below) & (lower <= below))) & valid
    on_last = on_first.copy()
    keys = []
    pick = np.flatnonzero(undecided.ravel())
    if pick.size:
        x, i = np.divmod(pick, n)
        gi = g[i]
        pixel = upper.ravel()[pick] * rows.w0.take(gi, axis=1)
        pixel += lower.ravel()[pick] * rows.w1.take(gi, axis=1)
        on = pixel > threshold  # [Lr, columns]
        on_first.ravel()[pick] = on[0]
        on_last.ravel()[pick] = on[-1]
        # Inside a tile (padded rows repeat the last one: no false changes).
        j, c = np.divmod(np.flatnonzero((on[1:] != on[:-1]).ravel()), pick.size)
        keys.append(base[i[c]] + x[c] * height + j + 1)
    # At the top edge, against the tile above (its last row when undecided too).
    tile_above = flat[u - n_cols]
    # (u is sorted and each source tile's pieces consecutive: the first piece of the tile above.)
    lookup = np.where(tile_above == _UNDECIDED, np.searchsorted(u, u - n_cols) + piece, 0)
    above_on = np.where(tile_above == _UNDECIDED, on_last.take(lookup, axis=1), tile_above == _ON)
    x, i = np.divmod(np.flatnonzero(((above_on != on_first) & valid).ravel()), n)
    keys.append(base[i] + x * height)
    # At the bottom edge, against a decided tile below (an undecided one owns that edge).
    tile_below = flat[u + n_cols]
    x, i = np.divmod(
        np.flatnonzero(((on_last != (tile_below == _ON)) & ((tile_below != _UNDECIDED) & valid)).ravel()), n
    )
    keys.append(base[i] + x * height + rows.length[g][i])
    return keys


def _counts_from_keys(keys: np.ndarray, count: int, n_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths per mask from the run starts ``mask * (n_pixels + 1) + index``."""
    keys.sort()
    # A run that ends a full-height column and one that starts the next are the same run:
    # the two equal keys cancel (they only ever come in pairs).
    same = np.flatnonzero(keys[1:] == keys[:-1])
    if same.size:
        keys = np.delete(keys, np.r_[same, same + 1])
    mask, start = np.divmod(keys, n_pixels + 1)
    inside = start != n_pixels  # a run ending with the image is no start (no trailing 0)
    mask, start = mask[inside], start[inside]
    per_mask = np.bincount(mask, minlength=count)
    ends = np.cumsum(per_mask)
    previous = np.empty_like(start)
    previous[1:] = start[:-1]
    previous[(ends - per_mask)[per_mask > 0]] = 0
    counts = np.empty(start.size + count, np.int64)
    counts[np.arange(start.size) + mask] = start - previous
    last = np.zeros(count, np.int64)
    last[per_mask > 0] = start[ends[per_mask > 0] - 1]
    counts[ends + np.arange(count)] = n_pixels - last
    return counts, per_mask + 1
