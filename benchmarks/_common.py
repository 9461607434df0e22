"""Helpers shared by the benchmark scripts (timing and locating the shared data)."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Beside the repository; YOLACT_BATCH_SHARED or ./shared where only the checkout travels (gpu_bundle.py).
SHARED = Path(os.environ.get("YOLACT_BATCH_SHARED") or next(
    (p for p in (REPO.parent / "shared", REPO / "shared") if p.is_dir()), REPO.parent / "shared"
))  # fmt: skip
sys.path.insert(0, str(REPO))


def require_shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.exists():
        print(json.dumps({"skipped": f"shared data not found at {path}"}))
        sys.exit(0)
    return path


def median_ms(fn, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    return interleaved_median_ms([fn], repeats, warmup)[0]


def interleaved_median_ms(fns, repeats: int, warmup: int = 2) -> list[float]:
    """Median wall time of each ``fn()`` in milliseconds, timed round-robin so that a
    slow spell of a shared machine hits all of them alike (ratios stay fair)."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]
