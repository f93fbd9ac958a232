"""The journal of finished translations: what a rerun of a killed or failed run does not ask
for again.

``OUT_STEM.journal.jsonl`` holds a header line, ``{"journal": FORMAT, "settings": {...}}`` (the
languages, the model and a hash of the prompt), then one line per translated string,
``{"key": ..., "text": ...}``: ``key`` hashes the string with its field group (`key`), ``text``
is the model's translation. Lines are only appended, each written and flushed as its translation
arrives (so a ``kill -9`` loses none) and synced to disk at least every ``SYNC_SECONDS`` and at
the end (so a power cut loses at most the last moments). A last line cut short by a kill is
dropped when the journal is opened again. Failed requests are not journaled: a rerun asks again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

FORMAT = "basque_vlm.translate/1"
SYNC_SECONDS = 0.5


def key(group: str, text: str) -> str:
    """The journal key of ``text`` in the field group ``group``."""
    return hashlib.sha256(f"{group}\x1f{text}".encode()).hexdigest()[:32]


class Journal:
    """The journal at ``path``, opened for appending; ``done`` maps the finished keys to their
    translations. An existing journal made with other ``settings`` raises ValueError."""

    def __init__(self, path: Path, settings: dict[str, Any]):
        self.path = path
        self.done: dict[str, str] = {}
        self._last_sync = time.monotonic()
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists() or self._read(settings)
        self._file = open(path, "a", encoding="utf-8")
        if fresh:
            self._write({"journal": FORMAT, "settings": settings})

    def _read(self, settings: dict[str, Any]) -> bool:
        """Loads the finished keys; True when the journal holds no complete header yet."""
        with open(self.path, "rb") as f:
            data = f.read()
        complete = data[:data.rfind(b"\n") + 1]
        if len(complete) < len(data):  # a line cut short by a kill
            with open(self.path, "r+b") as f:
                f.truncate(len(complete))
        lines = complete.decode("utf-8").splitlines()
        if not lines:
            return True
        header = self._parse(lines[0], 1)
        if header.get("journal") != FORMAT:
            raise ValueError(f"{self.path}: not a translation journal (line 1 is not a "
                             f"{FORMAT} header)")
        if header.get("settings") != settings:
            raise ValueError(f"{self.path} was made with other settings "
                             f"({_differences(header.get('settings'), settings)}); delete it to "
                             "start over, or write to another --out")
        for number, line in enumerate(lines[1:], 2):
            entry = self._parse(line, number)
            if not isinstance(entry.get("key"), str) or not isinstance(entry.get("text"), str):
                raise ValueError(f"{self.path} line {number}: expected "
                                 '{"key": str, "text": str}')
            self.done[entry["key"]] = entry["text"]
        return False

    def _parse(self, line: str, number: int) -> dict[str, Any]:
        try:
            value = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{self.path} line {number}: not valid JSON ({e})") from None
        if not isinstance(value, dict):
            raise ValueError(f"{self.path} line {number}: not a JSON object")
        return value

    def add(self, entry_key: str, text: str) -> None:
        """Records a finished translation."""
        self.done[entry_key] = text
        self._write({"key": entry_key, "text": text})

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        if time.monotonic() - self._last_sync >= SYNC_SECONDS:
            self._sync()

    def _sync(self) -> None:
        os.fsync(self._file.fileno())
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self._sync()
            self._file.close()


def _differences(old: Any, new: dict[str, Any]) -> str:
    if not isinstance(old, dict):
        return "no settings recorded"
    changed = [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k)]
    return "; ".join(changed)
