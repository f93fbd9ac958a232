"""Conversation datasets on disk: LLaVA JSON + image folder, or a hub table (parquet, Arrow: see
`hub_records`) → ArrayRecord shards in TFDS format.

One dataset per (source, language) is one folder, which ``tfds.builder_from_directory`` reads::

    OUT/dataset_info.json  features.json  metadata.json   (metadata: lang, source, counts)
    OUT/NAME-train.array_record-00000-of-0000N ...

Features: ``id``, ``conversation`` (JSON of the normalised messages, ``[{"role", "content"}]``
with ``<image>`` placeholders), ``images`` (the encoded files: PNG/JPEG bytes as they are, other
formats re-encoded as PNG) and ``lang``.

Why not ``GeneratorBasedBuilder.download_and_prepare``: its writer keeps up to 1 GB of serialised
examples in memory and then spills them through ``tf.io.gfile``, which needs TensorFlow. Here each
example goes through TFDS's own feature encoder and example serialiser straight into the current
ArrayRecord shard (``group_size:1``, as TFDS writes them), and TFDS's ``DatasetInfo`` writes the
metadata: the same files, written with one record in memory at a time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from tensorflow_datasets.core import dataset_info, example_serializer, file_adapters, naming

from basque_vlm.data.columns import ColumnMap
from basque_vlm.data.conversation import (Conversation, Item, check_images, from_record,
                                          read_conversations)
from basque_vlm.data.errors import DataError, ErrorKind, Unavailable
from basque_vlm.data.hub_records import HubRecords
from basque_vlm.data.image import stored_bytes
from basque_vlm.runtime.progress import Throttle, rate_and_eta

SPLIT = "train"
VERSION = "1.0.0"
FEATURES = tfds.features.FeaturesDict({
    "id": tfds.features.Text(),
    "conversation": tfds.features.Text(),
    "images": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),
    "lang": tfds.features.Text(),
})


class BadRecords(ValueError):
    """Preparation stopped (a bad record, or too many); ``summary`` says what was read."""

    def __init__(self, message: str, summary: dict[str, Any]):
        super().__init__(message)
        self.summary = summary


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    name: str
    path: str
    lang: str
    size: int


def prepare(input_path: str | os.PathLike, image_root: str | os.PathLike,
            out: str | os.PathLike, lang: str, name: str | None = None,
            max_bad_fraction: float = 0.0, shard_bytes: int = 256 << 20,
            progress: Callable[[str], None] | None = None,
            progress_seconds: float = 10.0) -> dict[str, Any]:
    """Write the records of ``input_path`` (LLaVA/OpenAI JSON or JSONL, image paths relative to
    ``image_root``) as a dataset at ``out``; see `write` for the rest."""
    _check_options(lang, max_bad_fraction)
    input_path, image_root = Path(input_path), Path(image_root)
    if not input_path.is_file():
        raise FileNotFoundError(f"--input {input_path}: no such file")
    if not image_root.is_dir():
        raise FileNotFoundError(f"--image_root {image_root}: no such folder")
    return write(_checked_records(input_path, image_root, lang), out, lang,
                 name or f"{input_path.stem}_{lang}", source=input_path,
                 max_bad_fraction=max_bad_fraction, shard_bytes=shard_bytes, progress=progress,
                 progress_seconds=progress_seconds)


def prepare_table(input_path: str | os.PathLike, out: str | os.PathLike, lang: str,
                  columns: ColumnMap, split: str | None = None,
                  image_root: str | os.PathLike | None = None, caption_prompt: str | None = None,
                  name: str | None = None, max_bad_fraction: float = 0.0,
                  shard_bytes: int = 256 << 20, progress: Callable[[str], None] | None = None,
                  progress_seconds: float = 10.0) -> dict[str, Any]:
    """Write split ``split`` of the hub table at ``input_path`` (parquet, Arrow, a snapshot or
    ``save_to_disk`` folder), its rows mapped by ``columns``, as a dataset at ``out``; images as
    `hub_records` finds them. See `write` for the rest."""
    _check_options(lang, max_bad_fraction)
    records = HubRecords(input_path, columns, lang, split, image_root, caption_prompt)
    input_path = Path(input_path)
    return write(records, out, lang, name or f"{_table_stem(input_path)}_{lang}",
                 source=input_path, metadata={"split": records.table.split},
                 max_bad_fraction=max_bad_fraction, shard_bytes=shard_bytes,
                 progress=progress, progress_seconds=progress_seconds)


def write(items: Iterable[Item], out: str | os.PathLike, lang: str, name: str, *, source: Path,
          metadata: dict[str, Any] | None = None, max_bad_fraction: float = 0.0,
          shard_bytes: int = 256 << 20, progress: Callable[[str], None] | None = None,
          progress_seconds: float = 10.0) -> dict[str, Any]:
    """Write the conversations of ``items`` (read from ``source``) as dataset ``name`` at
    ``out``, which must be absent or empty; ``metadata`` joins the dataset's metadata and the
    summary.

    With ``max_bad_fraction == 0`` the first bad record (a ``DataError``) raises ``BadRecords``
    naming it; else bad records are skipped and counted, and ``BadRecords`` is raised at the end
    if they are more than that fraction of all records. `Unavailable` records (their image could
    not be downloaded) are skipped and counted under their download kind, never as bad. On failure
    nothing is left at ``out``. Returns the summary: ``written``, ``skipped``, ``skipped_by_kind``,
    ``unavailable``, ``records`` (read), ``shards``, ``bytes``, ...
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out {out} exists and is not empty")
    name = dataset_name(name)
    metadata = {"lang": lang, "source": source.name, **(metadata or {})}
    summary: dict[str, Any] = {"name": name, **metadata, "out": str(out), "ok": False,
                               "records": 0, "written": 0, "skipped": 0, "skipped_by_kind": {},
                               "unavailable": 0}
    skipped: Counter[str] = Counter()
    start = time.monotonic()
    report = _Reporter(progress, progress_seconds)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    writer = DatasetWriter(tmp, name, shard_bytes)
    try:
        for item in items:
            summary["records"] += 1
            if isinstance(item, DataError) and max_bad_fraction == 0:
                summary["failed_at"] = _describe(item)
                raise BadRecords(f"{source}: {item}", summary)
            if isinstance(item, (DataError, Unavailable)):
                skipped[str(item.kind)] += 1
                summary["skipped"] += 1
                summary["unavailable"] += isinstance(item, Unavailable)
                summary["skipped_by_kind"] = dict(skipped)
            else:
                writer.write(*item)
            report(summary)
        bad_count = summary["skipped"] - summary["unavailable"]
        bad = bad_count / max(summary["records"], 1)
        if bad > max_bad_fraction:
            raise BadRecords(f"{source}: {bad_count} of {summary['records']} records "
                             f"are bad ({bad:.2%}), more than --max_bad_fraction="
                             f"{max_bad_fraction}", summary)
        if writer.count == 0:
            raise BadRecords(f"{source}: no valid record to write", summary)
        shards, size = writer.finish({**metadata, "written": writer.count,
                                      "skipped": summary["skipped"],
                                      "skipped_by_kind": summary["skipped_by_kind"]})
        os.replace(tmp, out)  # ``out`` is absent or an empty folder
    finally:
        writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
    summary.update(ok=True, written=writer.count, shards=shards, bytes=size,
                   seconds=round(time.monotonic() - start, 3))
    return summary


