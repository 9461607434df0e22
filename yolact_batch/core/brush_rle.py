"""Label Studio brush masks: its own run-length encoding (``value.format == "rle"``).

Label Studio stores a brush region as the RGBA image of the mask, flattened row-major
(``H * W * 4`` bytes, every channel 255 on the mask and 0 elsewhere, as its SDK's
``mask2rle`` writes it), packed with thi.ng's ``rle-pack`` bit stream:

    header  32 bits value count, 5 bits word size - 1 (7: bytes), 4 x 4 bits run-length
            field sizes - 1 (3, 4, 8, 16 bits)
    chunks  1 bit repeat flag, 2 bits which field size, (size) bits run length - 1, then one
            8-bit value for a repeat (or run-length values for a literal chunk)

A mask pixel run of L pixels is a run of 4L equal bytes, so every chunk here is a repeat;
runs longer than 2**16 values are split. The stream is zero-padded to whole bytes and
written as a list of byte values, the JSON form Label Studio imports.
"""

from __future__ import annotations

import numpy as np

__all__ = ["encode"]

_SIZES = np.array([3, 4, 8, 16], dtype=np.int64)  # run-length field widths in bits
_LIMITS = np.array([1 << 3, 1 << 4, 1 << 8], dtype=np.int64)  # longest run each of the first three holds
_LONGEST = 1 << 16
_CHANNELS = 4


def _runs(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lengths int64[R], values bool[R]) of the runs of equal values of ``bool[N]``, N > 0."""
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    lengths = np.diff(np.append(starts, flat.size))
    return lengths.astype(np.int64), flat[starts]


def _split(lengths: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut runs longer than 2**16 into pieces of 2**16 (the last piece keeps the rest)."""
    pieces = -(-lengths // _LONGEST)
    if np.all(pieces == 1):
        return lengths, values
    run = np.repeat(np.arange(lengths.size), pieces)
    last = np.cumsum(pieces) - 1
    out = np.full(run.size, _LONGEST, dtype=np.int64)
    out[last] = lengths - (pieces - 1) * _LONGEST
    return out, values[run]


def _pack(fields: np.ndarray, widths: np.ndarray) -> list[int]:
    """Concatenate ``fields[i]`` written MSB first in ``widths[i]`` bits; bytes, zero-padded."""
    total = int(widths.sum())
    first_bit = np.repeat(np.cumsum(widths) - widths, widths)
    shift = np.repeat(widths, widths) - 1 - (np.arange(total) - first_bit)
    bits = (np.repeat(fields, widths) >> shift) & 1
    return np.packbits(bits.astype(np.uint8)).tolist()


def encode(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE of a ``bool[H, W]`` mask (any H, W > 0).

    Returns the byte values of the stream; ``label_studio_sdk.converter.brush.decode_rle``
    of it, reshaped to ``[H, W, 4]``, is 255 exactly on the mask in every channel.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {mask.shape}")
    lengths, values = _runs(mask.ravel())
    lengths, values = _split(lengths * _CHANNELS, values)
    size = np.searchsorted(_LIMITS, lengths, side="left")  # smallest field that holds length - 1
    header_fields = np.array([mask.size * _CHANNELS, 7, *(_SIZES - 1)], dtype=np.int64)
    header_widths = np.array([32, 5, 4, 4, 4, 4], dtype=np.int64)
    n = lengths.size
    chunk_fields = np.stack([np.ones(n, np.int64), size, lengths - 1, np.where(values, 255, 0)], axis=1)
    chunk_widths = np.stack([np.ones(n, np.int64), np.full(n, 2), _SIZES[size], np.full(n, 8)], axis=1)
    return _pack(
        np.concatenate([header_fields, chunk_fields.ravel()]), np.concatenate([header_widths, chunk_widths.ravel()])
    )
