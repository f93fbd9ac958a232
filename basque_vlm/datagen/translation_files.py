"""The files of a translation: the input's data files read a chunk of rows at a time, and the
output written under a temporary name and renamed when complete.

Input: a parquet, JSONL or JSON-list file, or a folder of them (searched recursively, hidden
files and ``METADATA_FILES`` left out; a hub snapshot's ``data/{split}-00000-of-00001.parquet``):
of a folder with several splits, the ``--split`` named, else the source language's, else an
error. All files of one input share a
container and (parquet) a schema.

Output (`Outputs`): benchmark kinds and parquet inputs write the hub layout that ``evaluate``
reads, ``OUT/data/{target}-00000-of-00001.{parquet,jsonl,json}``, one file with every row;
the other kinds write the file ``OUT``. Beside the output, named after ``OUT`` without its data
suffix (``OUT_STEM``): the journal, the flags, the validation items and their images. A JSON
benchmark's relative image paths are rewritten to point from the output file to the same
images.

A parquet output keeps the input's schema, its Hugging Face ``features`` metadata included,
with a ``translation_flags`` column (list of strings) added; the columns not translated are the
input's arrays, untouched. JSON outputs keep each record's keys in order and add
``translation_flags``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from basque_vlm.data.errors import DataError
from basque_vlm.data.records import read_json_records
from basque_vlm.data.tables import split_of

CONTAINERS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "json"}
# JSON files of a dataset folder that hold no rows (``datasets``' and ``evaluate``'s)
METADATA_FILES = {"dataset_info.json", "dataset_infos.json", "dataset_dict.json", "state.json",
                  "columns.json"}
FLAGS_COLUMN = "translation_flags"
BATCH_ROWS = 64
HF_METADATA = b"huggingface"


@dataclasses.dataclass(frozen=True)
class Input:
    """The data files of an input, in order, and their container (parquet, jsonl, json)."""

    files: tuple[Path, ...]
    container: str

    def names(self) -> list[str]:
        """The columns: the parquet schema's, or the first JSON record's keys."""
        if self.container == "parquet":
            return self.schema().names
        for chunk in read_chunks(self, [], BATCH_ROWS):
            if chunk.rows:
                return list(chunk.rows[0])
        raise ValueError(f"{self.files[0]}: no records")

    def schema(self) -> pa.Schema:
        """The parquet files' common schema."""
        schemas = [_parquet(path, pq.read_schema) for path in self.files]
        for path, schema in zip(self.files[1:], schemas[1:]):
            if not schema.remove_metadata().equals(schemas[0].remove_metadata()):
                raise ValueError(f"{path}: its schema differs from {self.files[0]}'s; translate "
                                 "them one at a time")
        return schemas[0]


def find_input(path: Path, split: str | None, source: str) -> Input:
    """The data files at ``path`` (a file, or a folder: the ``split`` chosen, else the
    ``source`` language's split where there are several)."""
    if path.is_file():
        if split is not None:
            raise ValueError(f"--split={split}: --input={path} is one file, not a folder of "
                             "splits")
        return Input((path,), _container(path))
    if not path.is_dir():
        raise FileNotFoundError(f"--input={path}: no such file or folder")
    by_split: dict[str, list[Path]] = {}
    for file in sorted(path.rglob("*")):
        if file.suffix in CONTAINERS and file.is_file() and file.name not in METADATA_FILES \
                and not any(p.startswith(".") for p in file.relative_to(path).parts):
            by_split.setdefault(split_of(file), []).append(file)
    if not by_split:
        raise ValueError(f"--input={path}: no {', '.join(CONTAINERS)} files")
    chosen = split or (source if source in by_split else None)
    if chosen is None and len(by_split) == 1:
        chosen = next(iter(by_split))
    if chosen not in by_split:
        raise ValueError(f"--input={path} holds the splits {', '.join(sorted(by_split))}"
                         + (f", not {chosen}" if chosen else "") + "; choose one with --split")
    files = tuple(by_split[chosen])
    containers = {_container(f) for f in files}
    if len(containers) > 1:
        raise ValueError(f"--input={path}: split {chosen} mixes {', '.join(sorted(containers))} "
                         "files")
    return Input(files, containers.pop())


