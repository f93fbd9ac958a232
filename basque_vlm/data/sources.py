"""Conversation datasets on disk: LLaVA JSON + image folder → ArrayRecord shards in TFDS format.

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
import io
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from PIL import Image
from tensorflow_datasets.core import dataset_info, example_serializer, file_adapters, naming

from basque_vlm.data.conversation import Conversation, check_images, from_record, read_conversations
from basque_vlm.data.errors import DataError, ErrorKind
from basque_vlm.data.image import open_image

SPLIT = "train"
VERSION = "1.0.0"
KEPT_FORMATS = ("PNG", "JPEG")
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
    """Write the records of ``input_path`` (LLaVA/OpenAI JSON or JSONL) as a dataset at ``out``.

    With ``max_bad_fraction == 0`` the first bad record raises ``BadRecords`` naming it; else bad
    records are skipped and counted, and ``BadRecords`` is raised at the end if they are more than
    that fraction of all records. On failure nothing is left at ``out``. Returns the summary:
    ``written``, ``skipped``, ``skipped_by_kind``, ``records`` (read), ``shards``, ``bytes``, ...
    """
    if not 0 <= max_bad_fraction <= 1:
        raise ValueError(f"--max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
    if not re.fullmatch(r"[a-z]{2,3}", lang):
        raise ValueError(f"--lang must be a language code such as 'eu' or 'en', got {lang!r}")
    input_path, image_root, out = Path(input_path), Path(image_root), Path(out)
    if not input_path.is_file():
        raise FileNotFoundError(f"--input {input_path}: no such file")
    if not image_root.is_dir():
        raise FileNotFoundError(f"--image_root {image_root}: no such folder")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out {out} exists and is not empty")
    name = dataset_name(name or f"{input_path.stem}_{lang}")
    summary: dict[str, Any] = {"name": name, "lang": lang, "out": str(out), "ok": False,
                               "records": 0, "written": 0, "skipped": 0, "skipped_by_kind": {}}
    skipped: Counter[str] = Counter()
    start = time.monotonic()
    report = _Reporter(progress, progress_seconds, start)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    writer = DatasetWriter(tmp, name, shard_bytes)
    try:
        for item in _checked_records(input_path, image_root, lang):
            summary["records"] += 1
            if isinstance(item, DataError):
                if max_bad_fraction == 0:
                    summary["failed_at"] = _describe(item)
                    raise BadRecords(f"{input_path}: {item}", summary)
                skipped[item.kind.value] += 1
                summary["skipped"] += 1
                summary["skipped_by_kind"] = dict(skipped)
            else:
                writer.write(*item)
            report(summary)
        bad = summary["skipped"] / max(summary["records"], 1)
        if bad > max_bad_fraction:
            raise BadRecords(f"{input_path}: {summary['skipped']} of {summary['records']} records "
                             f"are bad ({bad:.2%}), more than --max_bad_fraction="
                             f"{max_bad_fraction}", summary)
        if writer.count == 0:
            raise BadRecords(f"{input_path}: no valid record to write", summary)
        metadata = {"lang": lang, "source": input_path.name, "written": writer.count,
                    "skipped": summary["skipped"], "skipped_by_kind": summary["skipped_by_kind"]}
        shards, size = writer.finish(metadata)
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


def _checked_records(input_path: Path, image_root: Path, lang: str
                     ) -> Iterator[tuple[Conversation, list[bytes]] | DataError]:
    for item in read_conversations(input_path):
        if isinstance(item, DataError):
            yield item
            continue
        try:
            if item.lang is not None and item.lang != lang:
                raise DataError(ErrorKind.MALFORMED, f"record lang {item.lang!r} differs from "
                                f"--lang {lang!r}", record_id=item.id)
            images = [encoded_image(p) for p in check_images(item, image_root)]
            yield dataclasses.replace(item, lang=lang), images
        except DataError as e:
            yield e


def encoded_image(path: Path) -> bytes:
    """The file's bytes when it is PNG or JPEG, else the image as `open_image` gives it (upright,
    RGB) re-encoded as PNG."""
    data = path.read_bytes()
    if Image.open(io.BytesIO(data)).format in KEPT_FORMATS:
        return data
    buf = io.BytesIO()
    open_image(data).save(buf, format="PNG")
    return buf.getvalue()


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
        self._writer.write(data)
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
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _Reporter:
    """Calls ``progress`` with a one-line status at most every ``seconds``."""

    def __init__(self, progress: Callable[[str], None] | None, seconds: float, start: float):
        self.progress, self.seconds, self.start = progress, seconds, start
        self.last = start

    def __call__(self, summary: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.progress is None or now - self.last < self.seconds:
            return
        self.last = now
        rate = summary["records"] / (now - self.start)
        self.progress(f"{summary['name']}: {summary['records']} records read, "
                      f"{summary['skipped']} skipped ({rate:.0f} records/s)")


def _describe(error: DataError) -> dict[str, Any]:
    return {"id": error.record_id, "line": error.line, "kind": error.kind.value,
            "message": error.message}


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
