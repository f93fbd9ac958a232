"""A folder of images downloaded from their URLs (``download_images``), read by ``prepare_data``.

    DIR/images/ab/ab12...ef    one file per URL, named by the SHA-256 of the URL: the bytes as
                               served (their format is in the file, so no extension)
    DIR/manifest.jsonl         one line per outcome, appended and fsynced as it happens:
                               {"url", "file", "sha256", "bytes"} or {"url", "failed": KIND, ...}
    DIR/.partial/              files being written, renamed into images/ once complete
    DIR/.lock                  held by the download that is writing the folder

A file under ``images/`` is complete and verified: it is renamed there only then, so the file is
the truth for a success. For a URL without a file, the manifest's last line for it says why
(``failed`` and its kind), or there is none (not downloaded yet).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MANIFEST = "manifest.jsonl"


class Failure(enum.StrEnum):
    """Why an image is not there; the values key the ``failed_by_kind`` summaries."""

    HTTP_404 = "http_404"          # 404 or 410: gone
    HTTP_4XX = "http_4xx"          # any other client error (403, 429 after its retries, ...)
    HTTP_5XX = "http_5xx"          # a server error, still there after the retries
    TIMEOUT = "timeout"            # no connection, or not the whole body, within the timeout
    CONNECTION = "connection"      # refused, reset, cut short, too many redirects
    BAD_URL = "bad_url"            # not an http(s) URL
    CHECKSUM = "checksum"          # the bytes' SHA-256 is not the one the dataset gives
    NOT_AN_IMAGE = "not_an_image"  # the bytes do not decode as an image


TRANSIENT = frozenset({Failure.HTTP_5XX, Failure.TIMEOUT, Failure.CONNECTION})


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


class ImageStore:
    """The folder ``DIR`` above."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.manifest = self.folder / MANIFEST

    def path(self, url: str) -> Path:
        key = url_key(url)
        return self.folder / "images" / key[:2] / key

    def exists(self) -> bool:
        return self.manifest.is_file()

    def failures(self) -> dict[str, str]:
        """URL → failure kind, for each URL whose last outcome is a failure (memory grows with
        the failures, not with the images). A line cut short by a kill is ignored."""
        failed: dict[str, str] = {}
        if not self.exists():
            return failed
        with open(self.manifest, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "failed" in entry:
                    failed[entry["url"]] = entry["failed"]
                else:
                    failed.pop(entry["url"], None)
        return failed

    @contextlib.contextmanager
    def writing(self) -> Iterator[StoreWriter]:
        """The folder locked for one writer (a second gets ``OSError``), files left half-written
        by a killed run removed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OSError(f"{self.folder}: another download is writing this folder") from None
            shutil.rmtree(self.folder / ".partial", ignore_errors=True)
            (self.folder / ".partial").mkdir()
            writer = StoreWriter(self)
            try:
                yield writer
            finally:
                writer.close()


class StoreWriter:
    """Writes images (any thread) and manifest lines (one thread) of a locked `ImageStore`."""

    def __init__(self, store: ImageStore):
        self.store = store
        self._fd = os.open(store.manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if _ends_mid_line(store.manifest):  # a line cut short by a kill: start a new one
            os.write(self._fd, b"\n")

    def save(self, url: str, data: bytes) -> Path:
        """Writes ``data`` as the image of ``url``: to a temporary name, synced, then renamed."""
        final = self.store.path(url)
        temp = self.store.folder / ".partial" / final.name
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)
        return final

    def log(self, entry: dict[str, Any]) -> None:
        """Appends one manifest line and syncs it to disk."""
        os.write(self._fd, (json.dumps(entry, ensure_ascii=False) + "\n").encode())
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def _ends_mid_line(path: Path) -> bool:
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"
