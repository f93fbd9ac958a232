"""What to translate in a row of each kind of input, and how to put the translations back.

Kinds (``--kind``; by default told from the columns, `detect`):

- ``llava``: LLaVA conversations (``conversations``: every ``human`` and ``gpt`` turn's
  ``value``) or OpenAI-style ``messages`` (every ``user`` and ``assistant`` content, or the
  text items of a list content); ``system`` turns are kept. Records are checked as
  ``prepare_data`` checks them (`data.conversation.from_record`).
- ``vqav2``: ``question``; ``answers`` (strings, or ``{"answer": ...}`` dicts) and, where
  present, ``multiple_choice_answer``, translated together.
- ``aokvqa``: ``question``; ``choices`` in order (a list, or a string holding its JSON or
  Python literal, written back the same way); ``rationales`` where present.
- ``yes_no`` (PixMo-CapQA): ``question``, ``answer``.
- ``wildvision``: ``instruction`` (or ``question``) and the reference answer (``reference``,
  ``claude-3-sonnet-20240229``: each one present).
- ``jsonl``: the fields ``--fields`` names.

``--fields=a,b.c`` names the fields of any kind but ``llava`` instead of its own: a dotted path
goes into nested objects, and through a list to each of its items. A field's strings are
translated once per distinct string within its group (a VQAv2 row's ten answers and its
``multiple_choice_answer`` form one group), and every other column is kept as it was, but for a
``lang`` column holding the source language's code, which becomes the target's.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from basque_vlm.data.conversation import from_record
from basque_vlm.data.errors import DataError

KINDS = ("llava", "vqav2", "aokvqa", "yes_no", "wildvision", "jsonl")
BENCHMARKS = ("vqav2", "aokvqa", "yes_no", "wildvision")
REFERENCE_COLUMNS = ("reference", "claude-3-sonnet-20240229")
ID_COLUMNS = ("question_id", "id")
LANG = "lang"
Loc = tuple[str | int, ...]  # keys and list indices from the row down to a string


@dataclasses.dataclass(frozen=True)
class Field:
    """A field to translate: ``path`` from the row down to its strings, in the dedupe
    ``group``. ``item_key``: list items may be objects holding the string under this key;
    ``encoded``: the value may be a list stored as a string literal; ``optional``: a column the
    input may lack."""

    path: tuple[str, ...]
    group: str
    item_key: str | None = None
    encoded: bool = False
    optional: bool = False

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclasses.dataclass(frozen=True)
class Slot:
    """One string of a row: its field ``label`` (flags, validation items), its dedupe ``group``,
    ``loc`` where it is in the row, and ``text``."""

    label: str
    group: str
    loc: Loc
    text: str


class Layout:
    """A kind bound to an input's columns: its fields, and how a row's strings are found and put
    back. Rows are dicts of column → Python value."""

    def __init__(self, kind: str, fields: Sequence[Field], names: Collection[str],
                 source: str, target: str):
        self.kind, self.fields = kind, tuple(fields)
        self.source, self.target = source, target
        self.id_column = next((c for c in ID_COLUMNS if c in names), None)
        self.image_column = "image" if "image" in names else None

    @property
    def written(self) -> list[str]:
        """The top-level columns a translation changes."""
        return list(dict.fromkeys([f.path[0] for f in self.fields] + [LANG]))

    def read_columns(self, names: Collection[str]) -> list[str]:
        """The columns of a table that translating reads: those written, and the id."""
        return [c for c in dict.fromkeys([*self.written, self.id_column]) if c in names]

    def check_columns(self, names: Collection[str], where: str) -> None:
        """Raises ValueError naming ``where`` when a required column is missing."""
        missing = [f.path[0] for f in self.fields if not f.optional and f.path[0] not in names]
        if missing:
            raise ValueError(f"{where}: no column {', '.join(map(repr, missing))} for --kind="
                             f"{self.kind} (its columns: {', '.join(names)})")

    def row_id(self, row: dict[str, Any]) -> str | None:
        value = row.get(self.id_column) if self.id_column else None
        return None if value is None else str(value)

    def slots(self, row: dict[str, Any], where: str) -> list[Slot]:
        """The row's strings to translate, in field order."""
        decoded, _ = self._decoded(row, where)
        return [slot for f in self.fields for slot in self._field_slots(decoded, f, where)]

    def put(self, row: dict[str, Any], texts: dict[Loc, str], where: str) -> dict[str, Any]:
        """The ``written`` columns of the row, copied, with ``texts`` in place (encoded lists
        encoded as they came)."""
        decoded, styles = self._decoded(row, where)
        for loc, text in texts.items():
            _assign(decoded, loc, text)
        for column, style in styles.items():
            decoded[column] = _encode_list(decoded[column], style)
        if decoded.get(LANG) == self.source:
            decoded[LANG] = self.target
        return decoded

    def _decoded(self, row: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, str]]:
        decoded = {c: copy.deepcopy(row[c]) for c in self.written if c in row}
        styles = {}
        for f in self.fields:
            value = decoded.get(f.path[0])
            if f.encoded and isinstance(value, str):
                decoded[f.path[0]], styles[f.path[0]] = _decode_list(value, where, f.name)
        return decoded, styles

    def _field_slots(self, row: dict[str, Any], f: Field, where: str) -> Iterator[Slot]:
        if f.path[0] not in row:
            if f.optional:
                return
            raise ValueError(f"{where}: no field {f.path[0]!r} (the row has: "
                             f"{', '.join(sorted(map(str, row)))})")
        for loc, text in _walk(row[f.path[0]], f.path[1:], (f.path[0],), f, where):
            yield Slot(f.name, f.group, loc, text)


