"""Datasets in the formats the Hugging Face hub publishes them, read as a stream of rows.

``open_table(path, split)`` takes:

- a parquet file, or an Arrow file (IPC stream, as ``datasets`` writes them, or IPC file);
- a folder of parquet files, such as a ``snapshot_download(repo_type="dataset")`` folder, laid
  out as ``data/{split}-00000-of-00002.parquet`` (or ``{config}/{split}/0000.parquet``, the
  hub's parquet conversion): ``split`` picks that split's files. A folder holding several splits
  needs one; splits are never mixed;
- a ``datasets`` ``save_to_disk`` folder: one dataset (``state.json`` names its Arrow files), or
  a dataset dict (``dataset_dict.json``, one sub-folder per split).

``Table.rows`` reads the named columns a record batch at a time (``BATCH_ROWS`` rows: image bytes
make rows large), so no more than one batch (one parquet row group) is in memory. A file that is
not readable, or lacks a column, is a ``ValueError`` naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SUFFIXES = (".parquet", ".arrow")
BATCH_ROWS = 64
_SHARD = re.compile(r"(?P<split>.+?)-\d+-of-\d+")


@dataclasses.dataclass(frozen=True)
class Table:
    """The files of one split of a dataset, in order; ``root`` is the folder that relative image
    paths in it refer to (the input folder, or a file input's folder)."""

    files: tuple[Path, ...]
    split: str | None
    root: Path

    def check_columns(self, columns: Sequence[str]) -> None:
        """Raises ``ValueError`` naming the first file that cannot be read or lacks a column."""
        for file in self.files:
            with _reading(file):
                names = _schema(file).names
            missing = [c for c in columns if c not in names]
            if missing:
                raise ValueError(f"{file}: no column {', '.join(map(repr, missing))} (its "
                                 f"columns: {', '.join(names)})")

    def num_rows(self) -> int:
        total = 0
        for file in self.files:
            with _reading(file):
                total += _num_rows(file)
        return total

    def rows(self, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(row, {column: value})`` over all files, ``row`` counted from 0 across them. Values
        are Python values: an image struct is a ``{"bytes", "path"}`` dict, a list a list."""
        row = 0
        for file in self.files:
            with _reading(file):
                batches = _batches(file, list(columns))
            while True:
                with _reading(file, row):
                    batch = next(batches, None)
                if batch is None:
                    break
                for values in batch.to_pylist():
                    yield row, values
                    row += 1


def is_table(path: str | Path) -> bool:
    """Whether ``path`` is read by `open_table` (a folder, or a parquet/Arrow file) rather than
    as LLaVA JSON."""
    path = Path(path)
    return path.is_dir() or path.suffix in SUFFIXES


def open_table(path: str | Path, split: str | None = None) -> Table:
    """The files of ``split`` of the dataset at ``path`` (see the module docstring). Raises
    ``FileNotFoundError`` for a path that holds no dataset and ``ValueError`` for a split that is
    missing, or not chosen where there are several."""
    path = Path(path)
    if path.is_file():
        if split is not None:
            raise ValueError(f"--split={split}: --input {path} is one file, not a folder of "
                             "splits")
        return Table((path,), None, path.parent)
    if not path.is_dir():
        raise FileNotFoundError(f"--input {path}: no such file or folder")
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        chosen = _choose(path, splits, split)
        return dataclasses.replace(open_table(path / chosen), split=chosen, root=path)
    if (path / "state.json").is_file():
        state = json.loads((path / "state.json").read_text())
        if split is not None and split != state.get("_split"):
            raise ValueError(f"--split={split}: {path} holds one dataset (split "
                             f"{state.get('_split')!r})")
        files = tuple(path / f["filename"] for f in state["_data_files"])
        return Table(files, state.get("_split"), path)
    by_split: dict[str, list[Path]] = defaultdict(list)
    for file in sorted(path.rglob("*.parquet")):
        by_split[split_of(file)].append(file)
    if not by_split:
        raise FileNotFoundError(f"--input {path}: no parquet files, nor a save_to_disk dataset "
                                "(state.json or dataset_dict.json)")
    chosen = _choose(path, sorted(by_split), split)
    return Table(tuple(by_split[chosen]), chosen, path)


def split_of(file: Path) -> str:
    """The split a hub parquet file belongs to: ``eu`` for ``eu-00000-of-00002.parquet`` or
    ``eu.parquet``, ``train`` for ``default/train/0000.parquet``."""
    shard = _SHARD.fullmatch(file.stem)
    if shard:
        return shard["split"]
    return file.parent.name if file.stem.isdigit() else file.stem


def _choose(path: Path, splits: Sequence[str], split: str | None) -> str:
    if split is None and len(splits) == 1:
        return splits[0]
    if split is None:
        raise ValueError(f"--input {path} holds the splits {', '.join(splits)}: choose one with "
                         "--split")
    if split not in splits:
        raise ValueError(f"--split={split}: {path} holds the splits {', '.join(splits)}")
    return split


@contextlib.contextmanager
def _reading(file: Path, row: int | None = None) -> Iterator[None]:
    """pyarrow's errors as one ``ValueError`` naming the file (and the row reached)."""
    try:
        yield
    except (pa.ArrowException, OSError) as e:
        where = f" after row {row}" if row is not None else ""
        reason = " ".join(str(e).split())[:300]
        raise ValueError(f"{file}: unreadable {file.suffix.lstrip('.') or 'table'} file{where}: "
                         f"{reason}") from None


def _schema(file: Path) -> pa.Schema:
    if file.suffix == ".arrow":
        return _arrow_reader(file).schema
    return pq.ParquetFile(file).schema_arrow


def _num_rows(file: Path) -> int:
    if file.suffix == ".arrow":
        return sum(batch.num_rows for batch in _arrow_batches(_arrow_reader(file)))
    return pq.ParquetFile(file).metadata.num_rows


def _batches(file: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    if file.suffix == ".arrow":  # ``datasets`` writes batches of up to 1000 rows
        return (batch.select(columns).slice(start, BATCH_ROWS)
                for batch in _arrow_batches(_arrow_reader(file))
                for start in range(0, batch.num_rows, BATCH_ROWS))
    return pq.ParquetFile(file).iter_batches(batch_size=BATCH_ROWS, columns=columns)


def _arrow_reader(file: Path) -> pa.ipc.RecordBatchStreamReader | pa.ipc.RecordBatchFileReader:
    """Memory-mapped, so that a batch's bytes are read only when used."""
    source = pa.memory_map(str(file))
    try:
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        return pa.ipc.open_file(source)


def _arrow_batches(reader: pa.ipc.RecordBatchStreamReader | pa.ipc.RecordBatchFileReader
                   ) -> Iterator[pa.RecordBatch]:
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        return (reader.get_batch(i) for i in range(reader.num_record_batches))
    return iter(reader)
