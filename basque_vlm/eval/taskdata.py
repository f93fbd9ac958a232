"""Evaluation data files: Hugging Face parquet exports (hub snapshots too), JSONL or JSON lists,
read row by row.

Which files. A task reads the ``*.parquet``, ``*.jsonl`` and ``*.json`` files of its folder and
of the folder's ``data/``, in name order. A hub snapshot (``hf download REPO --repo-type dataset
--local-dir DIR``) names each file after its split, ``data/eu-00000-of-00001.parquet``: when the
folder holds such files, the task reads those of one split only, the first of its splits
(``Task.hub_splits``: its language's) that the folder holds, and no other file. A folder with
split files but none of the task's is an error naming the splits found.

Which columns. A loader reads fields (``question``, ``choices``, ``image``, ...), each from the
first of its columns that the row has. ``columns.json`` in the task folder,
``{"field": "column", ...}``, reads a field from another column (a variant release).

Values. A list may be stored as a list or as a string holding its JSON or Python literal, an
index as an int or a string of digits (`literals`). Images: the Hugging Face ``Image`` feature as
parquet stores it (``{"bytes", "path"}``), raw bytes, or a path relative to the data file's
folder. Anything wrong raises ``TaskDataError`` naming the file, the row (parquet: ``row N``,
1-based; JSON: ``line N``) and the column.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from basque_vlm.data.errors import DataError
from basque_vlm.data.image import open_image
from basque_vlm.data.records import read_json_records
from basque_vlm.eval.literals import parse_index, parse_list

SUFFIXES = (".parquet", ".jsonl", ".json")
COLUMNS_FILE = "columns.json"
# The hub's file names: SPLIT-00000-of-00001, an older export's fingerprint after it.
_SHARD = re.compile(r"(?P<split>\w+(?:\.\w+)*)-\d{5}-of-\d{5}(?:-[0-9a-f]+)?")

Fields = Mapping[str, tuple[str, ...]]  # field → the columns that may hold it, in order


class TaskDataError(ValueError):
    """A bad evaluation file or row; the message names the file and the row."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a task's data file, read field by field."""

    path: Path
    where: str             # "row 3" / "line 3"
    data: dict[str, Any]
    fields: Fields = dataclasses.field(default_factory=dict)  # a field not here: its own column

    def fail(self, message: str) -> TaskDataError:
        return TaskDataError(f"{self.path} {self.where}: {message}")

    def get(self, field: str, kind: type | tuple[type, ...] = str, optional: bool = False
            ) -> Any:
        """The value of ``field`` (of type ``kind``) from the first of its columns the row has."""
        column, value = self._find(field, optional)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if value is not None and (not isinstance(value, kinds)
                                  or (isinstance(value, bool) and bool not in kinds)):
            raise self._wrong(column, value, " or ".join(k.__name__ for k in kinds))
        return value

    def strings(self, field: str, key: str | None = None) -> list[str]:
        """A non-empty list of strings, stored as a list or as its literal in a string; with
        ``key``, items may also be dicts holding the string under ``key`` (VQAv2's ``answers``:
        ``[{"answer": ..., "answer_id": ...}, ...]``)."""
        column, value = self._find(field)
        values = parse_list(value) if isinstance(value, str) else value
        if not isinstance(values, (list, tuple)):
            raise self._wrong(column, value, "a list (or its JSON or Python literal)")
        out = [v.get(key) if key is not None and isinstance(v, dict) else v for v in values]
        if not out or not all(isinstance(v, str) for v in out):
            raise self.fail(f"column {column!r} must be a non-empty list of strings"
                            + (f" (or of {{{key!r}: string}})" if key else ""))
        return out

    def index(self, field: str) -> int:
        """A non-negative index, stored as an int or as a string of digits."""
        column, value = self._find(field)
        index = parse_index(value)
        if index is None:
            raise self._wrong(column, value, "an index (an int, or digits in a string)")
        return index

    def image(self, field: str = "image") -> bytes | Path:
        """Encoded image bytes, or the image file (checked to exist; decoded later)."""
        value = self.get(field, kind=(dict, bytes, str))
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, bytes):
            return value
        if not isinstance(value, str) or not value:
            raise self.fail(f"column {self._find(field)[0]!r} holds no image bytes or path")
        path = self.path.parent / value
        if not path.is_file():
            raise self.fail(f"image file not found: {path}")
        return path

    def _find(self, field: str, optional: bool = False) -> tuple[str | None, Any]:
        """``(column, value)``: the first of the field's columns that the row has."""
        columns = self.fields.get(field, (field,))
        for column in columns:
            if self.data.get(column) is not None:
                return column, self.data[column]
        if optional:
            return None, None
        wanted = " or ".join(repr(c) for c in columns)
        raise self.fail(f"missing column {wanted} (the row has: {', '.join(sorted(self.data))})")

    def _wrong(self, column: str | None, value: Any, expected: str) -> TaskDataError:
        shown = repr(value) if isinstance(value, (str, int, float)) else ""
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return self.fail(f"column {column!r} holds {type(value).__name__} {shown}".rstrip()
                         + f", expected {expected}")


