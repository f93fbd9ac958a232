"""What an evaluation writes: the results JSON, the per-sample predictions JSONL, and a Markdown
table with Basque and English side by side (``pathlib`` or ``etils.epath`` paths: local or
``gs://``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from basque_vlm.eval import lm_eval_tasks
from basque_vlm.eval.tasks import LANGS, TASKS, Task

# Beside an open-ended task's win_rate, the table shows those of these its judging protocol
# reports; the scores (−2…+2) are signed, every other metric of ours a percentage (lm-eval's:
# its proportions, the rest as they are).
OPEN_ENDED_EXTRAS = ("win_rate_tie_adjusted", "mean_score", "raw_scores")
SCORES = ("mean_score", "raw_scores")
OTHER = "other"  # the column of lm-eval tasks whose names have no language code


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
    if "prompt" in result:
        about = f"n={result['n']}, {result['prompt']} prompt"
        percent = metric not in SCORES
    else:  # an lm-eval task
        shots = result.get("num_fewshot")
        about = f"n={result['n']}" + ("" if shots is None else f", {shots}-shot")
        percent = lm_eval_tasks.is_proportion(metric)
    text = ("n/a" if value is None else f"{100 * value:.1f}" if percent
            else f"{value:+.2f}" if metric in SCORES else f"{value:.4g}")
    return f"{text} ({about})"


def markdown_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per task family and metric, a column per language (percentages); lm-eval tasks
    (``lm_eval:NAME``) add columns for other languages, and ``other`` where the name has no
    language code (`lm_eval_tasks.place`)."""
    families: dict[str, dict[str, str]] = {}
    for name in results:
        task = TASKS.get(name)
        family, lang = (task.family, task.lang) if task else lm_eval_tasks.place(name)
        families.setdefault(family, {})[lang or OTHER] = name
    found = {lang for by_lang in families.values() for lang in by_lang}
    langs = [*LANGS, *sorted(found - {*LANGS, OTHER})] + ([OTHER] if OTHER in found else [])
    lines = ["| task | metric | " + " | ".join(langs) + " |",
             "|---|---|" + "---|" * len(langs)]
    for family, by_lang in families.items():
        for metric in _metrics([results[name] for name in by_lang.values()],
                               TASKS.get(next(iter(by_lang.values())))):
            cells = [_cell(results.get(by_lang.get(lang, "")), metric) for lang in langs]
            lines.append(f"| {family} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _metrics(family: list[Mapping[str, Any]], task: Task | None) -> list[str]:
    """A family's rows: its task's metric (and an open-ended task's extras), or every metric
    of its lm-eval results."""
    if task is None:
        return list(dict.fromkeys(m for result in family for m in lm_eval_tasks.metrics(result)))
    if task.metric != "win_rate":
        return [task.metric]
    return [task.metric, *(m for m in OPEN_ENDED_EXTRAS if any(m in r for r in family))]
