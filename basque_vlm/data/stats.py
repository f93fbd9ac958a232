"""What a training stream holds: counts by language, source and kind; lengths; label/pad shares."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 99)


def collect(batches: Iterator[Mapping[str, np.ndarray]], num_examples: int,
            source_kinds: Mapping[str, str]) -> dict[str, Any]:
    """Statistics of the first ``num_examples`` rows of ``batches`` (rows past it are ignored).

    Counts are over all rows drawn (the mixture's choices); lengths and shares over the rows that
    were kept (``dropped == ''``). ``padding_share`` is the share of pad slots in the batches.
    """
    if num_examples < 1:
        raise ValueError(f"--num_examples must be positive, got {num_examples}")
    languages, sources, kinds, dropped = Counter(), Counter(), Counter(), Counter()
    lengths, supervised, slots, real = [], 0, 0, 0
    drawn = 0
    while drawn < num_examples:
        batch = next(batches)
        take = min(len(batch["language"]), num_examples - drawn)
        drawn += take
        languages.update(batch["language"][:take].tolist())
        sources.update(batch["source"][:take].tolist())
        kinds.update(source_kinds[s] for s in batch["source"][:take].tolist())
        dropped.update(d for d in batch["dropped"][:take].tolist() if d)
        mask = batch["attention_mask"][:take]
        kept = batch["dropped"][:take] == ""
        lengths += mask.sum(axis=1)[kept].tolist()
        supervised += int(batch["loss_mask"][:take].sum())
        slots += mask.size
        real += int(mask.sum())
    return {
        "num_examples": drawn,
        "language_counts": dict(sorted(languages.items())),
        "basque_share": languages.get("eu", 0) / drawn,
        "source_counts": dict(sorted(sources.items())),
        "kind_counts": dict(sorted(kinds.items())),
        "dropped": dict(sorted(dropped.items())),
        "length_percentiles": {f"p{p}": float(np.percentile(lengths, p)) if lengths else 0.0
                               for p in PERCENTILES} | {"max": max(lengths, default=0)},
        "mean_length": float(np.mean(lengths)) if lengths else 0.0,
        "supervised_share": supervised / max(real, 1),
        "padding_share": 1 - real / max(slots, 1),
    }


def report(stats: Mapping[str, Any]) -> list[str]:
    """Human-readable lines (the JSON of ``stats`` is for machines)."""
    n = stats["num_examples"]

    def counts(title: str, counter: Mapping[str, int]) -> str:
        return f"{title:<10}" + ", ".join(f"{k or '?'} {v} ({v / n:.1%})"
                                          for k, v in counter.items())

    p = stats["length_percentiles"]
    return [
        f"examples  {n}",
        counts("language", stats["language_counts"]),
        counts("source", stats["source_counts"]),
        counts("kind", stats["kind_counts"]),
        counts("dropped", stats["dropped"]) if stats["dropped"] else "dropped   none",
        f"tokens    mean {stats['mean_length']:.1f}, "
        + ", ".join(f"{k} {v:g}" for k, v in p.items()),
        f"shares    supervised {stats['supervised_share']:.1%} of real tokens, "
        f"padding {stats['padding_share']:.1%} of batch slots",
    ]
