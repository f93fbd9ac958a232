"""Hub tables (parquet, Arrow) → the conversations and encoded images that `sources` writes: the
source beside the LLaVA JSON reader, for data as the hub publishes it.

Rows are read a batch at a time (`tables`), made conversation records by a `ColumnMap` and
checked by `conversation.from_record` (image placeholders placed where LLaVA data has them). The
image column's value, for each image, is one of:

- an image struct ``{"bytes", "path"}`` (the ``datasets`` ``Image`` feature): the bytes, else
  the ``path`` as below;
- bytes (a binary column);
- a path: absolute, or relative to ``image_root`` if given, else to the input folder (a file
  input's folder);
- an ``http(s)://`` URL: its file in the `ImageStore` that ``download_images`` wrote at
  ``image_root``. A URL whose download failed gives `Unavailable` (kind: the download's);
  one that was never downloaded is a ``missing_image`` record;
- a list of these (several images), or null (a text-only record).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from basque_vlm.data import tables
from basque_vlm.data.columns import ColumnMap
from basque_vlm.data.conversation import Conversation, Item, check_image, from_record
from basque_vlm.data.errors import DataError, ErrorKind, Unavailable
from basque_vlm.data.image import stored_bytes
from basque_vlm.data.image_store import ImageStore


class HubRecords:
    """The records of one split of a hub table, as an iterable of `Item`: a conversation with its
    images (encoded as `image.stored_bytes` keeps them), a ``DataError`` naming the row, or
    `Unavailable`. Opening checks that the files are readable and hold the mapped columns."""

    def __init__(self, input_path: str | os.PathLike, columns: ColumnMap, lang: str,
                 split: str | None = None, image_root: str | os.PathLike | None = None,
                 caption_prompt: str | None = None):
        self.table = tables.open_table(input_path, split)
        self.table.check_columns(columns.names)
        self.columns, self.lang = columns, lang
        self.prompt = columns.caption_prompt(lang, caption_prompt)
        if image_root is not None and not Path(image_root).is_dir():
            raise FileNotFoundError(f"--image_root {image_root}: no such folder")
        self.root = Path(image_root) if image_root is not None else self.table.root
        self.store = ImageStore(self.root)
        self._failures: dict[str, str] | None = None  # read at the first URL

    def __iter__(self) -> Iterator[Item]:
        prefix = self.table.split or "row"
        for row, values in self.table.rows(self.columns.names):
            record_id = self.columns.record_id(values, f"{prefix}-{row}")
            try:
                yield self._item(values, record_id)
            except DataError as e:
                yield DataError(e.kind, e.message, record_id=record_id, row=row)

    def _item(self, values: Mapping[str, Any], record_id: str
              ) -> tuple[Conversation, list[bytes]] | Unavailable:
        refs = _image_refs(self.columns.image(values), self.columns.columns.get("image"))
        record = self.columns.record(values, record_id, len(refs), self.prompt)
        conv = dataclasses.replace(from_record(record, place_images=True), lang=self.lang)
        images = []
        for ref in refs:
            loaded = self._load(ref, record_id)
            if isinstance(loaded, Unavailable):
                return loaded
            data, name = loaded
            check_image(data, record_id, name)
            images.append(stored_bytes(data))
        return conv, images

    def _load(self, ref: bytes | str, record_id: str) -> tuple[bytes, str] | Unavailable:
        """The encoded image of one reference, and a name for it in messages."""
        if isinstance(ref, bytes):
            return ref, f"in column {self.columns.columns['image']!r}"
        if ref.startswith(("http://", "https://")):
            return self._downloaded(ref, record_id)
        path = Path(ref) if Path(ref).is_absolute() else self.root / ref
        if not path.is_file():
            raise DataError(ErrorKind.MISSING_IMAGE, f"image file not found: {path}")
        return path.read_bytes(), str(path)

    def _downloaded(self, url: str, record_id: str) -> tuple[bytes, str] | Unavailable:
        if not self.store.exists():
            raise DataError(ErrorKind.MISSING_IMAGE, f"image {url} is not downloaded: "
                            f"{self.root} is not a download_images folder (--image_root)")
        path = self.store.path(url)
        if path.is_file():
            return path.read_bytes(), url
        if self._failures is None:
            self._failures = self.store.failures()
        if url in self._failures:
            return Unavailable(record_id, self._failures[url])
        raise DataError(ErrorKind.MISSING_IMAGE, f"image {url} is not downloaded (yet) in "
                        f"{self.root}")


def _image_refs(value: Any, column: str | None) -> list[bytes | str]:
    """The image column's value → one reference (bytes, or a path or URL) per image."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    refs = []
    for item in items:
        if isinstance(item, Mapping):
            item = item.get("bytes") or item.get("path")
        if not isinstance(item, (bytes, str)) or not item:
            raise DataError(ErrorKind.MALFORMED, f"column {column!r}: an image must be bytes, a "
                            "path, a URL or a {bytes, path} struct")
        refs.append(item)
    return refs
