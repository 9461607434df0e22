"""Keep freed memory in the process, so that each image's arrays do not fault in fresh pages.

Every image allocates and frees tens of megabytes of arrays (preprocessing a 640x480 image
alone: a float32 copy, its resize and the network input, about 2,500 pages). glibc hands large
blocks back to the kernel as soon as they are freed (blocks past its mmap threshold at once, the
top of the heap once more than its trim threshold is free), so the next image faults every page
in again and the kernel zeroes it: 1.3 us a page on our VMs, which was more than half of the
preprocessing time and a tenth of all host work (``benchmarks/bench_host.py``).

``retain_freed_memory`` raises both thresholds, so that blocks up to 32 MiB come from the heap
and up to 256 MiB of freed heap stay mapped for reuse. It changes the whole process, so it is
called by the process owners only: the CLI and the job's CPU stages. Python API users can call
it themselves.
"""

from __future__ import annotations

import ctypes
import functools
import sys

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# glibc's largest allowed mmap threshold on 64-bit (HEAP_MAX_SIZE / 2); bigger blocks (a batch of
# network inputs, a huge image) are still mapped and unmapped, so they never pin heap memory.
MMAP_THRESHOLD = 32 * 2**20
# Freed memory at the top of the heap kept per process (what a worker may hold beyond its arrays).
TRIM_THRESHOLD = 256 * 2**20


@functools.cache
def retain_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once; later calls are free).

    Args:
        mmap_threshold: blocks up to this many bytes come from the heap (at most 32 MiB).
        trim_threshold: free bytes at the heap's top before glibc returns them to the kernel.

    Returns:
        True when the allocator took both settings; False where there is no glibc ``mallopt``
        (macOS, musl), which changes nothing else.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) & bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
