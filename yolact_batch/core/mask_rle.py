"""COCO run lengths of an image's masks, by the fastest path that gives the same pixels.

Three paths, one result (``paste_masks``' pixels, run-length encoded as ``rle.counts_in_box``):

* ``compiled_rle`` (numba installed): one compiled loop over each mask's columns;
* ``tiled_rle.mask_run_lengths``: the same decisions in numpy calls over tiles;
* ``masks.paste_masks`` + ``rle.counts_in_box``: images smaller than the prototypes on an axis
  (rare; some sources are then read by no output, which the tiles assume away).
"""

from __future__ import annotations

from itertools import islice
from typing import Iterable

import numpy as np

from yolact_batch.core import compiled_rle
from yolact_batch.core.masks import AxisResize, paste_masks, sigmoid
from yolact_batch.core.rle import counts_in_box, counts_to_strings
from yolact_batch.core.tiled_rle import AxisTiles, mask_run_lengths

# Prototype rows of the masks put on one canvas: bounds its memory (8 MiB at 138 columns); 100
# masks of a COCO image take about 4,000. Tunes memory only.
_CHUNK_ROWS = 16384


def _use_compiled(compiled: bool | None) -> bool:
    """``compiled`` as given, or (None) whether numba is installed."""
    return compiled_rle.available() if compiled is None else compiled


def run_lengths(
    blocks: Iterable[np.ndarray],
    windows: np.ndarray,
    proto_size: tuple[int, int],
    image_size: tuple[int, int],
    threshold: float = 0.5,
    *,
    logits: bool = False,
    compiled: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Column-major run lengths of every mask of an image.

    Args:
        blocks: per mask, ``float32[row1-row0, col1-col0]`` values inside its window (the
            mask is zero outside it); with ``logits``, values before the sigmoid.
        windows: ``int64[D, 4]`` windows ``(row0, row1, col0, col1)`` at prototype resolution.
        proto_size, image_size: ``(height, width)`` of the prototypes and of the image.
        threshold: a pixel is on when its upsampled value is ``> threshold`` (>= 0).
        logits: apply ``masks.sigmoid`` to the blocks first.
        compiled: use the numba kernel (None: when numba is installed; False: numpy only).

    Returns:
        ``(counts, lengths)``: the run lengths of every mask, concatenated (``int64``), and how
        many belong to each (``int64[D]``).
    """
    (hp, wp), (height, width) = proto_size, image_size
    windows = np.asarray(windows, np.int64).reshape(-1, 4)
    if height >= hp and width >= wp:
        rows, cols = AxisTiles.create(hp, height), AxisTiles.create(wp, width)
        method = compiled_rle.compiled_run_lengths
        if not _use_compiled(compiled):
            method = mask_run_lengths
        # All masks on one canvas (each numpy step is then one call per image), unless very many.
        ends = np.flatnonzero(np.diff(np.cumsum(np.maximum(windows[:, 1] - windows[:, 0], 0) + 2) // _CHUNK_ROWS)) + 1
        blocks = iter(blocks)
        parts = [
            method(islice(blocks, b - a), windows[a:b], rows, cols, threshold, logits=logits)
            for a, b in zip(np.r_[0, ends].tolist(), np.r_[ends, len(windows)].tolist())
            if b > a
        ]
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate([c for c, _ in parts]), np.concatenate([n for _, n in parts])
    rows, cols = AxisResize.create(hp, height), AxisResize.create(wp, width)
    if logits:
        blocks = (sigmoid(block) for block in blocks)
    counts = [
        counts_in_box(mask, top, left, height, width)
        for mask, top, left in paste_masks(blocks, windows, rows, cols, threshold)
    ]
    lengths = np.array([len(c) for c in counts], np.int64)
    return (np.concatenate(counts) if counts else np.zeros(0, np.int64)), lengths


def encode_run_lengths(
    counts: np.ndarray, lengths: np.ndarray, *, compiled: bool | None = None
) -> tuple[list[str], np.ndarray]:
    """The COCO RLE ``counts`` string and the area (``int64``) of each mask of ``run_lengths``'
    result (``compiled`` as there)."""
    if _use_compiled(compiled):
        return compiled_rle.compiled_encode(counts, lengths)
    strings = counts_to_strings(np.split(counts, np.cumsum(lengths)[:-1]) if len(lengths) else [])
    return strings, mask_areas(counts, lengths)


def mask_areas(counts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``int64[D]`` pixels on in each mask: the sum of its odd-indexed run lengths (the runs of ones)."""
    if len(lengths) == 0:
        return np.zeros(0, np.int64)
    starts = np.cumsum(lengths) - lengths
    ones = (np.arange(counts.size) - np.repeat(starts, lengths)) % 2 == 1
    return np.add.reduceat(np.where(ones, counts, 0), starts).astype(np.int64)