class LlavaLayout(Layout):
    """LLaVA (``conversations``) or OpenAI-style (``messages``) records."""

    ROLES = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant"}

    def __init__(self, names: Collection[str], source: str, target: str):
        super().__init__("llava", (), names, source, target)
        self.id_column = "id"
        self.image_column = next((c for c in ("image", "images") if c in names), None)

    def check_columns(self, names: Collection[str], where: str) -> None:
        if "conversations" not in names and "messages" not in names:
            raise ValueError(f"{where}: neither 'conversations' (LLaVA) nor 'messages' "
                             "(OpenAI-style) for --kind=llava")

    def slots(self, row: dict[str, Any], where: str) -> list[Slot]:
        try:
            from_record(row)
        except DataError as e:
            raise ValueError(f"{where}: {e}") from None
        if "conversations" in row:
            return [Slot(f"conversations.{i}.value", self.ROLES[turn["from"]],
                         ("conversations", i, "value"), turn["value"])
                    for i, turn in enumerate(row["conversations"]) if turn["from"] in self.ROLES]
        slots = []
        for i, message in enumerate(row["messages"]):
            if message["role"] not in self.ROLES:
                continue
            if isinstance(message["content"], str):
                slots.append(Slot(f"messages.{i}.content", message["role"],
                                  ("messages", i, "content"), message["content"]))
                continue
            slots += [Slot(f"messages.{i}.content", message["role"],
                           ("messages", i, "content", j, "text"), part["text"])
                      for j, part in enumerate(message["content"]) if part["type"] == "text"]
        return slots

    def put(self, row: dict[str, Any], texts: dict[Loc, str], where: str) -> dict[str, Any]:
        out = copy.deepcopy(row)
        for loc, text in texts.items():
            _assign(out, loc, text)
        if row.get(LANG) == self.source:
            out[LANG] = self.target
        return out


