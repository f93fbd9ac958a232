"""Timing that the benchmarks share: wait for a quiet machine, time a call and how busy the
machine was meanwhile, and this machine's own limits (matmul peak, memory read bandwidth)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil

BUSY_WARN = 0.10      # other processes' CPU share above which a timing is flagged
# Before each timed call, wait up to this long for the machine to be quiet (run.py --quick: 0).
QUIET_WAIT_S = float(os.environ.get("BENCHMARK_QUIET_WAIT_S", 30))


def wait_quiet(busy_warn: float = BUSY_WARN, wait_s: float = QUIET_WAIT_S) -> None:
    """Waits (idle meanwhile) until the machine is less busy than ``busy_warn``, or ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while psutil.cpu_percent(interval=0.5) / 100 > busy_warn and time.monotonic() < deadline:
        pass


def timed_call(fn: Callable[[], Any], quiet: bool = True) -> tuple[Any, float, float]:
    """``fn()``, the seconds it took, and the CPU share other processes used meanwhile. ``fn``
    must return only when its work is done (block on device results)."""
    if quiet:
        wait_quiet()
    own, machine = psutil.Process().cpu_times(), psutil.cpu_times()
    start = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - start
    own_after, machine_after = psutil.Process().cpu_times(), psutil.cpu_times()
    busy = sum(machine_after[:3]) - sum(machine[:3])  # user + nice + system
    mine = own_after.user + own_after.system - own.user - own.system
    return result, wall, max(0.0, (busy - mine) / (wall * psutil.cpu_count()))


def read_bandwidth(gigabytes: float = 1.0, reps: int = 3, on_device: bool = False) -> float:
    """Bytes per second of a sum over a ``gigabytes`` float32 array (best of ``reps``): numpy's in
    host memory, or a jitted one on JAX's default device (an accelerator's memory)."""
    n = int(gigabytes * 2**30) // 4
    if on_device:
        import jax
        import jax.numpy as jnp

        a = jnp.ones(n, jnp.float32)
        total = jax.jit(jnp.sum)
        total(a).block_until_ready()
        return a.nbytes / min(timed_call(lambda: total(a).block_until_ready(), quiet=False)[1]
                              for _ in range(reps))
    a = np.ones(n, np.float32)
    return a.nbytes / min(timed_call(a.sum)[1] for _ in range(reps))


def matmul_peak(dtype: str = "float32", n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of the fastest of ``reps`` ``n³`` matmuls on JAX's default device (after warm-up):
    what this machine's matrix units reach on a large, well-shaped product."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    mm = jax.jit(jnp.matmul)
    mm(a, b).block_until_ready()
    best = min(timed_call(lambda: mm(a, b).block_until_ready(), quiet=False)[1]
               for _ in range(reps))
    return 2 * n**3 / best


def interleaved(sides: dict[str, Callable[[], Any]], reps: int
                ) -> tuple[dict[str, Any], dict[str, float], dict[str, float], float]:
    """Each side run once untimed (it compiles, warms up; its result is kept), then ``reps``
    timed runs, interleaved so that the machine's drift hits every side alike: the results, the
    first runs' seconds, the median seconds, and the most other processes used meanwhile."""
    results, first = {}, {}
    for name, run in sides.items():
        results[name], first[name], _ = timed_call(run, quiet=False)
    times: dict[str, list[float]] = {name: [] for name in sides}
    busy = 0.0
    for _ in range(reps):
        for name, run in sides.items():
            _, seconds, other = timed_call(run)
            times[name].append(seconds)
            busy = max(busy, other)
    return results, first, {name: float(np.median(t)) for name, t in times.items()}, busy


def busy_note(busy: float) -> str:
    """``other processes' CPU share up to N%`` and, above `BUSY_WARN`, a warning."""
    return (f"other processes' CPU share up to {busy:.0%}"
            + (" (busy machine: rerun when quiet)" if busy > BUSY_WARN else ""))
