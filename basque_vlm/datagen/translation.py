"""A translation run: an input read twice, each distinct string translated once, the output
written whole or not at all.

1. Scan: every row's strings (`translation_formats.Layout.slots`) cut into parts
   (`translation_rules.split`: placeholders, numbers and bare yes/no never reach the model);
   each part for the model is keyed by its field group and text (`translation_journal.key`), so
   a string repeated anywhere in a field is asked for once.
2. Translate the keys the journal lacks (`translation_backends`), each journaled as it arrives;
   progress lines on stdout. A request that fails after its retries is counted by kind; its
   string keeps the source text, flagged ``failed``, and a rerun asks for it again.
3. Write: a second pass puts the translations back, flags each translated value
   (`translation_quality`), writes the flags of flagged rows to ``OUT_STEM.flags.jsonl`` and
   the validation items of a seeded sample of rows (`translation_items`); every file goes under
   a temporary name and is renamed when complete, the data file last.

A rerun of the same command after a kill finds the finished strings in the journal and writes
the same output, byte for byte, as a run that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from basque_vlm.datagen import translation_formats as formats
from basque_vlm.datagen.translation_backends import Each
from basque_vlm.datagen.translation_files import (Chunk, Commit, Input, Outputs, Writer,
                                                  find_input, outputs, read_chunks)
from basque_vlm.datagen.translation_items import Items, sample_rows
from basque_vlm.datagen.translation_journal import Journal, key
from basque_vlm.datagen.translation_prompt import YES_NO, Language, Prompt
from basque_vlm.datagen.translation_quality import FAILED, Checks
from basque_vlm.datagen.translation_rules import MODEL, RULE, has_text, split
from basque_vlm.runtime.openai_api import Failure
from basque_vlm.runtime.progress import Throttle, rate_and_eta

PROGRESS_SECONDS = 10.0
CACHED_LENGTH = 256  # values this short are cached by `_Values`: the ones that repeat


class Backend(Protocol):
    prompt: Prompt

    def about(self) -> dict[str, Any]: ...

    def translate(self, texts: Sequence[str], each: Each) -> None: ...


@dataclasses.dataclass(frozen=True)
class Job:
    """What to translate and where to: the ``source`` files with their ``names`` (columns)
    and ``layout``, the ``outputs``, the yes/no rule (source words, target words), the
    quality ``checks``, the first ``limit`` rows only, items for ``validation_rows`` rows (0:
    all). Image paths are relative to ``image_root`` (LLaVA records), else to their data
    file's folder (rebased onto the output's in JSON outputs)."""

    source: Input
    names: list[str]
    layout: formats.Layout
    outputs: Outputs
    yes_no: tuple[tuple[str, str], tuple[str, str]] | None
    checks: Checks
    limit: int | None = None
    validation_rows: int = 500
    image_root: Path | None = None


def make_job(input_path: Path, out: Path, source: Language, target: Language, *,
             kind: str = "auto", fields: Sequence[str] = (), split_name: str | None = None,
             yes_no: tuple[str, str] | None = None, checks: Checks, limit: int | None = None,
             validation_rows: int = 500, image_root: Path | None = None) -> Job:
    """The job for ``input_path`` (see `translation_files.find_input`) into ``out``;
    ``yes_no`` are the target's words for a bare yes/no (None: the model translates them)."""
    given = find_input(input_path, split_name, source.code)
    names = given.names()
    where = str(given.files[0])
    if kind == "auto":
        kind = "jsonl" if fields else formats.detect(names, where)
    layout = formats.layout(kind, names, fields, source.code, target.code, where)
    if image_root is not None and kind != "llava":
        raise ValueError("--image_root applies to --kind=llava (other inputs' image paths are "
                         "relative to their data file)")
    hub = kind in formats.BENCHMARKS or given.container == "parquet"
    outs = outputs(out, given, hub, target.code)
    if outs.data.resolve() in {f.resolve() for f in given.files}:
        raise ValueError(f"--out={out}: that is the input; write elsewhere")
    rule = None
    if yes_no is not None and source.code in YES_NO:
        rule = (YES_NO[source.code], yes_no)
    if kind == "llava" and image_root is None:
        image_root = given.files[0].parent
    return Job(given, names, layout, outs, rule, checks, limit, validation_rows, image_root)