def dataset_name(name: str) -> str:
    """A TFDS-safe name: lower-case letters, digits and underscores."""
    safe = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    if not safe or not safe[0].isalpha():
        raise ValueError(f"--name {name!r}: a dataset name must start with a letter")
    return safe


def _check_options(lang: str, max_bad_fraction: float) -> None:
    if not 0 <= max_bad_fraction <= 1:
        raise ValueError(f"--max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
    if not re.fullmatch(r"[a-z]{2,3}", lang):
        raise ValueError(f"--lang must be a language code such as 'eu' or 'en', got {lang!r}")


def _table_stem(path: Path) -> str:
    """A hub table's name: a file's stem, a folder's name, or for a Hugging Face cache snapshot
    (``datasets--OWNER--NAME/snapshots/REVISION``) the dataset's NAME."""
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("datasets--"):
        return path.parent.parent.name.split("--")[-1]
    return path.stem if path.is_file() else path.resolve().name


def _checked_records(input_path: Path, image_root: Path, lang: str) -> Iterator[Item]:
    for item in read_conversations(input_path):
        if isinstance(item, DataError):
            yield item
            continue
        try:
            if item.lang is not None and item.lang != lang:
                raise DataError(ErrorKind.MALFORMED, f"record lang {item.lang!r} differs from "
                                f"--lang {lang!r}", record_id=item.id)
            images = [stored_bytes(p.read_bytes()) for p in check_images(item, image_root)]
            yield dataclasses.replace(item, lang=lang), images
        except DataError as e:
            yield e


class DatasetWriter:
    """Streams examples into ArrayRecord shards of about ``shard_bytes`` each."""

    def __init__(self, folder: Path, name: str, shard_bytes: int):
        self.folder, self.name, self.shard_bytes = folder, name, shard_bytes
        self.template = naming.ShardedFileTemplate(
            data_dir=folder, dataset_name=name, split=SPLIT,
            filetype_suffix=file_adapters.FileFormat.ARRAY_RECORD.file_suffix)
        self._serializer = example_serializer.ExampleSerializer(FEATURES.get_serialized_info())
        self._writer = None
        self._shard_lengths: list[int] = []
        self._shard_size = 0
        self.total_bytes = 0
        self.count = 0

    def write(self, conv: Conversation, images: list[bytes]) -> None:
        example = {"id": conv.id, "lang": conv.lang, "images": images,
                   "conversation": json.dumps([{"role": m.role, "content": m.text}
                                               for m in conv.messages], ensure_ascii=False)}
        data = self._serializer.serialize_example(FEATURES.encode_example(example))
        if self._writer is None or self._shard_size >= self.shard_bytes:
            self._open_shard()
        _written(self._writer.write, data)
        self._shard_lengths[-1] += 1
        self._shard_size += len(data)
        self.total_bytes += len(data)
        self.count += 1

    def finish(self, metadata: dict[str, Any]) -> tuple[int, int]:
        """Closes the shards, names them ``-NNNNN-of-MMMMM`` and writes the TFDS metadata."""
        self._close_shard()
        self.folder.mkdir(parents=True, exist_ok=True)
        num = len(self._shard_lengths)
        for i in range(num):
            self._temp_path(i).rename(self.template.sharded_filepath(shard_index=i,
                                                                     num_shards=num))
        info = dataset_info.DatasetInfo(
            builder=dataset_info.DatasetIdentity(name=self.name, version=tfds.core.Version(
                VERSION), data_dir=os.fspath(self.folder), module_name=""),
            features=FEATURES, metadata=tfds.core.MetadataDict(metadata),
            description=f"Conversations ({metadata['lang']}) from {metadata['source']}.")
        info.set_file_format(file_adapters.FileFormat.ARRAY_RECORD)
        info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(
            name=SPLIT, shard_lengths=self._shard_lengths, num_bytes=self.total_bytes,
            filename_template=self.template)]))
        info.write_to_directory(self.folder)
        return num, self.total_bytes

    def abort(self) -> None:
        self._close_shard()

    def _temp_path(self, index: int) -> Path:
        return self.folder / f"{self.name}-{SPLIT}.shard-{index:05d}.tmp"

    def _open_shard(self) -> None:
        self._close_shard()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._temp_path(len(self._shard_lengths))
        self._writer = array_record_module.ArrayRecordWriter(os.fspath(path), "group_size:1")
        self._shard_lengths.append(0)
        self._shard_size = 0

    def _close_shard(self) -> None:
        writer, self._writer = self._writer, None  # closed once, also when closing fails
        if writer is not None:
            _written(writer.close)


