"""An evaluation run over several tasks: answered, gathered, scored or judged, and written."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from basque_vlm.eval import judge, report, runner
from basque_vlm.eval.taskdata import decode_image
from basque_vlm.eval.tasks import Sample, Task


def run(chosen: Sequence[Task], loaded: dict[str, tuple[list[Sample], int]],
        generator: runner.Generator, out: Path, prompt_lang: str = "auto",
        max_new_tokens: int | None = None, judged_by: tuple[judge.Judge, str] | None = None
        ) -> dict[str, dict[str, Any]]:
    """The results of ``chosen`` tasks on their ``loaded`` samples (``runner.load_samples``);
    process 0 writes the results JSON ``out``, the predictions JSONL and the Markdown table
    beside it (and the annotation sheets of open-ended tasks). ``prompt_lang`` "auto" prompts
    each task in its own language."""
    if jax.process_index() == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
    results, everything = {}, []
    for task in chosen:
        samples, skipped = loaded[task.name]
        lang = task.lang if prompt_lang == "auto" else prompt_lang
        records = runner.gather(runner.answer(task, samples, generator, lang, max_new_tokens))
        results[task.name] = runner.summarize(task, records, skipped, lang)
        if task.score is None:
            results[task.name].update(open_ended(task, samples, records, out, judged_by))
        everything += records
    if jax.process_index() == 0:
        report.write_results(out, results)
        report.write_predictions(report.predictions_path(out), everything)
        report.table_path(out).write_text(report.markdown_table(results))
    return results


def open_ended(task: Task, samples: list[Sample], records: list[dict[str, Any]], out: Path,
               judged_by: tuple[judge.Judge, str] | None) -> dict[str, Any]:
    """Pairwise judging when a judge is set (each process judges its share of the samples;
    the verdicts go into ``records``), and the annotation sheet (process 0)."""
    images = [None if s.image is None else (lambda s=s: decode_image(s.image, s.where))
              for s in samples]
    result: dict[str, Any] = {"judge": None}
    if judged_by is not None:
        judge_fn, result["judge"] = judged_by
        mine = runner.share(len(samples))
        verdicts = judge.judge_pairs(judge_fn, [samples[i].question for i in mine],
                                     [images[i] for i in mine],
                                     [records[i]["prediction"] for i in mine],
                                     [samples[i].target for i in mine])
        for verdict in runner.gather([{"index": i, **v} for i, v in zip(mine, verdicts)]):
            records[verdict.pop("index")].update(verdict)
        result.update(judge.summarize(records))
        errors = sum(e["errors"] for e in runner.gather(
            [{"index": jax.process_index(), "errors": getattr(judge_fn, "errors", 0)}]))
        if errors:
            result["judge_errors"] = errors
    if jax.process_index() == 0:
        judge.export_annotation(out.with_name(f"{out.stem}.{task.name}.annotation.csv"),
                                [s.id for s in samples], [s.question for s in samples], images,
                                [r["prediction"] for r in records], [s.target for s in samples])
    return result