def read_rows(folder: Path, splits: Sequence[str] = (), fields: Fields | None = None
              ) -> Iterator[Row]:
    """The rows of the files a task reads in ``folder`` (``data_files``), whose fields are read
    from the columns ``fields`` names, as ``columns.json`` there overrides them."""
    files = data_files(folder, splits)
    columns = read_columns(folder, fields or {})
    for path in files:
        yield from (_parquet_rows if path.suffix == ".parquet" else _json_rows)(path, columns)


def data_files(folder: Path, splits: Sequence[str] = ()) -> list[Path]:
    """The data files of ``folder`` and ``folder/data``: with hub split files among them, those
    of the first of ``splits`` that has some; else all of them."""
    if not folder.is_dir():
        raise TaskDataError(f"{folder}: no such folder (see README, 'Evaluation data')")
    files = sorted(path for where in (folder, folder / "data") if where.is_dir()
                   for path in where.iterdir()
                   if path.suffix in SUFFIXES and path.is_file()
                   and path != folder / COLUMNS_FILE)
    if not files:
        raise TaskDataError(f"{folder}: no {', '.join(SUFFIXES)} files")
    by_split: dict[str, list[Path]] = {}
    for path in files:
        shard = _SHARD.fullmatch(path.stem)
        if shard:
            by_split.setdefault(shard["split"], []).append(path)
    if not by_split:
        return files
    for split in splits:
        if split in by_split:
            return by_split[split]
    raise TaskDataError(f"{folder}: holds the splits {', '.join(sorted(by_split))}, not the "
                        f"task's ({', '.join(splits) or 'none named'}); see README, "
                        "'Evaluation data'")


def read_columns(folder: Path, fields: Fields) -> Fields:
    """``fields`` with the overrides of ``folder/columns.json`` (``{"field": "column", ...}``)."""
    path = folder / COLUMNS_FILE
    if not path.is_file():
        return fields
    try:
        overrides = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise TaskDataError(f"{path}: not JSON ({e})") from None
    if not isinstance(overrides, dict) or not all(isinstance(c, str) and c
                                                  for c in overrides.values()):
        raise TaskDataError(f'{path}: expected {{"field": "column", ...}} (column names as '
                            "strings)")
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise TaskDataError(f"{path}: unknown field(s) {', '.join(unknown)}; this task reads "
                            f"{', '.join(fields)}")
    return {**fields, **{field: (column,) for field, column in overrides.items()}}


def _parquet_rows(path: Path, fields: Fields) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=64)
        number = 0
        for batch in batches:
            for data in batch.to_pylist():
                number += 1
                yield Row(path, f"row {number}", data, fields)
    except OSError as e:  # pyarrow's ArrowInvalid is an OSError subclass too
        raise TaskDataError(f"{path}: not a readable parquet file ({e})") from None


def _json_rows(path: Path, fields: Fields) -> Iterator[Row]:
    for item in read_json_records(path):
        if isinstance(item, DataError):
            raise TaskDataError(f"{path} line {item.line}: {item.message}")
        line, data = item
        if not isinstance(data, dict):
            raise TaskDataError(f"{path} line {line}: a row must be a JSON object")
        yield Row(path, f"line {line}", data, fields)


def decode_image(image: bytes | Path, where: str) -> Image.Image:
    """A sample's image, decoded; an unreadable one raises ``TaskDataError`` naming ``where``."""
    try:
        return open_image(image)
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise TaskDataError(f"{where}: unreadable image ({type(e).__name__}: {e})".splitlines()[0]
                            ) from None