def _container(path: Path) -> str:
    if path.suffix not in CONTAINERS:
        raise ValueError(f"{path}: not a {', '.join(CONTAINERS)} file")
    return CONTAINERS[path.suffix]


@dataclasses.dataclass
class Chunk:
    """Rows of one input file: ``places`` says where each is (``FILE row N`` / ``FILE line
    N``), ``rows`` holds its values (parquet: the columns asked for; JSON: the whole record)
    and, for parquet, ``batch`` all of its columns."""

    file: Path
    places: list[str]
    rows: list[dict[str, Any]]
    batch: pa.RecordBatch | None = None


def read_chunks(source: Input, columns: Sequence[str], rows: int = BATCH_ROWS,
                whole: bool = False) -> Iterator[Chunk]:
    """The input's rows, ``rows`` at a time; ``whole`` reads every parquet column into
    ``Chunk.batch`` (to write it back)."""
    for path in source.files:
        if source.container == "parquet":
            yield from _parquet_chunks(path, columns, rows, whole)
        else:
            yield from _json_chunks(path, rows)


def _parquet_chunks(path: Path, columns: Sequence[str], rows: int, whole: bool
                    ) -> Iterator[Chunk]:
    read = None if whole else list(columns)
    batches = _parquet(path, lambda p: pq.ParquetFile(p).iter_batches(batch_size=rows,
                                                                       columns=read))
    number = 0
    while (batch := _parquet(path, lambda _: next(batches, None))) is not None:
        values = {c: batch.column(c).to_pylist() for c in columns}
        chunk = Chunk(path, [f"{path} row {number + i + 1}" for i in range(batch.num_rows)],
                      [{c: values[c][i] for c in columns} for i in range(batch.num_rows)],
                      batch if whole else None)
        number += batch.num_rows
        yield chunk


def _parquet(path: Path, read: Any) -> Any:
    """``read(path)``, pyarrow's errors as one ValueError naming the file."""
    try:
        return read(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable parquet file ({' '.join(str(e).split())})"
                         ) from None


def _json_chunks(path: Path, rows: int) -> Iterator[Chunk]:
    chunk = Chunk(path, [], [])
    for item in read_json_records(path):
        if isinstance(item, DataError):
            raise ValueError(f"{path} line {item.line}: {item.message}")
        line, record = item
        if not isinstance(record, dict):
            raise ValueError(f"{path} line {line}: a record must be a JSON object")
        chunk.places.append(f"{path} line {line}")
        chunk.rows.append(record)
        if len(chunk.rows) == rows:
            yield chunk
            chunk = Chunk(path, [], [])
    if chunk.rows:
        yield chunk


def is_json_list(path: Path) -> bool:
    """Whether a JSON file holds a list (else it is JSONL), as `read_json_records` tells."""
    with open(path, encoding="utf-8") as f:
        return f.read(1 << 16).lstrip().startswith("[")


@dataclasses.dataclass(frozen=True)
class Outputs:
    """Where a run writes: ``data`` (the translated rows) and, beside it, named after
    ``stem``, the journal, flags, validation items and their images."""

    data: Path
    stem: Path

    @property
    def journal(self) -> Path:
        return self.stem.with_name(self.stem.name + ".journal.jsonl")

    @property
    def flags(self) -> Path:
        return self.stem.with_name(self.stem.name + ".flags.jsonl")

    @property
    def items(self) -> Path:
        return self.stem.with_name(self.stem.name + ".items.jsonl")

    @property
    def images(self) -> Path:
        return self.stem.with_name(self.stem.name + ".images")


def outputs(out: Path, source: Input, hub_layout: bool, target: str) -> Outputs:
    """The outputs for ``--out``: the hub layout under the folder ``out``, or the file
    ``out``."""
    if hub_layout:
        suffix = next(s for s, c in CONTAINERS.items() if c == source.container)
        return Outputs(out / "data" / f"{target}-00000-of-00001{suffix}", out)
    if out.suffix != source.files[0].suffix:
        raise ValueError(f"--out={out}: write {source.container} to a {source.files[0].suffix} "
                         "file, as the input")
    return Outputs(out, out.with_suffix(""))


