"""The evaluation tasks: where each reads its data, how it prompts, how long it answers, how it
scores.

Prompts follow lmms-eval (the question, then for multiple choice one ``A. option`` line each, then
an instruction line), and each has a Basque variant stored beside the English one. By default a
task prompts in its data's language; ``prompt_lang`` overrides it (e.g. Basque questions with the
English instruction, as lmms-eval would run a translated set), and the results record which was
used. Each task reads ``DATA_DIR/<task name>/`` (see README, "Evaluation data") unless it brings
its own data (``Task.data``); where that folder is a hub snapshot of several splits, only its own
split (``Task.hub_splits``).

The registry (``TASKS``) holds the benchmarks below and the tasks of every module named in the
``basque_vlm.tasks`` entry-point group of an installed package, imported on first use: such a
module calls ``register`` (the embedded demo's tasks, `basque_vlm.demo.tasks`, come this way; a
package of your own adds your language's tasks the same way).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from basque_vlm.eval import id_list, metrics
from basque_vlm.eval.taskdata import Row, read_rows

LANGS = ("eu", "en")
SHORT_ANSWER = {"en": "\nAnswer the question using a single word or phrase.",
                "eu": "\nErantzun galderari hitz bakar batez edo esaldi labur batez."}
OPTION_LETTER = {"en": "\nAnswer with the option's letter from the given choices directly.",
                 "eu": "\nErantzun zuzenean emandako aukeretako letrarekin."}
NO_INSTRUCTION = {"en": "", "eu": ""}


@dataclasses.dataclass(frozen=True)
class Sample:
    id: str
    question: str
    image: bytes | Path | None
    target: Any                      # what the scorer compares with (task-specific)
    where: str                       # "FILE row N": for error messages
    choices: tuple[str, ...] = ()    # multiple choice options


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    lang: str
    metric: str
    max_new_tokens: int
    # (task, its data folder) → samples; None: a row the task skips
    load: Callable[[Task, Path], Iterator[Sample | None]]
    instruction: Mapping[str, str]
    # (prediction, sample) → (score, extra per-sample fields); None: judged pairwise instead
    score: Callable[[str, Sample], tuple[float, dict[str, Any]]] | None
    # The task's own data folder (made on first use if need be); None: DATA_DIR/<name>
    data: Callable[[], Path] | None = None
    # The hub splits the task reads from a folder holding several; (): its language's
    splits: tuple[str, ...] = ()

    def folder(self, data_dir: Path) -> Path:
        """Where the task's data is: its own folder, or ``data_dir/<name>``."""
        return self.data() if self.data is not None else data_dir / self.name

    def hub_splits(self) -> tuple[str, ...]:
        """The splits the task reads from a hub snapshot, the first one found: ``splits``, or
        its language code (the releases' ``en``/``eu``)."""
        return self.splits or (self.lang,)

    @property
    def family(self) -> str:
        return self.name.rsplit("_", 1)[0]

    def prompt(self, sample: Sample, lang: str) -> str:
        body = sample.question
        if sample.choices:
            body += "\n" + metrics.format_choices(sample.choices)
        return body + self.instruction[lang]

    def references(self, sample: Sample) -> list[str]:
        """The reference answers, as the predictions file shows them."""
        if sample.choices:
            return [metrics.LETTERS[sample.target] + ". " + sample.choices[sample.target]]
        return list(sample.target) if isinstance(sample.target, list) else [sample.target]


# -- loaders: Hugging Face schemas ----------------------------------------------------------


