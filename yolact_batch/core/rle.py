"""COCO run-length encoding, byte-identical to ``pycocotools.mask.encode``.

pycocotools needs a full-size Fortran-ordered uint8 copy of every mask; for
instance masks that are nonzero only inside a small box that copy dominates
the cost.  Here runs are found inside the box only and shifted to image
coordinates, and the compressed string is built with array operations.

COCO conventions: pixels are read column-major (Fortran order); counts
alternate zeros/ones runs starting with zeros (a leading 0 when the first
pixel is on); the last count is the last run (never a trailing 0); an all-zero
``H x W`` mask is ``[H*W]`` and an empty (0-pixel) mask is ``[0]``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "area", "bbox", "counts_in_box", "counts_to_string", "counts_to_strings", "decode", "encode", "encode_in_box",
    "string_to_counts",
]  # fmt: skip

# 2**(5k-1), k = 1..12: a delta needs k+1 chunks of 5 bits once it no longer
# fits a 5k-bit two's-complement number (13 chunks cover int64).
_THRESHOLDS = np.array([1 << (5 * k - 1) for k in range(1, 13)], dtype=np.int64)


def _as_bytes(mask: np.ndarray) -> np.ndarray:
    """Mirror ``mask.astype(np.uint8)`` (bool is kept: same runs, no copy)."""
    mask = np.asarray(mask)
    return mask if mask.dtype in (np.bool_, np.uint8) else mask.astype(np.uint8)


def counts_to_string(counts: np.ndarray) -> str:
    """Compress run lengths ``int[N]`` to the COCO string (pycocotools ``rleToString``).

    Counts at index i > 2 are stored as the delta to counts[i-2]; each value is
    written as little-endian 5-bit chunks (bit 0x20 = more chunks follow, bit
    0x10 of the last chunk = sign) offset by 48 into printable ASCII.
    """
    counts = np.asarray(counts).ravel()
    return counts_to_strings([counts])[0] if counts.size else ""


def string_to_counts(s: str | bytes) -> np.ndarray:
    """Inverse of :func:`counts_to_string`: COCO string -> run lengths ``int64[N]``."""
    b = np.frombuffer(s.encode("ascii") if isinstance(s, str) else bytes(s), dtype=np.uint8)
    b = b.astype(np.int64) - 48
    if b.size == 0:
        return np.zeros(0, np.int64)
    if b[-1] & 0x20 or b.min() < 0:
        raise ValueError("not a COCO RLE string (bad char or truncated value)")
    last = np.flatnonzero((b & 0x20) == 0)  # final chunk of every value
    start = np.concatenate(([0], last[:-1] + 1))
    pos = np.arange(b.size) - np.repeat(start, last - start + 1)  # chunk index in value
    x = np.add.reduceat((b & 0x1F) << (5 * pos), start)
    x -= np.where(b[last] & 0x10, np.int64(1) << (5 * (pos[last] + 1)), 0)  # sign-extend
    # Undo the i-2 deltas: counts[1], counts[2] are raw, later ones accumulate per parity.
    x[1::2] = np.cumsum(x[1::2])
    x[2::2] = np.cumsum(x[2::2])
    return x


def _counts_from_starts(starts: np.ndarray, n_pixels: int) -> np.ndarray:
    """Run lengths from the sorted column-major indices (at most ``n_pixels``) where a new run starts."""
    # A start at n_pixels (only the last can be) is a run ending with the image: pycocotools
    # emits no trailing 0.  A start at 0 yields the leading 0 for an "on" first pixel.
    if starts.size and starts[-1] == n_pixels:
        starts = starts[:-1]
    edges = np.concatenate(([0], starts, [n_pixels]))
    return edges[1:] - edges[:-1]


def _box_counts(box: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    h, w = box.shape
    if h == height:
        # Box columns are contiguous in column-major order and runs may cross
        # from one column into the next: scan the box in that order.
        flat = np.zeros(h * w + 2, dtype=box.dtype)  # + a zero before and after
        flat[1:-1].reshape(w, h)[:] = box.T
        starts = left * height + np.flatnonzero(flat[1:] != flat[:-1])
        return _counts_from_starts(starts, height * width)
    # Otherwise runs stay inside their column. Framed by a zero row above and below,
    # every run starts and ends at a change between vertical neighbours; comparing rows
    # in the box's own row-major layout avoids a transpose copy, and sorting the few
    # run starts afterwards gives column-major order.
    n_pixels = height * width
    if h == 0 or w == 0:
        return np.array([n_pixels], np.int64)
    framed = np.zeros((h + 2, w), box.dtype)
    framed[1:-1] = box
    y, x = np.divmod(np.flatnonzero(framed[1:] != framed[:-1]), w)
    starts = x * height
    starts += y
    starts += left * height + top
    starts.sort()
    return _counts_from_starts(starts, n_pixels)


def _encode_box(box: np.ndarray, top: int, left: int, height: int, width: int) -> dict:
    return {"size": [height, width], "counts": counts_to_string(_box_counts(box, top, left, height, width))}


def encode_in_box(mask_box: np.ndarray, top: int, left: int, height: int, width: int) -> dict:
    """RLE of a ``height x width`` mask that is zero outside ``mask_box``.

    ``mask_box``: ``bool/uint8[h, w]`` placed at rows ``top:top+h``, columns
    ``left:left+w``; the full mask is never materialised.  Returns
    ``{"size": [height, width], "counts": str}``.  Like pycocotools, a run
    breaks wherever the byte value changes, so pass binary masks.
    """
    box = _as_bytes(mask_box)
    if box.ndim != 2:
        raise ValueError(f"mask_box must be 2-D, got shape {box.shape}")
    h, w = box.shape
    if top < 0 or left < 0 or top + h > height or left + w > width:
        raise ValueError(f"box {box.shape} at ({top}, {left}) outside image {height}x{width}")
    return _encode_box(box, int(top), int(left), int(height), int(width))


def counts_in_box(mask_box: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """Uncompressed run lengths of the mask that ``encode_in_box`` encodes (same arguments)."""
    box = _as_bytes(mask_box)
    h, w = box.shape
    if top < 0 or left < 0 or top + h > height or left + w > width:
        raise ValueError(f"box {box.shape} at ({top}, {left}) outside image {height}x{width}")
    return _box_counts(box, int(top), int(left), int(height), int(width))


def counts_to_strings(counts: list[np.ndarray]) -> list[str]:
    """``counts_to_string`` for many masks in one vectorised pass (the per-call cost
    dominates for ~100 masks of an image)."""
    if not counts:
        return []
    lengths = np.array([len(c) for c in counts])
    flat = np.concatenate(counts).astype(np.int64, copy=False)
    if flat.size == 0:
        return [""] * len(counts)
    # Every count but the first three of its mask is stored as the delta to the count
    # two places earlier.
    x = flat.copy()
    x[2:] -= flat[:-2]
    firsts = np.cumsum(lengths) - lengths
    raw = np.concatenate([firsts, firsts + 1, firsts + 2])
    raw = raw[raw < np.tile(firsts + lengths, 3)]
    x[raw] = flat[raw]
    # Chunks per value: 1 + number of 5k-bit widths it does not fit into.
    # x ^ (x >> 63) is ~x = -x-1 for negatives, matching the C loop's stop rule.
    magnitude = x ^ (x >> 63)
    n = np.ones(x.size, np.int64)
    largest = magnitude.max()
    for limit in _THRESHOLDS:
        if limit > largest:
            break
        n += magnitude >= limit
    end = np.cumsum(n)
    k = np.arange(end[-1]) - np.repeat(end - n, n)  # chunk index within its value
    chars = ((np.repeat(x, n) >> (5 * k)) & 0x1F) + (48 + 0x20)  # arithmetic shift, like C
    chars[end - 1] -= 0x20  # the last chunk of a value has no continuation bit
    text = chars.astype(np.uint8).tobytes().decode("ascii")
    bounds = np.r_[0, end][np.r_[0, np.cumsum(lengths)]]  # each mask's first and last char
    return [text[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]


def encode(mask: np.ndarray) -> dict:
    """RLE of ``bool/uint8[H, W]`` -> ``{"size": [H, W], "counts": str}``.

    Equals ``pycocotools.mask.encode(np.asfortranarray(mask.astype(np.uint8)))``
    with ``counts`` decoded to str.  Only the bounding box of nonzero pixels is
    scanned column-major, so sparse masks are cheap.
    """
    m = _as_bytes(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    height, width = m.shape
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return _encode_box(m[:0, :0], 0, 0, height, width)
    r0, r1 = rows[0], rows[-1] + 1
    cols = np.flatnonzero(m[r0:r1].any(axis=0))
    c0, c1 = cols[0], cols[-1] + 1
    return _encode_box(m[r0:r1, c0:c1], int(r0), int(c0), height, width)


def _counts_of(rle: dict) -> np.ndarray:
    """Run lengths of a compressed (str/bytes) or uncompressed (list) RLE."""
    c = rle["counts"]
    return string_to_counts(c) if isinstance(c, (str, bytes)) else np.asarray(c, np.int64)


def area(rle: dict) -> int:
    """Number of on pixels: the sum of the ones runs (odd-indexed counts)."""
    return int(_counts_of(rle)[1::2].sum())


def decode(rle: dict) -> np.ndarray:
    """RLE -> ``bool[H, W]`` (counts are column-major)."""
    height, width = (int(v) for v in rle["size"])
    counts = _counts_of(rle)
    values = np.arange(counts.size) % 2 == 1
    flat = np.repeat(values, counts)
    if flat.size != height * width:
        raise ValueError(f"counts sum to {flat.size}, expected {height * width}")
    return flat.reshape(width, height).T


def bbox(rle: dict) -> list[float]:
    """COCO ``[x, y, w, h]`` of the pixels an RLE covers, as ``pycocotools.mask.toBbox`` gives it.

    The box of an empty mask is ``[0, 0, 0, 0]``. A run that wraps from one column into the
    next covers every row, so the box then spans the full height (pycocotools' rule).
    """
    h = int(rle["size"][0])
    counts = _counts_of(rle)
    m = len(counts) // 2 * 2
    if m == 0 or h == 0:
        return [0.0, 0.0, 0.0, 0.0]
    ends = np.cumsum(counts[:m], dtype=np.int64)
    # Even entries: the first pixel of a run of ones; odd entries: its last pixel (column-major).
    pixels = ends - (np.arange(m) % 2)
    y, x = pixels % h, pixels // h
    x0, y0, x1, y1 = int(x.min()), int(y.min()), int(x.max()), int(y.max())
    if np.any(x[0::2] < x[1::2]):
        y0, y1 = 0, h - 1
    return [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)]