class Commit:
    """A file written under a temporary name beside ``path`` (``.NAME.XXXX``; those a killed
    run left are removed) and renamed to it by ``commit`` (or removed by ``abort``): never a
    partial file under the final name."""

    def __init__(self, path: Path, binary: bool = False):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(glob.escape(f".{path.name}.") + "*"):  # a killed run's
            stale.unlink(missing_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        self.temp = Path(name)
        self.file: IO[Any] = os.fdopen(fd, "wb" if binary else "w",
                                       **({} if binary else {"encoding": "utf-8"}))

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temp, self.path)

    def abort(self) -> None:
        self.file.close()
        self.temp.unlink(missing_ok=True)


class Writer:
    """The output data file: rows written chunk by chunk, committed when complete. For JSON
    benchmarks, ``image_column`` paths relative to the input file are rebased onto the output
    file's folder."""

    def __init__(self, path: Path, source: Input, image_column: str | None = None):
        self.container, self.image_column = source.container, image_column
        self.out = Commit(path, binary=source.container == "parquet")
        self._parquet: pq.ParquetWriter | None = None
        self._first = True
        self._list = source.container == "json" and is_json_list(source.files[0])
        if self.container == "parquet":
            self.schema = _with_flags(source.schema())
            self._parquet = pq.ParquetWriter(self.out.file, self.schema)
        elif self._list:
            self.out.file.write("[")

    def write(self, chunk: Chunk, rows: list[dict[str, Any]], flags: list[list[str]]) -> None:
        """Writes the chunk with ``rows`` (per row, the columns that changed) and ``flags``."""
        if self._parquet is not None:
            self._parquet.write_batch(self._batch(chunk, rows, flags))
            return
        for record, changed, row_flags in zip(chunk.rows, rows, flags):
            record = {**record, **changed, FLAGS_COLUMN: row_flags}
            if self.image_column:
                record[self.image_column] = self._rebased(record.get(self.image_column),
                                                          chunk.file)
            text = json.dumps(record, ensure_ascii=False)
            if self._list:
                text = ("\n" if self._first else ",\n") + text
            else:
                text += "\n"
            self.out.file.write(text)
            self._first = False

    def _batch(self, chunk: Chunk, rows: list[dict[str, Any]], flags: list[list[str]]
               ) -> pa.RecordBatch:
        columns = dict(zip(chunk.batch.schema.names, chunk.batch.columns))
        for name in rows[0] if rows else ():
            columns[name] = pa.array([r[name] for r in rows],
                                     type=self.schema.field(name).type)
        columns[FLAGS_COLUMN] = pa.array(flags, type=pa.list_(pa.string()))
        return pa.RecordBatch.from_arrays([columns[n] for n in self.schema.names],
                                          schema=self.schema)

    def _rebased(self, image: Any, source: Path) -> Any:
        if not isinstance(image, str) or not image or "://" in image or \
                os.path.isabs(image):
            return image
        return os.path.relpath(source.parent / image, self.out.path.parent)

    def commit(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        elif self._list:
            self.out.file.write("\n]\n" if not self._first else "]\n")
        self.out.commit()

    def abort(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        self.out.abort()


def _with_flags(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the flags column (replacing one already there), the Hugging Face
    ``features`` metadata told of it."""
    if FLAGS_COLUMN in schema.names:
        schema = schema.remove(schema.get_field_index(FLAGS_COLUMN))
    metadata = dict(schema.metadata or {})
    if HF_METADATA in metadata:
        info = json.loads(metadata[HF_METADATA])
        features = info.get("info", {}).get("features")
        if isinstance(features, dict):
            features[FLAGS_COLUMN] = {"feature": {"dtype": "string", "_type": "Value"},
                                      "_type": "Sequence"}
            metadata[HF_METADATA] = json.dumps(info).encode()
    return schema.append(pa.field(FLAGS_COLUMN, pa.list_(pa.string()))).with_metadata(metadata)
