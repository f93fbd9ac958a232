"""lm-evaluation-harness tasks inside `evaluate`: ``--tasks=lm_eval:NAME,...`` beside the
project's own tasks, scored by lm-eval on the same loaded model (`eval.lm_eval_model`) and
written into the same results.

``NAME`` is anything lm-eval's ``--tasks`` takes: a task, a group or a tag, lm-eval's own or one
of the task YAMLs in ``include_path``. Results are ``{"lm_eval:NAME": {metric: value,
"METRIC_stderr": value, ..., "n": samples, "num_fewshot": k}}`` with lm-eval's metric names (a
filter other than ``none`` stays in the name, as ``exact_match,strict-match``; a stderr lm-eval
cannot give is null). A group that aggregates its tasks is one result, with theirs under
``subtasks``; a tag, or a group that does not aggregate, gives one result per task, as lm-eval
reports them.

lm-eval is an optional dependency (``pip install -e ".[lm_eval]"``), imported only when such a
task is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the table (`report`) reads names here without loading the model code
    from basque_vlm.eval.runner import Generator

PREFIX = "lm_eval:"
# Language codes in lm-eval's task names (Latxa's suite: Basque, English and Spanish; belebele
# adds the script): the table's column for each.
LANGUAGE_CODES = {"eu": "eu", "eus": "eu", "en": "en", "eng": "en", "es": "es", "spa": "es"}
SCRIPTS = ("Latn",)
# lm-eval's metrics that are proportions (the table shows them as percentages).
PROPORTIONS = ("acc", "acc_norm", "exact_match", "f1", "mcc")


def split(names: str) -> tuple[list[str], list[str]]:
    """``--tasks`` (comma-separated) → (the project's tasks, lm-eval's without ``lm_eval:``)."""
    ours, theirs = [], []
    for name in (n.strip() for n in names.split(",")):
        if not name.startswith(PREFIX):
            ours.append(name)
        elif name == PREFIX:
            raise ValueError(f"{PREFIX} needs an lm-eval task name, as {PREFIX}xnli_eu")
        else:
            theirs.append(name.removeprefix(PREFIX))
    return ours, theirs


def task_manager(names: Sequence[str], include_path: str | None = None,
                 include_defaults: bool = True) -> Any:
    """lm-eval's task index (its own tasks unless ``include_defaults`` is off, and the YAMLs
    under ``include_path``), checked to hold every one of ``names`` (or a glob that matches
    some). Their data is loaded once here, so that data that cannot be read, or a task asked
    for twice (alone and in a group), fails before the model loads."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ValueError(f"{PREFIX} tasks need lm-evaluation-harness: "
                         "pip install -e '.[lm_eval]'") from None
    if include_path is not None and not Path(include_path).is_dir():
        raise ValueError(f"lm-eval include path {include_path}: not a folder")
    manager = TaskManager(include_path=include_path, include_defaults=include_defaults)
    unknown = [n for n in names if not manager.match_tasks([n])]
    if unknown:
        raise ValueError(f"lm-eval has no task(s) {unknown}"
                         + ("" if include_path else " (local task YAMLs: an include path)")
                         + "; `python -m basque_vlm.lm_eval ls tasks` lists them")
    manager.load(list(names))
    return manager


def run(generator: Generator, names: Sequence[str], manager: Any, *, batch_size: int,
        model_name: str, limit: int | None = None, num_fewshot: int | None = None,
        apply_chat_template: bool = False, model_info: Mapping[str, Any] | None = None
        ) -> dict[str, dict[str, Any]]:
    """lm-eval's scores of ``generator``'s model (called ``model_name``) on ``names``
    (`task_manager`'s), as results entries (``lm_eval:NAME``) that also hold ``model_info``.
    ``limit`` takes the first samples of each task; ``num_fewshot`` (default: each task's own)
    and ``apply_chat_template`` mean what they mean to lm-eval."""
    from lm_eval import simple_evaluate

    from basque_vlm.eval.lm_eval_model import BasqueVLM

    model = BasqueVLM.from_generator(generator, batch_size, model_name)
    out = simple_evaluate(model=model, tasks=list(names), task_manager=manager, limit=limit,
                          num_fewshot=num_fewshot, apply_chat_template=apply_chat_template,
                          log_samples=False)
    return {PREFIX + name: {**result, **(model_info or {})}
            for name, result in summarize(out, names).items()}


def summarize(out: Mapping[str, Any], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """lm-eval's results (``simple_evaluate``'s) for the asked ``names``, one entry per
    requested task or aggregating group, then per task lm-eval reported outside those."""
    results, children = out["results"], out.get("group_subtasks", {})
    aggregating = out.get("groups", {})

    def leaves(name: str) -> list[str]:
        return [leaf for child in children.get(name, []) for leaf in leaves(child)] or [name]

    def entry(name: str) -> dict[str, Any]:
        result: dict[str, Any] = {_metric(key): _number(value)
                                  for key, value in results[name].items() if "," in key}
        result.update(n=sum(out["n-samples"][leaf]["effective"] for leaf in leaves(name)),
                      num_fewshot=out["n-shot"].get(name))
        if name in children:
            result["subtasks"] = {child: entry(child) for child in children[name]}
        return result

    def covered(name: str) -> set[str]:
        return {name}.union(*(covered(child) for child in children.get(name, [])))

    entries: dict[str, dict[str, Any]] = {}
    done: set[str] = set()
    for name in [*names, *aggregating, *results]:
        scored = name in results and (name not in children or name in aggregating)
        if scored and name not in done:
            entries[name] = entry(name)
            done |= covered(name)
    return entries


def _metric(key: str) -> str:
    """``acc,none`` → ``acc``; another filter stays: ``exact_match,strict-match``."""
    return key.removesuffix(",none")


def _number(value: Any) -> float | None:
    """A metric's value as a float; None where lm-eval has none (its ``N/A``)."""
    return None if isinstance(value, str) else float(value)


def metrics(result: Mapping[str, Any]) -> list[str]:
    """The metric names of a result (not their stderrs, not the counts)."""
    return [k for k, v in result.items() if isinstance(v, float) and "_stderr" not in k]


def is_proportion(metric: str) -> bool:
    """Whether an lm-eval metric (``acc``, ``exact_match,strict-match``) is a proportion."""
    return metric.split(",")[0] in PROPORTIONS


def place(name: str) -> tuple[str, str | None]:
    """Where a result ``lm_eval:NAME`` goes in the table: its row (``lm_eval:`` and the name
    without its language code, so that ``xnli_eu`` and ``xnli_en`` share one) and its language
    column (None where the name has no code). The last code in the name counts
    (``belebele_eus_Latn``, ``eus_exams_es_...``); a leading one stays in the row's name
    (``eus_trivia``)."""
    name = name.removeprefix(PREFIX)
    parts = name.split("_")
    if len(parts) > 1 and parts[-1] in SCRIPTS:
        parts = parts[:-1]
    codes = [i for i, part in enumerate(parts) if part in LANGUAGE_CODES]
    if not codes:
        return PREFIX + name, None
    i = codes[-1]
    row = parts if i == 0 else parts[:i] + parts[i + 1:]
    return PREFIX + "_".join(row), LANGUAGE_CODES[parts[i]]
