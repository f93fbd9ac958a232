"""Evaluation data files: Hugging Face parquet exports, JSONL or JSON lists, read row by row.

A task reads every ``*.parquet``, ``*.jsonl`` and ``*.json`` file of its folder, in name order.
Images are the Hugging Face ``Image`` feature as parquet stores it (``{"bytes", "path"}``), raw
bytes, or a path relative to the data file's folder. Anything wrong with a row raises
``TaskDataError`` naming the file and the row (parquet: ``row N``, 1-based; JSON: ``line N``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from basque_vlm.data.errors import DataError
from basque_vlm.data.image import open_image
from basque_vlm.data.records import read_json_records

SUFFIXES = (".parquet", ".jsonl", ".json")


class TaskDataError(ValueError):
    """A bad evaluation file or row; the message names the file and the row."""


@dataclasses.dataclass(frozen=True)
class Row:
    path: Path
    where: str             # "row 3" / "line 3"
    data: dict[str, Any]

    def fail(self, message: str) -> TaskDataError:
        return TaskDataError(f"{self.path} {self.where}: {message}")

    def get(self, *names: str, kind: type | tuple[type, ...] = str, optional: bool = False
            ) -> Any:
        """The first of the columns ``names`` that the row has (a value of ``kind``)."""
        for name in names:
            if name in self.data and self.data[name] is not None:
                value = self.data[name]
                if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                    raise self.fail(f"column {name!r} holds {type(value).__name__}, expected "
                                    f"{getattr(kind, '__name__', kind)}")
                return value
        if optional:
            return None
        wanted = " or ".join(repr(n) for n in names)
        raise self.fail(f"missing column {wanted} (the row has: {', '.join(sorted(self.data))})")

    def strings(self, *names: str, key: str | None = None) -> list[str]:
        """A non-empty list of strings; with ``key``, items may also be dicts holding the string
        under ``key`` (VQAv2's ``answers``: ``[{"answer": ..., "answer_id": ...}, ...]``)."""
        values = self.get(*names, kind=(list, tuple))
        out = [v.get(key) if key is not None and isinstance(v, dict) else v for v in values]
        if not out or not all(isinstance(v, str) for v in out):
            raise self.fail(f"column {names[0]!r} must be a non-empty list of strings"
                            + (f" (or of {{{key!r}: string}})" if key else ""))
        return out

    def image(self, *names: str) -> bytes | Path:
        """Encoded image bytes, or the image file (checked to exist; decoded later)."""
        value = self.get(*names, kind=(dict, bytes, str))
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, bytes):
            return value
        if not isinstance(value, str) or not value:
            raise self.fail(f"column {names[0]!r} holds no image bytes or path")
        path = self.path.parent / value
        if not path.is_file():
            raise self.fail(f"image file not found: {path}")
        return path


def read_rows(folder: Path) -> Iterator[Row]:
    """The rows of every data file in ``folder``."""
    if not folder.is_dir():
        raise TaskDataError(f"{folder}: no such folder (see README, 'Evaluation data')")
    files = sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if not files:
        raise TaskDataError(f"{folder}: no {', '.join(SUFFIXES)} files")
    for path in files:
        yield from (_parquet_rows(path) if path.suffix == ".parquet" else _json_rows(path))


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=64)
        number = 0
        for batch in batches:
            for data in batch.to_pylist():
                number += 1
                yield Row(path, f"row {number}", data)
    except OSError as e:  # pyarrow's ArrowInvalid is an OSError subclass too
        raise TaskDataError(f"{path}: not a readable parquet file ({e})") from None


def _json_rows(path: Path) -> Iterator[Row]:
    for item in read_json_records(path):
        if isinstance(item, DataError):
            raise TaskDataError(f"{path} line {item.line}: {item.message}")
        line, data = item
        if not isinstance(data, dict):
            raise TaskDataError(f"{path} line {line}: a row must be a JSON object")
        yield Row(path, f"line {line}", data)


def decode_image(image: bytes | Path, where: str) -> Image.Image:
    """A sample's image, decoded; an unreadable one raises ``TaskDataError`` naming ``where``."""
    try:
        return open_image(image)
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise TaskDataError(f"{where}: unreadable image ({type(e).__name__}: {e})".splitlines()[0]
                            ) from None

