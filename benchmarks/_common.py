"""Helpers shared by the benchmark scripts (timing and locating the shared data)."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))


def require_shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.exists():
        print(json.dumps({"skipped": f"shared data not found at {path}"}))
        sys.exit(0)
    return path


def median_ms(fn, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
