"""Progress lines of long-running tools: when the next one is due, and the rate and time left."""

from __future__ import annotations

import time


class Throttle:
    """Says a progress line is due at most once every ``seconds`` (counted from creation)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = self.last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def rate_and_eta(done: int, total: int | None, seconds: float, unit: str) -> str:
    """``"120 rows/s, ETA 1h02m"``: the mean rate so far and, with a ``total``, the time left at
    that rate."""
    rate = done / max(seconds, 1e-9)
    text = f"{rate:.1f} {unit}/s"
    if total is None or rate == 0:
        return text
    left = max(total - done, 0) / rate
    hours, rest = divmod(int(left), 3600)
    return f"{text}, ETA {hours}h{rest // 60:02d}m" if hours else \
        f"{text}, ETA {rest // 60}m{rest % 60:02d}s"
