"""SIGTERM (spot preemption, maintenance) as a request to save and stop, agreed by all processes."""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils


class Watch:
    """While active, SIGTERM sets ``requested`` instead of killing the process."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> Watch:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame) -> None:
        self.requested = True


def agree(flags: Sequence[bool]) -> tuple[bool, ...]:
    """Each flag true if it is true on any process, so that every process stops at the same
    step (a signal can reach hosts at different steps; one host's data can run out first)."""
    if jax.process_count() == 1:
        return tuple(flags)
    gathered = multihost_utils.process_allgather(np.asarray(flags, np.int32))
    return tuple(bool(v) for v in np.asarray(gathered).reshape(-1, len(flags)).any(axis=0))
