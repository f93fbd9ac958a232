"""The images of a URL dataset (PixMo, CC3M), each fetched once into an `ImageStore` folder.

``download(input, url_column, out, ...)`` reads the URL column (and the SHA-256 column, where the
dataset gives one) of a hub table (`tables.open_table`) a batch at a time, and fetches each
distinct URL (`fetch.Fetcher`) on a pool of ``concurrency`` threads. A URL is skipped when its file
is already there (complete and verified: `image_store`), or when an earlier run recorded its
failure (``retry_failed`` tries the transient ones, ``timeout``, ``connection``, ``http_5xx``,
again). Each outcome is a manifest line, fsynced, written after the image's file is in place: a
run killed at any point and started again fetches nothing that it had kept, and loses nothing.
Failures are counted by kind in the summary, never raised.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from basque_vlm.data import tables
from basque_vlm.data.fetch import Failed, Fetcher
from basque_vlm.data.image_store import TRANSIENT, ImageStore, StoreWriter
from basque_vlm.runtime.progress import Throttle, rate_and_eta

Outcome = tuple[str, Failed | dict[str, Any]]  # a URL, and its failure or manifest entry


def download(input_path: str | os.PathLike, url_column: str, out: str | os.PathLike, *,
             sha256_column: str | None = None, split: str | None = None, concurrency: int = 16,
             timeout: float = 30.0, retries: int = 3, backoff: float = 1.0,
             retry_failed: bool = False, progress: Callable[[str], None] | None = None,
             progress_seconds: float = 10.0) -> dict[str, Any]:
    """Downloads the images of ``input_path``'s ``url_column`` into ``out``; returns the summary:
    ``rows``, ``urls`` (distinct), ``downloaded``, ``already_there``, ``failed`` (these three add
    up to ``urls``), ``failed_by_kind``, ``failed_earlier`` (failures recorded by an earlier run,
    not tried again), ``no_url`` (rows without one), ``bytes`` (downloaded)."""
    table = tables.open_table(input_path, split)
    columns = [url_column, *([sha256_column] if sha256_column else [])]
    table.check_columns(columns)
    fetcher = Fetcher(concurrency, timeout, retries, backoff)
    store = ImageStore(out)
    run = _Run(store, table.num_rows(), progress, progress_seconds)
    with store.writing() as writer:
        earlier = store.failures()
        pool = ThreadPoolExecutor(concurrency)
        pending: set[Future[Outcome]] = set()
        try:
            for _, values in table.rows(columns):
                url = values[url_column]
                if run.is_new(url, earlier, retry_failed):
                    sha256 = values[sha256_column] if sha256_column else None
                    pending.add(pool.submit(_fetch, fetcher, writer, url, sha256))
                if len(pending) >= 2 * concurrency:  # read rows only as fast as images come
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    run.record(writer, done)
                run.report()
            run.record(writer, pending)
        finally:  # on an error or Ctrl-C, the queued fetches are dropped, not waited for
            pool.shutdown(cancel_futures=True)
    return run.summary()


def _fetch(fetcher: Fetcher, writer: StoreWriter, url: str, sha256: str | None) -> Outcome:
    data = fetcher.fetch(url, sha256)
    if isinstance(data, Failed):
        return url, data
    path = writer.save(url, data)
    return url, {"url": url, "file": os.fspath(path.relative_to(writer.store.folder)),
                 "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


class _Run:
    """The counts of one run, and its progress lines."""

    def __init__(self, store: ImageStore, total: int, progress: Callable[[str], None] | None,
                 seconds: float):
        self.store, self.total, self.progress = store, total, progress
        self.throttle = Throttle(seconds)
        self.seen: set[bytes] = set()  # 16 bytes of each URL's hash: CC3M has 3.3M URLs
        self.counts: Counter[str] = Counter()
        self.failed_by_kind: Counter[str] = Counter()

    def is_new(self, url: Any, earlier: dict[str, str], retry_failed: bool) -> bool:
        """Counts the row; True when its URL is to be fetched now."""
        self.counts["rows"] += 1
        if not isinstance(url, str) or not url:
            self.counts["no_url"] += 1
            return False
        key = hashlib.sha256(url.encode()).digest()[:16]
        if key in self.seen:
            return False
        self.seen.add(key)
        self.counts["urls"] += 1
        if self.store.path(url).is_file():
            self.counts["already_there"] += 1
            return False
        kind = earlier.get(url)
        if kind is not None and not (retry_failed and kind in TRANSIENT):
            self._fail(kind)
            self.counts["failed_earlier"] += 1
            return False
        return True

    def record(self, writer: StoreWriter, done: set[Future[Outcome]]) -> None:
        for future in done:
            url, outcome = future.result()
            if isinstance(outcome, Failed):
                writer.log({"url": url, "failed": outcome.kind.value, "error": outcome.detail,
                            "attempts": outcome.attempts})
                self._fail(outcome.kind.value)
            else:
                writer.log(outcome)
                self.counts["downloaded"] += 1
                self.counts["bytes"] += outcome["bytes"]

    def report(self) -> None:
        if self.progress is None or not self.throttle.due():
            return
        c = self.counts
        rate = rate_and_eta(c["rows"], self.total, self.throttle.elapsed(), "rows")
        self.progress(f"download_images: {c['rows']}/{self.total} rows, {c['downloaded']} "
                      f"downloaded, {c['already_there']} already there, {c['failed']} failed "
                      f"({rate})")

    def summary(self) -> dict[str, Any]:
        keys = ("rows", "urls", "downloaded", "already_there", "failed", "failed_earlier",
                "no_url", "bytes")
        return {"out": os.fspath(self.store.folder), **{k: self.counts[k] for k in keys},
                "failed_by_kind": dict(self.failed_by_kind),
                "seconds": round(self.throttle.elapsed(), 3)}

    def _fail(self, kind: str) -> None:
        self.counts["failed"] += 1
        self.failed_by_kind[kind] += 1
