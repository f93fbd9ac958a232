"""Statistics of human judgements: Wilson score intervals for an acceptance rate, and the
agreement between annotators who judged the same items (Fleiss' kappa, Krippendorff's alpha)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Sequence

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion, ``successes`` of ``n`` (95% by default);
    None when ``n`` is 0. Unlike the normal approximation it stays inside [0, 1] and is
    usable at rates of 0 or 1 and at small ``n``."""
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    if n == 0:
        return None
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def fleiss_kappa(ratings: Sequence[Sequence[Hashable]]) -> float | None:
    """Fleiss' kappa of ``ratings``, one row per item holding every rater's category; every
    row must have the same number (at least 2) of ratings. None where it is undefined: no
    items, or one category throughout (chance agreement is then 1)."""
    if not ratings:
        return None
    raters = len(ratings[0])
    if raters < 2 or any(len(row) != raters for row in ratings):
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings for every item")
    categories = sorted({c for row in ratings for c in row}, key=str)
    counts = [[row.count(c) for c in categories] for row in ratings]
    items = len(ratings)
    # P_i: the share of agreeing rater pairs on item i; P_e: agreement expected by chance from
    # the overall category shares p_j.
    p_items = [(sum(n * n for n in row) - raters) / (raters * (raters - 1)) for row in counts]
    p_bar = math.fsum(p_items) / items
    shares = [sum(row[j] for row in counts) / (items * raters) for j in range(len(categories))]
    p_e = math.fsum(p * p for p in shares)
    if math.isclose(p_e, 1.0):
        return None
    return (p_bar - p_e) / (1 - p_e)


def krippendorff_alpha(ratings: Sequence[Sequence[Hashable | None]]) -> float | None:
    """Krippendorff's alpha (nominal) of ``ratings``, one row per item and one column per
    rater, None where a rater did not judge the item; computed by the ``krippendorff``
    package. None where it is undefined: fewer than two pairable ratings, or one category
    throughout."""
    import numpy as np
    try:
        import krippendorff
    except ImportError:
        raise ValueError("Krippendorff's alpha needs the krippendorff package (pip install "
                         "krippendorff==0.9.0)") from None

    categories = sorted({c for row in ratings for c in row if c is not None}, key=str)
    if len(categories) < 2:
        return None
    code = {c: i for i, c in enumerate(categories)}
    # The package takes raters × items, with NaN for a missing rating.
    data = np.array([[np.nan if c is None else code[c] for c in row] for row in ratings],
                    dtype=np.float64).T
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # 0/0: the NaN checked below
            alpha = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal",
                                       value_domain=list(range(len(categories))))
    except ValueError:  # no item judged by two raters
        return None
    return None if math.isnan(alpha) else float(alpha)


def observed_agreement(ratings: Sequence[Sequence[Hashable | None]]) -> float | None:
    """The share of agreeing pairs among all pairs of ratings of the same item (missing
    ratings left out); None where no item has two ratings."""
    agree = pairs = 0
    for row in ratings:
        given = [c for c in row if c is not None]
        for i, a in enumerate(given):
            for b in given[i + 1:]:
                pairs += 1
                agree += a == b
    return agree / pairs if pairs else None