def fields(*names: str, **columns: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """A loader's fields (field → the columns that may hold it, the first present is read):
    ``image`` and ``id`` as the released sets name them, each of ``names`` in the column of its
    own name, and ``columns``. ``columns.json`` in a task folder overrides them (`taskdata`)."""
    return {"image": ("image",), "id": ("question_id", "id"), **{n: (n,) for n in names},
            **columns}


# WildVision-Bench (lmms-eval's release) keeps the reference model's answer in a column named after
# the model; a plain ``reference`` column works too.
REFERENCE_COLUMNS = ("reference", "claude-3-sonnet-20240229")
VQAV2_FIELDS = fields("question", "answers")
AOKVQA_MC_FIELDS = fields("question", "choices", "correct_choice_idx")
AOKVQA_DA_FIELDS = fields("question", "direct_answers", "difficult_direct_answer")
YES_NO_FIELDS = fields("question", "answer")
OPEN_ENDED_FIELDS = fields(instruction=("instruction", "question"), reference=REFERENCE_COLUMNS)


def rows(task: Task, folder: Path, task_fields: dict[str, tuple[str, ...]]) -> Iterator[Row]:
    """The rows of the task's split in ``folder`` (`taskdata.read_rows`)."""
    return read_rows(folder, task.hub_splits(), task_fields)


def _sample(row: Row, question: str, target: Any, **kw: Any) -> Sample:
    sample_id = row.get("id", kind=(str, int), optional=True)
    return Sample(id=str(sample_id if sample_id is not None else f"{row.path.name}:{row.where}"),
                  question=question.strip(), image=row.image(), target=target,
                  where=f"{row.path} {row.where}", **kw)


def load_vqav2(task: Task, folder: Path) -> Iterator[Sample]:
    """``question``, ``answers`` (strings, or VQAv2's ``{"answer": ...}`` dicts), ``image``."""
    for row in rows(task, folder, VQAV2_FIELDS):
        yield _sample(row, row.get("question"), row.strings("answers", key="answer"))


def load_aokvqa_mc(task: Task, folder: Path) -> Iterator[Sample]:
    """``question``, ``choices`` (strings), ``correct_choice_idx``, ``image``; the released
    A-OK-VQA-eu stores the list and the index as strings."""
    for row in rows(task, folder, AOKVQA_MC_FIELDS):
        choices = row.strings("choices")
        correct = row.index("correct_choice_idx")
        if correct >= len(choices):
            raise row.fail(f"correct_choice_idx {correct} is not an index of the "
                           f"{len(choices)} choices")
        yield _sample(row, row.get("question"), correct, choices=tuple(choices))


def load_aokvqa_da(task: Task, folder: Path) -> Iterator[Sample | None]:
    """``question``, ``direct_answers`` (strings), ``difficult_direct_answer`` (the official
    evaluation skips those), ``image``."""
    for row in rows(task, folder, AOKVQA_DA_FIELDS):
        if row.get("difficult_direct_answer", kind=bool, optional=True):
            yield None
        else:
            yield _sample(row, row.get("question"), row.strings("direct_answers"))


def load_yes_no(task: Task, folder: Path) -> Iterator[Sample | None]:
    """``question``, ``answer``, ``image``; rows whose answer is not yes/no (bai/ez) are
    skipped (and counted)."""
    for row in rows(task, folder, YES_NO_FIELDS):
        answer = row.get("answer")
        yield (None if metrics.parse_yes_no(answer) is None
               else _sample(row, row.get("question"), answer))


def load_open_ended(task: Task, folder: Path) -> Iterator[Sample]:
    """``instruction`` (or ``question``), ``image``, and the reference model's answer
    (``reference`` or ``claude-3-sonnet-20240229``)."""
    for row in rows(task, folder, OPEN_ENDED_FIELDS):
        yield _sample(row, row.get("instruction"), row.get("reference"))


# -- scorers --------------------------------------------------------------------------------


def score_vqa(prediction: str, sample: Sample) -> tuple[float, dict[str, Any]]:
    return metrics.vqa_accuracy(prediction, sample.target), {}


def score_choice(prediction: str, sample: Sample) -> tuple[float, dict[str, Any]]:
    choice = metrics.parse_choice(prediction, sample.choices)
    return float(choice == sample.target), {
        "choice": None if choice is None else metrics.LETTERS[choice]}


def score_direct(prediction: str, sample: Sample) -> tuple[float, dict[str, Any]]:
    return metrics.direct_answer_accuracy(prediction, sample.target), {}


def score_yes_no(prediction: str, sample: Sample) -> tuple[float, dict[str, Any]]:
    said = metrics.parse_yes_no(prediction)
    return metrics.yes_no_accuracy(prediction, sample.target), {
        "parsed": None if said is None else ("yes" if said else "no")}


def score_exact(prediction: str, sample: Sample) -> tuple[float, dict[str, Any]]:
    return metrics.exact_match(prediction, sample.target), {}


def in_both_languages(family: str, english_split: str | None = None, **kw: Any
                      ) -> dict[str, Task]:
    """``FAMILY_eu`` and ``FAMILY_en``: one task per language, alike but for ``lang``. The
    English task also reads ``english_split`` of a snapshot of the English original."""
    return {f"{family}_{lang}": Task(name=f"{family}_{lang}", lang=lang, **kw,
                                     splits=((lang, english_split)
                                             if lang == "en" and english_split else ()))
            for lang in LANGS}


# WildVision answers are long: 1024 new tokens keep CPU/TPU runs bounded; the `lmms` judging
# protocol (eval/protocols.py) uses lmms-eval's 4096 instead.
OPEN_ENDED_TOKENS = 1024
ENTRY_POINTS = "basque_vlm.tasks"  # the entry-point group of modules that register tasks


class _Registry(Mapping[str, Task]):
    """Tasks by name; the entry-point modules are imported on first use."""

    def __init__(self, tasks: Mapping[str, Task]):
        self._tasks = dict(tasks)
        self._plugins_loaded = False

    def add(self, task: Task) -> None:
        if self._tasks.get(task.name, task) is not task:
            raise ValueError(f"a task named {task.name} is already registered")
        self._tasks[task.name] = task

    def _all(self) -> dict[str, Task]:
        if not self._plugins_loaded:
            self._plugins_loaded = True  # first: a plugin module registers through `add`
            for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
                entry.load()
        return self._tasks

    def __getitem__(self, name: str) -> Task:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


# The English originals' evaluation splits, read where a folder is a snapshot of one:
# lmms-lab/VQAv2 and HuggingFaceM4/A-OKVQA `validation`, WildVision-Bench `test500`.
TASKS = _Registry({
    **in_both_languages("vqav2", "validation", metric="accuracy", max_new_tokens=16,
            load=load_vqav2, instruction=SHORT_ANSWER, score=score_vqa),
    **in_both_languages("aokvqa_mc", "validation", metric="accuracy", max_new_tokens=16,
            load=load_aokvqa_mc, instruction=OPTION_LETTER, score=score_choice),
    "aokvqa_da_en": Task(name="aokvqa_da_en", lang="en", metric="accuracy", max_new_tokens=16,
                         load=load_aokvqa_da, instruction=SHORT_ANSWER, score=score_direct,
                         splits=("en", "validation")),
    **in_both_languages("pixmo_capqa", metric="accuracy", max_new_tokens=16, load=load_yes_no,
            instruction=SHORT_ANSWER, score=score_yes_no),
    # Both languages keep the same fixed pairs (id_list.WILDVISION_IDS; empty: all rows).
    **in_both_languages("wildvision", "test500", metric="win_rate",
            max_new_tokens=OPEN_ENDED_TOKENS,
            load=id_list.only_listed(load_open_ended, id_list.WILDVISION_IDS),
            instruction=NO_INSTRUCTION, score=None),
})


def register(*tasks: Task) -> None:
    """Adds tasks to ``TASKS`` (each name once)."""
    for task in tasks:
        TASKS.add(task)


def get(names: str | list[str]) -> list[Task]:
    """Tasks by name (a comma-separated string or a list); unknown names raise ValueError."""
    names = [n.strip() for n in names.split(",")] if isinstance(names, str) else names
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown task(s) {unknown or names}; known: {', '.join(TASKS)}")
    return [TASKS[n] for n in names]
