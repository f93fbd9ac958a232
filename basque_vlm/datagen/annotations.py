"""One annotator's package and answers.

A package is the folder ``DIR/<annotator>/``: ``items.jsonl`` (what the annotator judges, one
`PackageItem` a line, in the order shown), ``images/`` (copies of the local images) and
``answers.jsonl``, the answers as they were given: one `Answer` a line, appended and flushed to
disk (fsync) before the answer is acknowledged, so that nothing given is lost when the browser
or the server dies; the latest answer to an item supersedes the earlier ones. A package folder
is self-contained: it can be sent to an annotator, and its ``answers.jsonl`` sent back.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ITEMS, ANSWERS, IMAGES = "items.jsonl", "answers.jsonl", "images"
VERDICTS = ("accept", "reject")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_name(name: str) -> str:
    """An annotator's name, which is also a folder name: letters, digits, ``_ . -``."""
    if not NAME.fullmatch(name):
        raise ValueError(f"bad annotator name {name!r}: use letters, digits, '_', '.', '-' "
                         "(not first)")
    return name


@dataclasses.dataclass(frozen=True)
class PackageItem:
    """One item as the annotator sees it: ``text`` (a translation, or a model output with
    its ``references``) judged against ``source`` (the original text, or the prompt);
    ``image`` a path inside the package, an http(s) URL, or None."""

    key: str
    benchmark: str
    kind: str
    id: str
    field: str | None
    source: str
    text: str
    references: tuple[str, ...] = ()
    image: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "references": list(self.references)}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> PackageItem:
        try:
            return cls(**{**obj, "references": tuple(obj.get("references", ()))})
        except (TypeError, AttributeError) as e:
            raise ValueError(f"{where}: not a package item ({e})") from None


@dataclasses.dataclass(frozen=True)
class Answer:
    """An annotator's judgement of one item: ``verdict`` accept or reject, an optional
    ``correction`` (the text as it should read; empty: none) and ``comment``; ``time`` (UTC,
    ISO 8601) and ``via`` (page or csv) record where it came from."""

    key: str
    verdict: str
    correction: str = ""
    comment: str = ""
    time: str = ""
    via: str = "page"

    def same_judgement(self, other: Answer | None) -> bool:
        return other is not None and (self.verdict, self.correction, self.comment) == \
            (other.verdict, other.correction, other.comment)


def make_answer(key: Any, verdict: Any, correction: Any = "", comment: Any = "",
                via: str = "page") -> Answer:
    """A checked `Answer`, stamped with the current time; bad values raise ValueError."""
    if not isinstance(key, str):
        raise ValueError(f"key must be a string, got {key!r}")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    for name, value in (("correction", correction), ("comment", comment)):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    return Answer(key, verdict, correction.strip(), comment.strip(), now, via)


def _read_answers(path: Path, keys: set[str]) -> tuple[dict[str, Answer], int]:
    """The latest answer per item in ``path``, and the length in bytes of the file up to its
    last whole answer: a last line cut short by a crash mid-write (not JSON, no newline) is
    left out."""
    latest: dict[str, Answer] = {}
    data = path.read_bytes() if path.exists() else b""
    lines = data.split(b"\n")
    length = 0
    for number, raw in enumerate(lines, 1):
        where = f"{path} line {number}"
        if raw.strip():
            try:
                obj = json.loads(raw)
            except ValueError as e:
                if number == len(lines):
                    break
                raise ValueError(f"{where}: not valid JSON ({e})") from None
            try:
                answer = Answer(**obj)
            except TypeError as e:
                raise ValueError(f"{where}: not an answer ({e})") from None
            if answer.key not in keys:
                raise ValueError(f"{where}: item {answer.key!r} is not in the package")
            if answer.verdict not in VERDICTS:
                raise ValueError(f"{where}: verdict must be one of {', '.join(VERDICTS)}, "
                                 f"got {answer.verdict!r}")
            latest[answer.key] = answer
        length += len(raw) + (number < len(lines))
    return latest, length


@dataclasses.dataclass
class Package:
    """An annotator's package, read from ``folder`` = ``DIR/<annotator>``."""

    folder: Path
    annotator: str
    items: list[PackageItem]

    @classmethod
    def load(cls, root: Path, annotator: str) -> Package:
        folder = root / check_name(annotator)
        path = folder / ITEMS
        if not path.is_file():
            present = sorted(p.parent.name for p in root.glob(f"*/{ITEMS}"))
            raise ValueError(f"{root} holds no package for annotator {annotator!r} (no {path}; "
                             f"packages: {', '.join(present) or 'none'})")
        items = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                where = f"{path} line {number}"
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise ValueError(f"{where}: not valid JSON ({e})") from None
                items.append(PackageItem.from_json(obj, where))
        return cls(folder, annotator, items)

    @functools.cached_property
    def keys(self) -> set[str]:
        return {item.key for item in self.items}

    def answers(self) -> dict[str, Answer]:
        """The latest answer per item, as saved so far."""
        return _read_answers(self.folder / ANSWERS, self.keys)[0]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_items(folder: Path, items: Iterable[PackageItem]) -> None:
    """Writes a package's ``items.jsonl`` (the folder must exist)."""
    with open(folder / ITEMS, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")


class AnswerStore:
    """A package's answers, kept in memory and appended to its ``answers.jsonl``; safe to
    use from several threads."""

    def __init__(self, package: Package):
        self.package = package
        self.path = package.folder / ANSWERS
        self.latest, length = _read_answers(self.path, package.keys)
        if not self.path.exists():
            self.path.touch()
            _fsync(package.folder)  # the new file's entry in its folder
        with open(self.path, "r+b") as f:
            f.truncate(length)  # drops a line cut short, if any, before appending
            f.seek(max(length - 1, 0))
            if length and f.read(1) != b"\n":
                f.write(b"\n")  # a whole last answer without its newline (edited by hand)
        self._lock = threading.Lock()

    def save(self, answer: Answer) -> None:
        """Appends ``answer`` and returns once it is on disk."""
        if answer.key not in self.package.keys:
            raise ValueError(f"item {answer.key!r} is not in {self.package.annotator}'s package")
        line = json.dumps(dataclasses.asdict(answer), ensure_ascii=False) + "\n"
        with self._lock:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self.latest[answer.key] = answer

    def state(self) -> dict[str, Any]:
        """``done``, ``total``, ``next`` (the index of the first unanswered item; ``total``
        when all are answered) and the latest ``answers`` by key."""
        with self._lock:
            answers = {k: dataclasses.asdict(a) for k, a in self.latest.items()}
        items = self.package.items
        first = next((i for i, item in enumerate(items) if item.key not in answers), len(items))
        return {"annotator": self.package.annotator, "done": len(answers),
                "total": len(items), "next": first, "answers": answers}
