"""What people are asked to judge, read from JSONL: translated items or model outputs.

Two shapes, told apart per file by its first record:

- a translation item, as the ``translate`` tool writes them for validation: ``{"benchmark": str,
  "id": str, "source": str, "target": str, "image": str | null, "field": str (optional)}``, the
  image a path relative to the JSONL file or an http(s) URL; the text judged is ``target``;
- an ``evaluate`` prediction: ``{"task": str, "index": int, "id": str, "prompt": str,
  "prediction": str, "references": [str], "score": float | null, ...}``; the benchmark is
  ``task``, the source shown is ``prompt`` and the text judged is ``prediction``. Its image is
  its ``image`` field where it has one (relative to ``image_root``, else to the JSONL file), or
  else ``image_root/<task>/<id>.<ext>`` or ``image_root/<id>.<ext>`` for an image extension;
  without either, the item is shown without an image.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

TRANSLATION, PREDICTION = "translation", "prediction"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
_SHAPES = {TRANSLATION: {"benchmark", "target"}, PREDICTION: {"task", "prediction"}}
_SHAPE_HELP = ("neither a translation item {benchmark, id, source, target, image} nor an "
               "evaluate prediction {task, index, id, prompt, prediction, references}")


@dataclasses.dataclass(frozen=True)
class SourceItem:
    """One thing to judge, as read: ``text`` is the translation or the model output,
    ``source`` what it came from (the English text, or the prompt); ``image`` a local file,
    an http(s) URL or None; ``record`` the JSON object as read; ``where`` "FILE line N"."""

    key: str          # benchmark/id[/field]: unique among all inputs
    benchmark: str
    kind: str         # TRANSLATION | PREDICTION
    id: str
    field: str | None
    source: str
    text: str
    references: tuple[str, ...]
    image: Path | str | None
    record: dict[str, Any]
    where: str


def _is_url(image: str) -> bool:
    return image.startswith(("http://", "https://"))


def _name(record: dict[str, Any], name: str, where: str, optional: bool = False) -> str | None:
    """A record's name-like field (benchmark, task, id, field): a non-empty string (or an
    integer id)."""
    value = record.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise ValueError(f"{where}: {name!r} must be a non-empty string, got {value!r}")
    return str(value)


def _local_image(path: Path, where: str) -> Path:
    if not path.is_file():
        raise ValueError(f"{where}: image {path} not found")
    return path


def _translation(record: dict[str, Any], folder: Path, where: str) -> SourceItem:
    image = record.get("image")
    if image is not None and (not isinstance(image, str) or not image):
        raise ValueError(f"{where}: 'image' must be a path, an http(s) URL or null, "
                         f"got {image!r}")
    if image is not None and not _is_url(image):
        image = _local_image(folder / image, where)
    benchmark, id_, field = (_name(record, "benchmark", where), _name(record, "id", where),
                             _name(record, "field", where, optional=True))
    if not isinstance(record.get("source"), str) or not isinstance(record.get("target"), str):
        raise ValueError(f"{where}: 'source' and 'target' must be strings")
    return SourceItem("/".join(filter(None, (benchmark, id_, field))), benchmark, TRANSLATION,
                      id_, field, record["source"], record["target"], (), image, record, where)


def _prediction_image(record: dict[str, Any], task: str, id_: str, folder: Path,
                      image_root: Path | None, where: str) -> Path | str | None:
    image = record.get("image")
    if isinstance(image, str) and image:
        return image if _is_url(image) else _local_image((image_root or folder) / image, where)
    if image_root is None:
        return None
    for candidate in (image_root / task, image_root):
        for suffix in IMAGE_SUFFIXES:
            path = candidate / f"{id_}{suffix}"
            if path.is_file():
                return path
    return None


def _prediction(record: dict[str, Any], folder: Path, image_root: Path | None,
                where: str) -> SourceItem:
    task, id_ = _name(record, "task", where), _name(record, "id", where)
    index = record.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError(f"{where}: 'index' must be an integer, got {index!r}")
    references = record.get("references", [])
    if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
        raise ValueError(f"{where}: 'references' must be a list of strings")
    if not isinstance(record.get("prompt"), str) or \
            not isinstance(record.get("prediction"), str):
        raise ValueError(f"{where}: 'prompt' and 'prediction' must be strings")
    return SourceItem(f"{task}/{id_}", task, PREDICTION, id_, None, record["prompt"],
                      record["prediction"], tuple(references),
                      _prediction_image(record, task, id_, folder, image_root, where), record,
                      where)


def _records(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(line)  # UTF-8, or a ValueError naming the bad byte
            except ValueError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: {_SHAPE_HELP}")
            yield record, where


def read_file(path: Path, image_root: Path | None = None) -> list[SourceItem]:
    """Every record of one JSONL file, its shape told by the first record; a record that is
    not of that shape raises ValueError naming the file and line."""
    items: list[SourceItem] = []
    kind = None
    for record, where in _records(path):
        if kind is None:
            kind = next((k for k, keys in _SHAPES.items() if keys <= record.keys()), None)
            if kind is None:
                raise ValueError(f"{where}: {_SHAPE_HELP}")
        elif not _SHAPES[kind] <= record.keys():
            raise ValueError(f"{where}: not a {kind} record like the file's first one (needs "
                             f"{', '.join(sorted(_SHAPES[kind]))})")
        items.append(_translation(record, path.parent, where) if kind == TRANSLATION else
                     _prediction(record, path.parent, image_root, where))
    if not items:
        raise ValueError(f"{path}: no records")
    return items


def read_items(paths: Sequence[Path], image_root: Path | None = None) -> list[SourceItem]:
    """The items of all ``paths`` in order; two items with the same key (benchmark, id and
    field) raise ValueError naming both places."""
    seen: dict[str, str] = {}
    items = []
    for path in paths:
        for item in read_file(path, image_root):
            if item.key in seen:
                raise ValueError(f"{item.where}: item {item.key} again (first at "
                                 f"{seen[item.key]})")
            seen[item.key] = item.where
            items.append(item)
    return items