def detect(names: Collection[str], where: str) -> str:
    """The kind of an input with these columns (the first record's keys for JSON)."""
    names = set(names)
    if names & {"conversations", "messages"}:
        return "llava"
    if names & {"instruction", "question"} and names & set(REFERENCE_COLUMNS):
        return "wildvision"
    if {"question", "choices", "correct_choice_idx"} <= names:
        return "aokvqa"
    if {"question", "answers"} <= names:
        return "vqav2"
    if {"question", "answer"} <= names:
        return "yes_no"
    raise ValueError(f"{where}: cannot tell the kind from its columns ({', '.join(sorted(names))});"
                     f" give --kind ({', '.join(KINDS)}) or --fields")


def layout(kind: str, names: Collection[str], fields: Sequence[str], source: str, target: str,
           where: str) -> Layout:
    """The layout of ``kind`` for an input with these columns; ``fields`` (dotted paths)
    replace the kind's own."""
    if kind not in KINDS:
        raise ValueError(f"--kind={kind}: expected one of {', '.join(KINDS)}")
    if kind == "llava":
        if fields:
            raise ValueError("--fields does not apply to --kind=llava (every user and "
                             "assistant turn is translated)")
        chosen = LlavaLayout(names, source, target)
    else:
        if kind == "jsonl" and not fields:
            raise ValueError("--kind=jsonl needs --fields (dotted paths: question,answers.text)")
        chosen = Layout(kind, [_field(f) for f in fields] if fields else _kind_fields(kind, names),
                        names, source, target)
    chosen.check_columns(names, where)
    return chosen


def _field(path: str) -> Field:
    keys = tuple(path.strip().split("."))
    if not all(keys):
        raise ValueError(f"--fields: {path!r} is not a dotted path (a.b.c)")
    return Field(keys, ".".join(keys))


def _kind_fields(kind: str, names: Collection[str]) -> list[Field]:
    question = Field(("question",), "question")
    if kind == "vqav2":
        return [question, Field(("answers",), "answers", item_key="answer"),
                Field(("multiple_choice_answer",), "answers", optional=True)]
    if kind == "aokvqa":
        return [question, Field(("choices",), "choices", encoded=True),
                Field(("rationales",), "rationales", optional=True)]
    if kind == "yes_no":
        return [question, Field(("answer",), "answer")]
    instruction = "question" if "instruction" not in names and "question" in names \
        else "instruction"
    references = [c for c in REFERENCE_COLUMNS if c in names] or [REFERENCE_COLUMNS[0]]
    return [Field((instruction,), instruction)] + [Field((c,), "reference") for c in references]


def _walk(value: Any, path: tuple[str, ...], loc: Loc, f: Field, where: str
          ) -> Iterator[tuple[Loc, str]]:
    """``(loc, string)`` of every string that ``path`` reaches from ``value``."""
    if value is None:
        return
    if isinstance(value, str) and not path:
        yield loc, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, path, loc + (i,), f, where)
    elif isinstance(value, dict) and path:
        if path[0] not in value:
            raise ValueError(f"{where}: {f.name}: no key {path[0]!r} in "
                             f"{'.'.join(map(str, loc))}")
        yield from _walk(value[path[0]], path[1:], loc + (path[0],), f, where)
    elif isinstance(value, dict) and f.item_key is not None and isinstance(
            value.get(f.item_key), str):
        yield loc + (f.item_key,), value[f.item_key]
    else:
        raise ValueError(f"{where}: {f.name} holds {type(value).__name__} at "
                         f"{'.'.join(map(str, loc))}, not text")


def _assign(row: Any, loc: Loc, text: str) -> None:
    for step in loc[:-1]:
        row = row[step]
    row[loc[-1]] = text


def _decode_list(text: str, where: str, name: str) -> tuple[list[Any], str]:
    """A list stored as a string, and how: ``json`` or ``python`` (a literal, never
    evaluated)."""
    try:
        value, style = json.loads(text), "json"
    except ValueError:
        try:
            value, style = ast.literal_eval(text.strip()), "python"
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            value, style = None, ""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: {name} is a string but not a list literal: {text[:60]!r}")
    return list(value), style


def _encode_list(values: list[Any], style: str) -> str:
    return json.dumps(values, ensure_ascii=False) if style == "json" else str(values)
