"""What an evaluation writes: the results JSON, the per-sample predictions JSONL, and a Markdown
table with Basque and English side by side (``pathlib`` or ``etils.epath`` paths: local or
``gs://``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from basque_vlm.eval.tasks import LANGS, TASKS

# Beside an open-ended task's win_rate, the table shows those of these its judging protocol
# reports; the scores (−2…+2) are signed, every other metric a percentage.
OPEN_ENDED_EXTRAS = ("win_rate_tie_adjusted", "mean_score", "raw_scores")
SCORES = ("mean_score", "raw_scores")


def predictions_path(out: Path) -> Path:
    """``results.json`` → ``results.predictions.jsonl`` (beside it)."""
    return out.with_name(out.stem + ".predictions.jsonl")


def table_path(out: Path) -> Path:
    return out.with_name(out.stem + ".md")


def write_results(out: Path, results: Mapping[str, Mapping[str, Any]]) -> None:
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def write_predictions(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps({k: v for k, v in record.items() if k != "index"},
                               ensure_ascii=False) + "\n")


def _cell(result: Mapping[str, Any] | None, metric: str) -> str:
    if result is None:
        return ""
    value = result.get(metric)
    text = "n/a" if value is None else (f"{100 * value:.1f}" if metric not in SCORES
                                        else f"{value:+.2f}")
    return f"{text} (n={result['n']}, {result['prompt']} prompt)"


def markdown_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per task family and metric, a column per language (percentages)."""
    lines = ["| task | metric | " + " | ".join(LANGS) + " |",
             "|---|---|" + "---|" * len(LANGS)]
    families: dict[str, dict[str, str]] = {}
    for name in results:
        task = TASKS[name]
        families.setdefault(task.family, {})[task.lang] = name
    for family, by_lang in families.items():
        metrics = [TASKS[next(iter(by_lang.values()))].metric]
        if metrics == ["win_rate"]:
            metrics += [m for m in OPEN_ENDED_EXTRAS
                        if any(m in results[name] for name in by_lang.values())]
        for metric in metrics:
            cells = [_cell(results.get(by_lang.get(lang, "")), metric) for lang in LANGS]
            lines.append(f"| {family} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
