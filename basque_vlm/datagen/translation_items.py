"""The validation items of a translation run: ``OUT_STEM.items.jsonl``, the input of
``python -m basque_vlm.validate sample`` (`datagen.items`).

One item per translated field of each row of a seeded sample of the rows:
``{"benchmark", "id", "field", "source", "target", "image", "row"}``. ``benchmark`` is the
output's name (``OUT_STEM``'s), ``id`` the row's id (its ``id``/``question_id``; ``rowN`` for
a row without one, ``ID@rowN`` for an id seen before), ``row`` its number (from 1). A field with
several strings (a list of answers or choices) shows its distinct strings one per line. Images
are paths relative to the items file: image bytes (parquet image structs) are written to
``OUT_STEM.images/``, one file per distinct image, named by its content's hash, for the sampled
rows only, so the folder stays small; image files are pointed to where they are; URLs are kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from basque_vlm.datagen.translation_files import Commit, Outputs


def sample_rows(total: int, count: int, seed: int = 0) -> set[int]:
    """The row indices (from 0) that get items: ``count`` of ``total`` drawn with ``seed``
    (all of them for ``count`` 0)."""
    if count == 0 or count >= total:
        return set(range(total))
    return set(random.Random(seed).sample(range(total), count))


class Items:
    """The items file of ``outputs``, written row by row and committed at the end."""

    def __init__(self, outputs: Outputs):
        self.outputs = outputs
        self.benchmark = outputs.stem.name
        self._file = Commit(outputs.items)
        self._ids: set[str] = set()

    def add(self, number: int, row_id: str | None, image: Any, base: Path,
            fields: dict[str, Sequence[tuple[str, str]]]) -> None:
        """The items of row ``number``: per field label its (source, translation) pairs;
        ``image`` is the row's image value, a path in it relative to ``base``."""
        item_id = row_id if row_id is not None else f"row{number}"
        if item_id in self._ids:
            item_id = f"{item_id}@row{number}"
        self._ids.add(item_id)
        shown = self._image(image, base)
        for label, pairs in fields.items():
            distinct = dict(pairs)
            self._file.file.write(json.dumps(
                {"benchmark": self.benchmark, "id": item_id, "field": label,
                 "source": "\n".join(distinct), "target": "\n".join(distinct.values()),
                 "image": shown, "row": number}, ensure_ascii=False) + "\n")

    def _image(self, image: Any, base: Path) -> str | None:
        if isinstance(image, list):
            image = image[0] if image else None
        if isinstance(image, dict):
            image = image.get("bytes") or image.get("path")
        if isinstance(image, bytes):
            return self._saved(image)
        if not isinstance(image, str) or not image:
            return None
        if "://" in image:
            return image
        path = base / image
        return os.path.relpath(path, self.outputs.items.parent) if path.is_file() else None

    def _saved(self, data: bytes) -> str | None:
        """The image bytes as a file of the images folder (written once); None where they are
        not an image."""
        try:
            kind = Image.open(io.BytesIO(data)).format or ""
        except Exception:  # PIL raises many types for bytes that are not an image
            return None
        suffix = {"JPEG": ".jpg"}.get(kind, f".{kind.lower()}")
        name = hashlib.sha256(data).hexdigest()[:20] + suffix
        path = self.outputs.images / name
        if not path.exists():
            saving = Commit(path, binary=True)
            saving.file.write(data)
            saving.commit()
        return f"{self.outputs.images.name}/{name}"

    def commit(self) -> None:
        self._file.commit()

    def abort(self) -> None:
        self._file.abort()
