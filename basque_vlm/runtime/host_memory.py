"""The C heap of a process that runs XLA on the CPU.

XLA's CPU runtime gives every execution one temporary buffer, allocated with ``posix_memalign``
from a worker thread and freed when the execution ends: 3.5 GB for a training step of the ~100M
benchmark model, 100 MB for the demo's. glibc serves a request that large from a fresh ``mmap``
(a worker thread's arena cannot hold it) and unmaps it on ``free``, so every step page-faults
its whole temporary buffer in again: 880,000 faults and 15% of the ~100M step's time, 40% of
the demo model's step on one device. `keep_freed_memory` serves every thread from the one main
heap and never hands its free top back to the kernel, so the next step reuses the same pages.
The price: the process keeps its peak heap, which it needs again at every step anyway.

Reading a checkpoint is the opposite case: TensorStore's reader threads allocate and free
buffers of a chunk's size, and glibc, having raised its ``mmap`` threshold past their size,
serves them from arenas whose freed pages it keeps (with Orbax's own restore, loading a 2 GB
checkpoint onto 8 devices kept 1.2 GB beyond the weights, 2.9 times its largest tensor).
`returned_on_free` maps such buffers on their own while it lasts, so that each goes back to the
kernel when freed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Iterator

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
M_ARENA_MAX = -8
MMAP_THRESHOLD_MAX = 32 * 2 ** 20  # the highest glibc's own adjustment takes it (64-bit)


@functools.cache
def _mallopt():
    """glibc's ``mallopt``, or None where the C library is another."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


@functools.cache
def keep_freed_memory() -> bool:
    """One arena, no ``mmap``-backed chunks, no trimming: freed memory stays for reuse. Call it
    before threads first allocate (before JAX starts its CPU client). False where the C library
    is not glibc (nothing changes there)."""
    mallopt = _mallopt()
    # -1 as the trim threshold turns trimming off (mallopt(3)).
    return mallopt is not None and all(mallopt(param, value) == 1 for param, value in (
        (M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)))


@contextlib.contextmanager
def returned_on_free(threshold: int = 64 * 2 ** 10) -> Iterator[None]:
    """While it lasts, blocks of ``threshold`` bytes or more get their own ``mmap`` and go back
    to the kernel when freed; afterwards the threshold is glibc's ceiling (its own adjustment,
    which this turns off, would have raised it there)."""
    mallopt = _mallopt()
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, threshold)
    try:
        yield
    finally:
        if mallopt is not None:
            mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
