"""Chat completions from any OpenAI-compatible server, through the official ``openai`` client:
the one HTTP path to model servers (the evaluation judge, API models under test, translation).

``ChatClient(base_url, model)`` talks to one model of one server (``base_url`` as the ``openai``
client takes it, e.g. ``http://host:8000/v1``; a full ``.../chat/completions`` URL works too).
The key comes from an environment variable (``OPENAI_API_KEY`` by default); a local server needs
none, and an unset variable sends the placeholder ``EMPTY``. ``complete(messages, **options)``
returns the reply's text or a ``Failure``; ``complete_all`` runs many conversations on a bounded
thread pool, answers in order.

Retries are ours, not the library's (it is built with ``max_retries=0``): a request that times
out, cannot connect, or gets HTTP 408, 409, 429 or 5xx (the statuses the ``openai`` client itself
retries) is tried again after an exponential backoff with jitter, up to ``max_retries`` times;
any other status and a reply that is not a chat completion fail at once. Every request that fails
in the end comes back as a ``Failure`` naming its kind, never as an exception or a silent blank.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
from PIL import Image

from basque_vlm.runtime import retry

Message = dict[str, Any]  # {"role": ..., "content": str | [content part, ...]}
RETRIED_STATUSES = frozenset({408, 409, 429})  # and every status >= 500
PLACEHOLDER_KEY = "EMPTY"


@dataclasses.dataclass(frozen=True)
class Failure:
    """A request that failed after its retries: ``kind`` is ``http <status>``, ``timeout``,
    ``connection`` or ``malformed reply``; ``attempts`` counts the tries made."""

    kind: str
    detail: str
    attempts: int

    def __str__(self) -> str:
        return f"{self.kind} after {self.attempts} tries ({self.detail})"


def image_data_url(image: Image.Image) -> str:
    """The image as a ``data:image/png;base64,...`` URL (RGB PNG)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def text_part(text: str) -> dict[str, Any]:
    """A text part of a message's content."""
    return {"type": "text", "text": text}


def image_part(image: Image.Image) -> dict[str, Any]:
    """An image part of a message's content (a PNG data URL)."""
    return {"type": "image_url", "image_url": {"url": image_data_url(image)}}


class ChatClient:
    """One model (``model``) behind an OpenAI-compatible chat completions server."""

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 300.0, max_retries: int = 5, backoff: float = 1.0,
                 max_backoff: float = 60.0, max_concurrency: int = 8):
        """``timeout``: seconds per try; ``backoff``: the first wait between tries in seconds,
        doubled after each (at most ``max_backoff``) and jittered; ``max_concurrency``: requests
        in flight at once in ``complete_all``."""
        if max_retries < 0 or backoff < 0 or timeout <= 0 or max_concurrency < 1:
            raise ValueError("need max_retries >= 0, backoff >= 0, timeout > 0 and "
                             f"max_concurrency >= 1; got {max_retries}, {backoff}, {timeout}, "
                             f"{max_concurrency}")
        base_url = base_url.rstrip("/").removesuffix("/chat/completions")
        self.model = model
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.max_concurrency = max_concurrency
        self._client = openai.OpenAI(base_url=base_url, timeout=timeout, max_retries=0,
                                     api_key=os.environ.get(api_key_env) or PLACEHOLDER_KEY)

    def complete(self, messages: Sequence[Message], **options: Any) -> str | Failure:
        """The reply's text to ``messages``; ``options`` go to the request as they are
        (``max_tokens``, ``temperature``, ``stop``, ...)."""
        attempt = 1
        reply, retry = self._try(messages, options, attempt)
        while retry and attempt <= self.max_retries:
            time.sleep(self._wait(attempt))
            attempt += 1
            reply, retry = self._try(messages, options, attempt)
        return reply

    def complete_all(self, conversations: Iterable[Sequence[Message]],
                     progress: Callable[[int], None] | None = None, *,
                     each: Callable[[int, str | Failure], None] | None = None, **options: Any
                     ) -> list[str | Failure]:
        """``complete`` for each conversation, ``max_concurrency`` at a time; the replies in
        the conversations' order. ``conversations`` is read as requests go out, so a generator
        holds only those in flight in memory (images are large); ``progress`` gets the count
        done so far, and ``each`` every reply as it arrives, with its conversation's index
        (both are called one reply at a time)."""
        slots = threading.Semaphore(self.max_concurrency)
        lock, done = threading.Lock(), 0

        def run(index: int, conversation: Sequence[Message]) -> str | Failure:
            nonlocal done
            try:
                reply = self.complete(conversation, **options)
            finally:
                slots.release()
            with lock:  # an error of ``each`` is raised by ``result`` below
                done += 1
                if each is not None:
                    each(index, reply)
                if progress is not None:
                    progress(done)
            return reply

        futures = []
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            for index, conversation in enumerate(conversations):
                slots.acquire()
                futures.append(pool.submit(run, index, conversation))
        return [f.result() for f in futures]

    def _try(self, messages: Sequence[Message], options: dict[str, Any], attempt: int
             ) -> tuple[str | Failure, bool]:
        """One request: the reply or its failure, and whether to try again."""
        try:
            completion = self._client.chat.completions.create(
                model=self.model, messages=list(messages), **options)
        except openai.APIStatusError as e:
            status = e.status_code
            return (Failure(f"http {status}", _first_line(e.message), attempt),
                    status in RETRIED_STATUSES or status >= 500)
        except openai.APITimeoutError as e:
            return Failure("timeout", _first_line(e), attempt), True
        except openai.APIConnectionError as e:
            return Failure("connection", _first_line(e), attempt), True
        except (openai.APIResponseValidationError, ValueError) as e:  # e.g. a body not JSON
            return Failure("malformed reply", _first_line(e), attempt), False
        return _text(completion, attempt), False

    def _wait(self, attempt: int) -> float:
        """Seconds to wait after try ``attempt`` (`retry.backoff_delay`)."""
        return retry.backoff_delay(attempt, self.backoff, self.max_backoff)


def _text(completion: Any, attempts: int) -> str | Failure:
    """The first choice's text (an absent text, e.g. a refusal, is empty), or a malformed-reply
    failure when the body is not a chat completion."""
    try:
        content = completion.choices[0].message.content
    except (AttributeError, IndexError, TypeError) as e:
        return Failure("malformed reply", f"no choices[0].message ({e})", attempts)
    if content is not None and not isinstance(content, str):
        return Failure("malformed reply", f"content is {type(content).__name__}", attempts)
    return content or ""


def _first_line(error: object) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]
