"""The conversation schema: LLaVA and OpenAI-style records → one validated ``Conversation``.

LLaVA format::

    {"id": ..., "image": "a.jpg" | ["a.jpg", "b.jpg"] (or absent),
     "conversations": [{"from": "human" | "gpt" | "system", "value": "<image>\\nQuestion"}, ...]}

OpenAI-style format::

    {"id": ..., "images": ["a.jpg", ...] (or absent),
     "messages": [{"role": "system" | "user" | "assistant",
                   "content": "text" | [{"type": "text", "text": ...}, {"type": "image"}, ...]}]}

An image item of a list content becomes ``<image>\\n`` and text items their text, concatenated:
the layout that LLaVA data uses and that a checkpoint's chat template gives list contents
(``basque_vlm.hf.importer.LIST_CONTENT_PRELUDE``). An optional ``lang`` field is kept.

Hub tables give the question without a placeholder (``question``/``answer`` columns, captions,
PixMo's ``messages``): with ``place_images`` the placeholders go first in the first user message,
one ``<image>\n`` per image, where LLaVA's own data puts them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from basque_vlm.data.errors import DataError, ErrorKind, Unavailable
from basque_vlm.data.image import open_image
from basque_vlm.data.records import read_json_records

IMAGE_PLACEHOLDER = "<image>"
ROLES = ("system", "user", "assistant")
LLAVA_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


@dataclasses.dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant
    text: str  # with ``<image>`` placeholders


@dataclasses.dataclass(frozen=True)
class Conversation:
    id: str
    messages: tuple[Message, ...]
    images: tuple[str, ...] = ()  # image references (paths), in placeholder order
    lang: str | None = None


# What a source yields per record: the conversation and its encoded images (as a prepared dataset
# stores them), a bad record, or one left out for want of its downloaded image.
Item = tuple[Conversation, list[bytes]] | DataError | Unavailable


def from_record(record: Any, line: int | None = None, place_images: bool = False
                ) -> Conversation:
    """Normalise and validate one record (either format); images are not touched.

    Raises ``DataError``. A record without ``id`` is named after its ``line``. With
    ``place_images``, a record with images and no ``<image>`` in its text gets the placeholders at
    the start of its first user message.
    """
    if not isinstance(record, Mapping):
        raise DataError(ErrorKind.MALFORMED, "a record must be a JSON object", line=line)
    if "id" in record:
        record_id = str(record["id"])
    elif line is not None:
        record_id = f"line-{line}"
    else:
        raise DataError(ErrorKind.MALFORMED, "record has no 'id'")

    def fail(kind: ErrorKind, message: str) -> DataError:
        return DataError(kind, message, record_id=record_id, line=line)

    if ("conversations" in record) == ("messages" in record):
        raise fail(ErrorKind.MALFORMED, "a record needs exactly one of 'conversations' (LLaVA) "
                                        "or 'messages' (OpenAI-style)")
    if "conversations" in record:
        messages, images = _llava(record, fail)
    else:
        messages, images = _openai(record, fail)
    if place_images and images and not any(IMAGE_PLACEHOLDER in m.text for m in messages):
        messages = _with_placeholders(messages, len(images))
    lang = record.get("lang")
    if lang is not None and not isinstance(lang, str):
        raise fail(ErrorKind.MALFORMED, "'lang' must be a string")
    conv = Conversation(record_id, tuple(messages), tuple(images), lang)
    _validate(conv, fail)
    return conv


def read_conversations(path: str | os.PathLike) -> Iterator[Conversation | DataError]:
    """Stream a JSONL or JSON list file: one ``Conversation`` per valid record, a ``DataError`` in
    its place for a bad one (the caller decides whether to stop or to skip and count)."""
    for item in read_json_records(path):
        if isinstance(item, DataError):
            yield item
            continue
        line, record = item
        try:
            yield from_record(record, line)
        except DataError as e:
            yield e


def check_images(conv: Conversation, image_root: str | os.PathLike) -> list[Path]:
    """The conversation's image files (relative references resolved under ``image_root``), each
    fully decoded once to prove it readable. Raises ``DataError`` (``missing_image``/``bad_image``).
    """
    paths = []
    for ref in conv.images:
        path = Path(image_root, ref)
        if not path.is_file():
            raise DataError(ErrorKind.MISSING_IMAGE, f"image file not found: {path}",
                            record_id=conv.id)
        check_image(path, conv.id, path)
        paths.append(path)
    return paths


def check_image(source: bytes | Path, record_id: str, name: object) -> None:
    """Decodes the image in full (`open_image`); raises ``DataError`` (``bad_image``, naming
    ``name``) when it does not."""
    try:
        open_image(source)
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise DataError(ErrorKind.BAD_IMAGE, f"unreadable image {name}: "
                        f"{type(e).__name__}: {e}".splitlines()[0], record_id=record_id) from e


def _llava(record: Mapping, fail) -> tuple[list[Message], list[str]]:
    turns = record["conversations"]
    if not isinstance(turns, list):
        raise fail(ErrorKind.MALFORMED, "'conversations' must be a list")
    messages = []
    for turn in turns:
        if not isinstance(turn, Mapping) or not isinstance(turn.get("value"), str):
            raise fail(ErrorKind.MALFORMED, "each turn needs 'from' and a string 'value'")
        role = LLAVA_ROLES.get(turn.get("from"))
        if role is None:
            raise fail(ErrorKind.UNKNOWN_ROLE, f"unknown speaker {turn.get('from')!r} "
                                               f"(expected one of {sorted(LLAVA_ROLES)})")
        messages.append(Message(role, turn["value"]))
    image = record.get("image")
    images = [] if image is None else [image] if isinstance(image, str) else image
    return messages, _image_list(images, "image", fail)


def _openai(record: Mapping, fail) -> tuple[list[Message], list[str]]:
    raw = record["messages"]
    if not isinstance(raw, list):
        raise fail(ErrorKind.MALFORMED, "'messages' must be a list")
    messages = []
    for m in raw:
        if not isinstance(m, Mapping) or "content" not in m:
            raise fail(ErrorKind.MALFORMED, "each message needs 'role' and 'content'")
        if m.get("role") not in ROLES:
            raise fail(ErrorKind.UNKNOWN_ROLE, f"unknown role {m.get('role')!r} "
                                               f"(expected one of {list(ROLES)})")
        messages.append(Message(m["role"], _content_text(m["content"], fail)))
    return messages, _image_list(record.get("images") or [], "images", fail)


def _content_text(content: Any, fail) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise fail(ErrorKind.MALFORMED, "'content' must be a string or a list of items")
    parts = []
    for item in content:
        kind = item.get("type") if isinstance(item, Mapping) else None
        if kind == "image":
            parts.append(IMAGE_PLACEHOLDER + "\n")
        elif kind == "text" and isinstance(item.get("text"), str):
            parts.append(item["text"])
        else:
            raise fail(ErrorKind.MALFORMED, f"unsupported content item {item!r:.80}")
    return "".join(parts)


def _image_list(images: Any, field: str, fail) -> list[str]:
    if not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
        raise fail(ErrorKind.MALFORMED, f"'{field}' must be a path or a list of paths")
    return images


def _with_placeholders(messages: list[Message], count: int) -> list[Message]:
    first = next((i for i, m in enumerate(messages) if m.role == "user"), None)
    if first is None:
        return messages  # _validate reports the missing user message
    placed = Message("user", f"{IMAGE_PLACEHOLDER}\n" * count + messages[first].text)
    return [*messages[:first], placed, *messages[first + 1:]]


def _validate(conv: Conversation, fail) -> None:
    for i, m in enumerate(conv.messages):
        has_text = bool(m.text.replace(IMAGE_PLACEHOLDER, "").strip())
        if not has_text and (m.role == "assistant" or IMAGE_PLACEHOLDER not in m.text):
            raise fail(ErrorKind.EMPTY_TEXT, f"message {i} ({m.role}) has no text")
    roles = [m.role for m in conv.messages]
    if "assistant" not in roles:
        raise fail(ErrorKind.NO_ASSISTANT, "no assistant message")
    first = next(r for r in roles if r != "system")
    if first != "user":
        raise fail(ErrorKind.BAD_ORDER, f"the first non-system message is {first!r}, not 'user'")
    placeholders = sum(m.text.count(IMAGE_PLACEHOLDER) for m in conv.messages)
    if placeholders != len(conv.images):
        raise fail(ErrorKind.IMAGE_COUNT, f"{placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but "
                                          f"{len(conv.images)} image(s)")