def _written(call: Callable[..., None], *args: Any) -> None:
    """``call`` of an ArrayRecord writer, whose failed writes (a full disk) are RuntimeErrors:
    as OSErrors, the CLIs' one-line errors."""
    try:
        call(*args)
    except RuntimeError as e:
        raise OSError(str(e)) from None


class _Reporter:
    """Calls ``progress`` with a one-line status at most every ``seconds``."""

    def __init__(self, progress: Callable[[str], None] | None, seconds: float):
        self.progress, self.throttle = progress, Throttle(seconds)

    def __call__(self, summary: dict[str, Any]) -> None:
        if self.progress is None or not self.throttle.due():
            return
        rate = rate_and_eta(summary["records"], None, self.throttle.elapsed(), "records")
        self.progress(f"{summary['name']}: {summary['records']} records read, "
                      f"{summary['skipped']} skipped ({rate})")


def _describe(error: DataError) -> dict[str, Any]:
    return {"id": error.record_id, "line": error.line, "row": error.row,
            "kind": error.kind.value, "message": error.message}


def source_info(path: str | os.PathLike, name: str | None = None) -> SourceInfo:
    """Language and size of a prepared dataset (metadata only). Raises ValueError for a folder that
    is missing, not a prepared dataset, or empty."""
    path = Path(path)
    if not (path / "dataset_info.json").is_file():
        raise ValueError(f"{path}: not a prepared dataset (no dataset_info.json); "
                         "run `python -m basque_vlm.prepare_data` first")
    info = tfds.builder_from_directory(os.fspath(path)).info
    size = info.splits[SPLIT].num_examples if SPLIT in info.splits else 0
    if size == 0:
        raise ValueError(f"{path}: the dataset is empty")
    lang = info.metadata.get("lang") if info.metadata else None
    if not lang:
        raise ValueError(f"{path}: the dataset metadata has no language ('lang')")
    return SourceInfo(name=name or info.name, path=os.fspath(path), lang=lang, size=size)


class ConversationSource:
    """A Grain random-access source of ``(Conversation, [image bytes])`` over a prepared dataset.

    Opens the files lazily, so it pickles small (Grain sends it to its worker processes).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._size = source_info(path).size
        self._data = None

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> tuple[Conversation, list[bytes]]:
        if self._data is None:
            self._data = tfds.builder_from_directory(self.path).as_data_source(split=SPLIT)
        return decode(self._data[index])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}


def decode(record: dict[str, Any]) -> tuple[Conversation, list[bytes]]:
    """A stored example → its ``Conversation`` (image references ``#0``, ``#1``, ...) and images."""
    images = list(record["images"])
    conv = from_record({"id": _text(record["id"]), "lang": _text(record["lang"]) or None,
                        "messages": json.loads(_text(record["conversation"])),
                        "images": [f"#{i}" for i in range(len(images))]})
    return conv, images


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
