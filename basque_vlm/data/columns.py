"""``--columns``: which columns of a hub table make a conversation, and the record they make.

    --columns=question=question,answer=answer,image=image_url   a question and its answer
    --columns=caption=caption,image=url                         a caption (align-stage data)
    --columns=messages=conversations,image=images               a whole conversation
    ...,id=id                                                   the record id (default SPLIT-ROW)

``KEY=COLUMN`` pairs. Keys: ``id``, ``image`` (absent: text-only records) and one shape:
``question`` with ``answer``, ``caption``, or ``messages``. A row becomes a record of the
conversation schema (`conversation.from_record`), its images referenced as ``#0``, ``#1``, ...:

- a question and answer: one user turn, one assistant turn;
- a caption: the caption conversation of the demo's caption data, the user asking
  ``caption_prompt`` (``CAPTION_PROMPTS`` by language) and the assistant answering the caption;
- ``messages``: a list of LLaVA turns (``{"from", "value"}``), of OpenAI-style messages
  (``{"role", "content"}``), or of strings alternating user and assistant (PixMo-CapQA's
  ``messages``); any of these may also come as a JSON string.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from basque_vlm.data.errors import DataError, ErrorKind

KEYS = ("id", "image", "question", "answer", "caption", "messages")
SHAPES = (("question", "answer"), ("caption",), ("messages",))
# The user turn of a caption record: the demo's captions (`demo.synthetic`) ask the same.
CAPTION_PROMPTS = {"eu": "Deskribatu irudia.", "en": "Describe the image."}


@dataclasses.dataclass(frozen=True)
class ColumnMap:
    """Conversation part (a key of ``KEYS``) → the table column that holds it."""

    columns: dict[str, str]

    @classmethod
    def parse(cls, spec: str) -> ColumnMap:
        """From ``KEY=COLUMN,...``; raises ``ValueError`` for an unknown key or an incomplete
        shape."""
        columns: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, column = (s.strip() for s in pair.partition("="))
            if not sep or not column or key not in KEYS or key in columns:
                raise ValueError(f"--columns: {pair!r} is not KEY=COLUMN with a new KEY among "
                                 f"{', '.join(KEYS)}")
            columns[key] = column
        shapes = [shape for shape in SHAPES if any(k in columns for k in shape)]
        if len(shapes) != 1 or not all(k in columns for k in shapes[0]):
            raise ValueError(f"--columns={spec}: needs question and answer, or caption, or "
                             "messages (one of these)")
        return cls(columns)

    @property
    def names(self) -> list[str]:
        """The table columns to read."""
        return list(dict.fromkeys(self.columns.values()))

    def image(self, row: Mapping[str, Any]) -> Any:
        """The row's image value (None without an ``image`` column)."""
        return row[self.columns["image"]] if "image" in self.columns else None

    def record_id(self, row: Mapping[str, Any], default: str) -> str:
        """The row's ``id`` column as text, else ``default``."""
        value = row[self.columns["id"]] if "id" in self.columns else None
        return default if value is None else str(value)

    def caption_prompt(self, lang: str, prompt: str | None = None) -> str:
        """The user's turn of a caption record: ``prompt``, else the language's entry of
        ``CAPTION_PROMPTS`` (empty without a caption column). ``ValueError`` when there is none,
        or for a ``prompt`` without a caption column."""
        if "caption" not in self.columns:
            if prompt is not None:
                raise ValueError("--caption_prompt: only for a caption column "
                                 "(--columns=caption=...)")
            return ""
        if prompt:
            return prompt
        if lang not in CAPTION_PROMPTS:
            raise ValueError(f"captions in {lang!r} need --caption_prompt (the user's request "
                             f"for a caption; built in for {', '.join(CAPTION_PROMPTS)})")
        return CAPTION_PROMPTS[lang]

    def record(self, row: Mapping[str, Any], record_id: str, images: int, caption_prompt: str
               ) -> dict[str, Any]:
        """The conversation record of ``row``, with ``images`` image references. Raises
        ``DataError`` for a value of the wrong type."""
        refs = [f"#{i}" for i in range(images)]
        if "messages" in self.columns:
            return {"id": record_id, **_messages(self._value(row, "messages", record_id), refs,
                                                 record_id)}
        if "caption" in self.columns:
            question, answer = caption_prompt, self._text(row, "caption", record_id)
        else:
            question = self._text(row, "question", record_id)
            answer = self._text(row, "answer", record_id)
        return {"id": record_id, "image": refs, "conversations": [
            {"from": "human", "value": question}, {"from": "gpt", "value": answer}]}

    def _value(self, row: Mapping[str, Any], key: str, record_id: str) -> Any:
        value = row[self.columns[key]]
        if value is None:
            raise DataError(ErrorKind.MALFORMED, f"column {self.columns[key]!r} is empty (null)",
                            record_id=record_id)
        return value

    def _text(self, row: Mapping[str, Any], key: str, record_id: str) -> str:
        value = self._value(row, key, record_id)
        if not isinstance(value, str):
            raise DataError(ErrorKind.MALFORMED, f"column {self.columns[key]!r} holds "
                            f"{type(value).__name__}, not text", record_id=record_id)
        return value


def _messages(value: Any, refs: list[str], record_id: str) -> dict[str, Any]:
    """A ``messages`` value → the ``conversations`` (LLaVA) or ``messages`` (OpenAI-style) part
    of a record, with its image references."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise DataError(ErrorKind.INVALID_JSON, f"messages are not JSON: {e.msg}",
                            record_id=record_id) from None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return {"image": refs, "conversations": [
            {"from": ("human", "gpt")[i % 2], "value": text} for i, text in enumerate(value)]}
    first = value[0] if isinstance(value, list) and value else None
    if isinstance(first, Mapping) and "role" in first:
        return {"images": refs, "messages": value}
    if isinstance(first, Mapping) and "from" in first:
        return {"image": refs, "conversations": value}
    raise DataError(ErrorKind.MALFORMED, "messages must be a non-empty list of {from, value} "
                    "turns, {role, content} messages or strings", record_id=record_id)
