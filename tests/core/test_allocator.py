"""retain_freed_memory: freed arrays are reused without faulting their pages in again."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# In a fresh interpreter (the settings are process-wide): the pages faulted in per round of three
# 4 MiB arrays, allocated, written and freed like one image's preprocessing, before and after.
SCRIPT = textwrap.dedent(
    """
    import json, resource
    import numpy as np
    from yolact_batch.core.allocator import retain_freed_memory

    def faults_per_array(rounds=20):
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(rounds):
            arrays = [np.empty(2**20, np.float32) for _ in range(3)]
            for a in arrays:
                a.fill(1)
            del arrays, a
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / rounds

    before = faults_per_array()
    took = retain_freed_memory()
    faults_per_array(1)  # the first block after the change is faulted in once
    print(json.dumps({"before": before, "took": took, "again": retain_freed_memory(), "after": faults_per_array()}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_freed_arrays_are_reused_without_page_faults():
    import json

    out = json.loads(subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout)
    assert out["took"] is True and out["again"] is True
    pages = 3 * 4 * 2**20 // 4096
    assert out["before"] > pages / 4, out  # glibc trims the heap after each round: pages fault again
    assert out["after"] < pages / 20, out


def test_thresholds_are_within_what_glibc_accepts():
    from yolact_batch.core import allocator

    assert allocator.MMAP_THRESHOLD <= 32 * 2**20  # glibc refuses more on 64-bit
    assert 0 < allocator.TRIM_THRESHOLD < 2**31  # mallopt takes an int
