"""An evaluation run over several tasks: answered, gathered, scored or judged, and written."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
from absl import logging

from basque_vlm.eval import judge, report, runner
from basque_vlm.eval.protocols import DEFAULT, PROTOCOLS, Protocol
from basque_vlm.eval.taskdata import decode_image
from basque_vlm.eval.tasks import Sample, Task


def run(chosen: Sequence[Task], loaded: dict[str, tuple[list[Sample], int]],
        generator: runner.Answerer, out: Path, prompt_lang: str = "auto",
        max_new_tokens: int | None = None, judged_by: tuple[judge.Judge, str] | None = None,
        protocol: Protocol = PROTOCOLS[DEFAULT], model_info: Mapping[str, Any] | None = None
        ) -> dict[str, dict[str, Any]]:
    """The results of ``chosen`` tasks on their ``loaded`` samples (``runner.load_samples``);
    process 0 writes the results JSON ``out``, the predictions JSONL and the Markdown table
    beside it (and the annotation sheets of open-ended tasks). ``prompt_lang`` "auto" prompts
    each task in its own language; ``max_new_tokens`` overrides every task's answer length (by
    default the task's, or for open-ended tasks the judging ``protocol``'s); ``model_info``
    (what the model under test is) goes into every task's result."""
    if jax.process_index() == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
    results, everything = {}, []
    for task in chosen:
        samples, skipped = loaded[task.name]
        lang = task.lang if prompt_lang == "auto" else prompt_lang
        budget = answer_tokens(task, protocol, max_new_tokens)
        records = runner.gather(runner.answer(task, samples, generator, lang, budget),
                                generator)
        results[task.name] = {**runner.summarize(task, records, skipped, lang),
                              "max_new_tokens": budget, **(model_info or {})}
        if task.score is None:
            results[task.name].update(open_ended(task, samples, records, out, judged_by,
                                                 protocol))
        warn_failures(task.name, results[task.name])
        everything += records
    if jax.process_index() == 0:
        report.write_results(out, results)
        report.write_predictions(report.predictions_path(out), everything)
        report.table_path(out).write_text(report.markdown_table(results))
    return results


def answer_tokens(task: Task, protocol: Protocol, max_new_tokens: int | None) -> int:
    """The answer length: ``max_new_tokens`` when set, else the protocol's for an open-ended
    task, else the task's own."""
    if max_new_tokens:
        return max_new_tokens
    if task.score is None and protocol.answer_tokens:
        return protocol.answer_tokens
    return task.max_new_tokens


def open_ended(task: Task, samples: list[Sample], records: list[dict[str, Any]], out: Path,
               judged_by: tuple[judge.Judge, str] | None, protocol: Protocol) -> dict[str, Any]:
    """Pairwise judging by the ``protocol`` when a judge is set (each process judges its share
    of the samples; the verdicts go into ``records``), and the annotation sheet (process 0)."""
    images = [None if s.image is None else (lambda s=s: decode_image(s.image, s.where))
              for s in samples]
    result: dict[str, Any] = {"protocol": protocol.name, "judge": None}
    if judged_by is not None:
        judge_fn, result["judge"] = judged_by
        mine = runner.share(len(samples), judge_fn)
        verdicts = protocol.judge(judge_fn, [samples[i].question for i in mine],
                                  [images[i] for i in mine],
                                  [records[i]["prediction"] for i in mine],
                                  [samples[i].target for i in mine])
        for verdict in runner.gather([{"index": i, **v} for i, v in zip(mine, verdicts)],
                                     judge_fn):
            records[verdict.pop("index")].update(verdict)
        result.update(protocol.summarize(records))
        # An HTTP judge keeps the requests of its last call that failed after their retries.
        failed = Counter(kind for process in runner.gather(
            [{"index": jax.process_index(),
              "kinds": [f.kind for f in getattr(judge_fn, "failures", [])]}])
            for kind in process["kinds"])
        if failed:
            result.update(judge_failed=sum(failed.values()),
                          judge_failures=dict(sorted(failed.items())))
    if jax.process_index() == 0:
        judge.export_annotation(out.with_name(f"{out.stem}.{task.name}.annotation.csv"),
                                [s.id for s in samples], [s.question for s in samples], images,
                                [r["prediction"] for r in records], [s.target for s in samples])
    return result


def warn_failures(name: str, result: Mapping[str, Any]) -> None:
    """A warning (process 0) for a task's requests that failed after their retries."""
    if jax.process_index() != 0:
        return
    for prefix, who, consequence in (("", "model", "scored as wrong answers"),
                                     ("judge_", "judge", "their verdicts count as unreadable")):
        if result.get(f"{prefix}failed"):
            kinds = ", ".join(f"{k}: {n}" for k, n in result[f"{prefix}failures"].items())
            logging.warning("%s: %d of its requests to the %s failed after their retries "
                            "(%s); %s",
                            name, result[f"{prefix}failed"], who, kinds, consequence)
