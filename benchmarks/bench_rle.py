"""RLE-encode 100 box-confined instance masks of a 480x640 image.

(a) ``yolact_batch.core.rle.encode_in_box`` on the box crop, (b) the usual baseline:
paste into a full-size uint8 mask, ``np.asfortranarray``, ``pycocotools.mask.encode``.
Prints one JSON line with ms per image (median over repeats) and the speedup.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as coco

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from yolact_batch.core import rle  # noqa: E402

H, W, N_MASKS, REPEATS = 480, 640, 100, 21


def make_masks(seed: int = 0):
    """Random blobs (union of a few ellipses) inside random boxes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(N_MASKS):
        h, w = int(rng.integers(8, 241)), int(rng.integers(8, 321))
        top, left = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        yy, xx = np.mgrid[0:h, 0:w]
        box = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(0.2, 0.6) * h, rng.uniform(0.2, 0.6) * w
            box |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        out.append((box, top, left))
    return out


def ours(masks):
    return [rle.encode_in_box(b, t, left, H, W) for b, t, left in masks]


def baseline(masks):
    res = []
    for b, t, left in masks:
        full = np.zeros((H, W), np.uint8)
        full[t : t + b.shape[0], left : left + b.shape[1]] = b
        res.append(coco.encode(np.asfortranarray(full)))
    return res


def median_ms(fns, masks) -> list[float]:
    """Median ms per call of each fn; repeats interleave so both see the same CPU load."""
    times = [[] for _ in fns]
    for _ in range(REPEATS):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn(masks)
            ts.append(time.perf_counter() - t0)
    return [1e3 * float(np.median(ts)) for ts in times]


def main() -> None:
    masks = make_masks()
    # Correctness first: the speedup only counts if the bytes are identical.
    for a, b in zip(ours(masks), baseline(masks)):
        assert a["counts"] == b["counts"].decode("ascii") and a["size"] == list(b["size"])
    ours_ms, base_ms = median_ms([ours, baseline], masks)
    print(
        json.dumps(
            {
                "bench": "rle_encode",
                "image": [H, W],
                "masks_per_image": N_MASKS,
                "ours_encode_in_box_ms": round(ours_ms, 3),
                "pycocotools_full_mask_ms": round(base_ms, 3),
                "speedup": round(base_ms / ours_ms, 2),
                "identical": True,
            }
        )
    )


if __name__ == "__main__":
    main()
