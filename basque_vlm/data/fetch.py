"""Fetching one image by URL: HTTP through ``urllib3``, retries, and the checks on what came back.

Why ``urllib3`` and not ``img2dataset`` (the tool the field uses): img2dataset resumes only whole
shards (a killed run fetches its unfinished shard again), reports failures as free-text messages,
and brings wandb, OpenCV, albumentations and pandas with it. ``urllib3`` (already installed, under
``requests``) gives thread-safe connection pools, per-operation timeouts and redirects; the retries
are ours, so that every failure gets one kind (`image_store.Failure`).

A try fails as ``timeout`` when the server does not answer, or the whole body does not arrive,
within ``timeout`` seconds; ``connection`` when it cannot connect or the connection breaks;
``http_404`` (404, 410), ``http_5xx``, ``http_4xx`` by status. ``timeout``, ``connection``,
``http_5xx`` and HTTP 408/429 are tried again after a backoff (`retry.backoff_delay`), up to
``retries`` more times. The body must then hash to the dataset's SHA-256 (``checksum``) and decode
as an image (``not_an_image``): both are final.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import urllib3
from urllib3.exceptions import (HTTPError, LocationValueError, MaxRetryError,
                                NewConnectionError, ResponseError)
from urllib3.exceptions import TimeoutError as UrllibTimeout

from basque_vlm.data.image import open_image
from basque_vlm.data.image_store import Failure
from basque_vlm.runtime import retry

RETRIED_STATUSES = frozenset({408, 429})  # and every status >= 500
MAX_REDIRECTS = 5
CHUNK = 1 << 16
MAX_BACKOFF = 60.0
USER_AGENT = "basque_vlm (image download)"


@dataclasses.dataclass(frozen=True)
class Failed:
    """A URL whose image could not be had; ``attempts`` counts the tries made."""

    kind: Failure
    detail: str
    attempts: int = 1


class Fetcher:
    """Fetches images, from any number of threads, over pooled connections."""

    def __init__(self, concurrency: int, timeout: float, retries: int, backoff: float):
        if concurrency < 1 or timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError("need --concurrency >= 1, --timeout > 0, --retries >= 0 and "
                             f"--backoff >= 0; got {concurrency}, {timeout}, {retries}, {backoff}")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._http = urllib3.PoolManager(
            maxsize=concurrency, headers={"User-Agent": USER_AGENT},
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0,
                                  redirect=MAX_REDIRECTS))

    def fetch(self, url: str, sha256: str | None = None) -> bytes | Failed:
        """The image's bytes, checked (``sha256``: the expected hex digest), or why not."""
        attempt = 1
        result, again = self._try(url)
        while again and attempt <= self.retries:
            time.sleep(retry.backoff_delay(attempt, self.backoff, MAX_BACKOFF))
            attempt += 1
            result, again = self._try(url)
        if isinstance(result, Failed):
            return dataclasses.replace(result, attempts=attempt)
        return check(result, sha256)

    def _try(self, url: str) -> tuple[bytes | Failed, bool]:
        """One request: the body or the failure, and whether to try again."""
        try:
            parsed = urllib3.util.parse_url(url)
        except LocationValueError as e:
            return Failed(Failure.BAD_URL, _first_line(e)), False
        if parsed.scheme not in ("http", "https") or not parsed.host:
            return Failed(Failure.BAD_URL, f"not an http(s) URL: {url[:100]}"), False
        try:
            return self._get(url, time.monotonic() + self.timeout)
        except (MaxRetryError, HTTPError) as e:
            reason = e.reason if isinstance(e, MaxRetryError) else e
            # NewConnectionError (refused, no such host) subclasses ConnectTimeoutError
            if isinstance(reason, UrllibTimeout) and not isinstance(reason, NewConnectionError):
                return Failed(Failure.TIMEOUT, _first_line(reason)), True
            looped = isinstance(reason, ResponseError)  # too many redirects: would loop again
            return Failed(Failure.CONNECTION, _first_line(reason)), not looped
        except TimeoutError as e:  # the deadline for the whole body (`_read`)
            return Failed(Failure.TIMEOUT, str(e)), True

    def _get(self, url: str, deadline: float) -> tuple[bytes | Failed, bool]:
        """One GET: the body (or the status's failure), and whether to try again."""
        response = self._http.request("GET", url, preload_content=False)
        done = False
        try:
            if response.status >= 400:
                response.drain_conn()
                outcome = _status_failure(response.status)
            else:
                outcome = _read(response, deadline), False
            done = True
            return outcome
        finally:
            if not done:  # a body cut short: its connection cannot be used again
                response.close()
            response.release_conn()


def check(data: bytes, sha256: str | None) -> bytes | Failed:
    """``data`` if it hashes to ``sha256`` (when given) and decodes as an image."""
    digest, expected = hashlib.sha256(data).hexdigest(), (sha256 or "").strip().lower()
    if expected and digest != expected:
        return Failed(Failure.CHECKSUM, f"SHA-256 {digest} is not the expected {expected}")
    try:
        open_image(data)
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return Failed(Failure.NOT_AN_IMAGE, _first_line(f"{type(e).__name__}: {e}"))
    return data


def _read(response: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
    """The whole body, or ``TimeoutError`` once ``deadline`` passes (a server that trickles
    bytes never trips the per-read timeout)."""
    chunks = []
    for chunk in response.stream(CHUNK):
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise TimeoutError("the body did not arrive within the timeout")
    return b"".join(chunks)


def _status_failure(status: int) -> tuple[Failed, bool]:
    if status in (404, 410):
        return Failed(Failure.HTTP_404, f"HTTP {status}"), False
    if status >= 500:
        return Failed(Failure.HTTP_5XX, f"HTTP {status}"), True
    return Failed(Failure.HTTP_4XX, f"HTTP {status}"), status in RETRIED_STATUSES


def _first_line(error: object) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]
