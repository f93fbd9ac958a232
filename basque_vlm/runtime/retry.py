"""How long to wait before trying a failed request again."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after try ``attempt`` (from 1): ``base`` doubled after each try, capped at
    ``cap``, and between half and all of it at random, so that requests rejected together do not
    all come back together."""
    return min(cap, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