def run(job: Job, backend: Backend, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs ``job`` with ``backend``; returns the summary (see README, "translate")."""
    settings = {"source": backend.prompt.source.code, "target": backend.prompt.target.code,
                "prompt": backend.prompt.fingerprint(), **backend.about()}
    journal = Journal(job.outputs.journal, settings)
    try:
        counts, distinct, total = _scan(job)
        todo = [k for k in distinct if k not in journal.done]
        log(f"translate: {total} rows ({job.layout.kind}), {counts['strings']} strings, "
            f"{len(distinct)} distinct: {len(distinct) - len(todo)} in the journal, "
            f"{len(todo)} to translate")
        failures = _translate(todo, distinct, backend, journal, log)
        flagged = _write(job, total, journal.done, failures)
    finally:
        journal.close()
    kinds = Counter(f.kind for f in failures.values())
    return {"rows": total, "strings": counts["strings"], "distinct": len(distinct),
            "translated": len(todo) - len(failures), "reused": counts["reused"],
            "by_rule": counts["by_rule"], "from_journal": len(distinct) - len(todo),
            "failed": len(failures), "flagged": flagged, "failed_by_kind": dict(sorted(
                kinds.items())), "language_check": job.checks.checks_language,
            "out": str(job.outputs.data)}


def _chunks(job: Job, whole: bool) -> Iterator[Chunk]:
    """The input's chunks, the first ``limit`` rows only."""
    left = job.limit
    for chunk in read_chunks(job.source, job.layout.read_columns(job.names), whole=whole):
        if left is not None and len(chunk.rows) >= left:
            yield Chunk(chunk.file, chunk.places[:left], chunk.rows[:left],
                        None if chunk.batch is None else chunk.batch.slice(0, left))
            return
        if left is not None:
            left -= len(chunk.rows)
        yield chunk


def _scan(job: Job) -> tuple[Counter[str], dict[str, str], int]:
    """The string counts, the distinct strings for the model (key → text, in first-seen
    order) and the number of rows."""
    counts: Counter[str] = Counter()
    distinct: dict[str, str] = {}
    total = 0
    for chunk in _chunks(job, whole=False):
        for place, row in zip(chunk.places, chunk.rows):
            total += 1
            for slot in job.layout.slots(row, place):
                for part in split(slot.text, job.yes_no):
                    if part.how == RULE:
                        counts["by_rule"] += 1
                    elif part.how == MODEL:
                        part_key = key(slot.group, part.text)
                        counts["reused"] += part_key in distinct
                        distinct.setdefault(part_key, part.text)
                    else:
                        continue
                    counts["strings"] += 1
    return counts, distinct, total


def _translate(todo: list[str], distinct: dict[str, str], backend: Backend, journal: Journal,
               log: Callable[[str], None]) -> dict[str, Failure]:
    """Asks ``backend`` for the ``todo`` keys, journaling each translation; the failures."""
    failures: dict[str, Failure] = {}
    throttle, done = Throttle(PROGRESS_SECONDS), 0

    def each(index: int, reply: str | Failure) -> None:
        nonlocal done
        if isinstance(reply, Failure):
            failures[todo[index]] = reply
        else:
            journal.add(todo[index], reply)
        done += 1
        if throttle.due() or done == len(todo):
            log(f"translate: {done}/{len(todo)} strings "
                f"({rate_and_eta(done, len(todo), throttle.elapsed(), 'strings')})")

    if todo:
        backend.translate([distinct[k] for k in todo], each)
    return failures


class _Values:
    """A field value's translation and flags, from the journal; computed once per distinct
    (group, value) for short values (answers, questions, choices repeat; long texts rarely
    do and would fill the memory)."""

    def __init__(self, job: Job, done: dict[str, str], failures: dict[str, Failure]):
        self.job, self.done, self.failures = job, done, failures
        self._cache: dict[tuple[str, str], tuple[str, list[str]]] = {}

    def __call__(self, slot: formats.Slot) -> tuple[str, list[str]]:
        if len(slot.text) > CACHED_LENGTH:
            return self._translate(slot)
        cache_key = (slot.group, slot.text)
        if cache_key not in self._cache:
            self._cache[cache_key] = self._translate(slot)
        return self._cache[cache_key]

    def _translate(self, slot: formats.Slot) -> tuple[str, list[str]]:
        out, asked, failed = [], False, False
        for part in split(slot.text, self.job.yes_no):
            if part.how != MODEL:
                out.append(part.text)
                continue
            asked = True
            text = self.done.get(key(slot.group, part.text))
            failed |= text is None
            out.append(part.text if text is None else text)
        target = "".join(out)
        if failed:
            return target, [FAILED]
        return target, self.job.checks(slot.text, target) if asked else []


def _write(job: Job, total: int, done: dict[str, str], failures: dict[str, Failure]) -> int:
    """Writes the output, the flags and the items; the number of rows flagged."""
    values = _Values(job, done, failures)
    chosen = sample_rows(total, job.validation_rows)
    rebase = None if job.source.container == "parquet" or job.image_root is not None \
        else job.layout.image_column
    writer = Writer(job.outputs.data, job.source, rebase)
    flags_file, items = Commit(job.outputs.flags), Items(job.outputs)
    number = flagged = 0
    try:
        for chunk in _chunks(job, whole=True):
            changed, chunk_flags = [], []
            for i, (place, row) in enumerate(zip(chunk.places, chunk.rows)):
                number += 1
                texts, names, details, pairs = {}, [], [], {}
                for slot in job.layout.slots(row, place):
                    target, flags = values(slot)
                    texts[slot.loc] = target
                    if has_text(slot.text):
                        pairs.setdefault(slot.label, []).append((slot.text, target))
                    for flag in flags:
                        if f"{flag}:{slot.label}" not in names:
                            names.append(f"{flag}:{slot.label}")
                            details.append({"flag": flag, "field": slot.label,
                                            "source": slot.text, "target": target})
                changed.append(job.layout.put(row, texts, place))
                chunk_flags.append(names)
                if details:
                    flagged += 1
                    flags_file.file.write(json.dumps(
                        {"row": number, "id": job.layout.row_id(row), "where": place,
                         "flags": details}, ensure_ascii=False) + "\n")
                if number - 1 in chosen and pairs:
                    items.add(number, job.layout.row_id(row), _image(job, chunk, i),
                              job.image_root or chunk.file.parent, pairs)
            writer.write(chunk, changed, chunk_flags)
        items.commit()
        flags_file.commit()
        writer.commit()
    except BaseException:
        for partial in (items, flags_file, writer):
            partial.abort()
        raise
    return flagged


def _image(job: Job, chunk: Chunk, i: int) -> Any:
    """Row ``i``'s image value (parquet: read from the batch, for the sampled rows only)."""
    column = job.layout.image_column
    if column is None:
        return None
    if chunk.batch is not None:
        return chunk.batch.column(column)[i].as_py()
    return chunk.rows[i].get(column)
