"""The C heap of a process that runs XLA on the CPU.

XLA's CPU runtime gives every execution one temporary buffer, allocated with ``posix_memalign``
from a worker thread and freed when the execution ends: 3.5 GB for a training step of the ~100M
benchmark model, 100 MB for the demo's. glibc serves a request that large from a fresh ``mmap``
(a worker thread's arena cannot hold it) and unmaps it on ``free``, so every step page-faults
its whole temporary buffer in again: 880,000 faults and 15% of the ~100M step's time, 40% of
the demo model's step on one device. `keep_freed_memory` serves every thread from the one main
heap and never hands its free top back to the kernel, so the next step reuses the same pages.
The price: the process keeps its peak heap, which it needs again at every step anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8


@functools.cache
def keep_freed_memory() -> bool:
    """One arena, no ``mmap``-backed chunks, no trimming: freed memory stays for reuse. Call it
    before threads first allocate (before JAX starts its CPU client). False where the C library
    is not glibc (nothing changes there)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # -1 as the trim threshold turns trimming off (mallopt(3)).
    return all(mallopt(param, value) == 1 for param, value in
               ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)))
