"""An OpenAI-compatible chat completions server on 127.0.0.1 for tests and benchmarks.

It speaks the real protocol (``POST <base>/chat/completions``, JSON in, a ``chat.completion``
object out, errors as ``{"error": {...}}`` with their HTTP status), decodes what it receives
(the messages' text, the images of ``data:`` URLs, ``model``, ``max_tokens``, the
``Authorization`` header) into a ``Request`` kept in ``requests`` for the test to check, and
answers through a responder: a function of the request returning the reply text, or a ``Fault``
to serve instead (an HTTP error, a late reply, a body that is not JSON)::

    with OpenAIStub(table({"What is it?": "a cat"}, faults={"Why?": Fault(status=500, times=2)})
                    ) as stub:
        client = ChatClient(stub.url, "any-model")
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import io
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from PIL import Image

DATA_URL_PREFIX = "data:image/png;base64,"


@dataclasses.dataclass(frozen=True)
class Fault:
    """What the stub serves instead of a plain reply, for the first ``times`` tries of a prompt
    (None: every try): after ``delay_s`` seconds, an HTTP error ``status``, a 200 whose body is
    not JSON (``malformed``), or else the reply ``text``."""

    status: int | None = None
    delay_s: float = 0.0
    malformed: bool = False
    times: int | None = None
    text: str = ""


@dataclasses.dataclass(frozen=True)
class Request:
    """One chat completions request as the stub received it."""

    path: str
    body: dict[str, Any]
    authorization: str | None
    attempt: int      # 1 for the first request with these messages (text and images), 2 next...

    def check(self) -> None:
        """Raises when the request is not a chat completion the stub can read (a model name,
        a user message, every image a PNG data URL)."""
        if not isinstance(self.model, str) or not self.content:
            raise ValueError("a request needs a model name and a non-empty user message")
        for image in self.images:
            image.load()

    @property
    def model(self) -> str:
        return self.body["model"]

    @property
    def max_tokens(self) -> int | None:
        return self.body.get("max_tokens")

    @property
    def system(self) -> str | None:
        """The system message's text, if any."""
        return next((_text(m["content"]) for m in self.body["messages"]
                     if m["role"] == "system"), None)

    @property
    def content(self) -> list[dict[str, Any]]:
        """The last user message's parts (a plain string as one text part)."""
        content = [m for m in self.body["messages"] if m["role"] == "user"][-1]["content"]
        return [{"type": "text", "text": content}] if isinstance(content, str) else content

    @property
    def text(self) -> str:
        """The last user message's text (its text parts joined by newlines)."""
        return _text(self.content)

    @property
    def image_bytes(self) -> list[bytes]:
        """The PNG bytes of the last user message's images, in order."""
        return [_png(p["image_url"]["url"]) for p in self.content if p["type"] == "image_url"]

    @property
    def images(self) -> list[Image.Image]:
        return [Image.open(io.BytesIO(b)) for b in self.image_bytes]


Responder = Callable[[Request], "str | Fault"]


def table(answers: Mapping[str, str], faults: Mapping[str, Fault] | None = None,
          default: str | None = None) -> Responder:
    """A responder that answers by the request's prompt text (``Request.text``): ``faults[text]``
    for its first ``times`` tries, else ``answers[text]``, else ``default`` (None: HTTP 404)."""
    faults = faults or {}

    def respond(request: Request) -> str | Fault:
        fault = faults.get(request.text)
        answer = answers.get(request.text, default)
        if fault is not None and (fault.times is None or request.attempt <= fault.times):
            return dataclasses.replace(fault, text=answer or "")
        return Fault(status=404) if answer is None else answer

    return respond


class OpenAIStub:
    """The server, on a free port of 127.0.0.1 in a thread of this process, while the ``with``
    block runs; ``url`` is its API base as the ``openai`` client takes it."""

    def __init__(self, respond: Responder):
        self.respond = respond
        self.requests: list[Request] = []
        self.max_in_flight = 0  # the most requests it was answering at once
        self._in_flight = 0
        self._tries: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # ends the late replies still waiting
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _receive(self, path: str, body: dict[str, Any], authorization: str | None) -> Request:
        key = hashlib.sha1(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()
        with self._lock:
            self._tries[key] += 1
            request = Request(path, body, authorization, self._tries[key])
            self.requests.append(request)
        return request

    def _reply(self, request: Request) -> tuple[int, bytes]:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            return self._answer(request)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer(self, request: Request) -> tuple[int, bytes]:
        try:
            answer = self.respond(request)
        except Exception as e:  # a request the test did not expect: shown in the error body
            return 500, _error(f"the responder failed: {type(e).__name__}: {e}")
        if isinstance(answer, Fault):
            if answer.delay_s:
                self._stopping.wait(answer.delay_s)
            if answer.status is not None:
                return answer.status, _error(f"injected HTTP {answer.status}")
            if answer.malformed:
                return 200, b'{"id": "chatcmpl-stub", "choices": [{"message": '
            answer = answer.text
        return 200, json.dumps({
            "id": f"chatcmpl-stub-{len(self.requests)}", "object": "chat.completion",
            "created": int(time.time()), "model": request.model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a late reply closes its socket: not a stub error


def _handler(stub: OpenAIStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not self.path.endswith("/chat/completions"):
                self._send(404, _error(f"no route {self.path}"))
                return
            try:
                body = json.loads(raw)
                request = stub._receive(self.path, body, self.headers.get("Authorization"))
                request.check()
            except (ValueError, KeyError, IndexError, TypeError, OSError) as e:
                self._send(400, _error(f"bad request: {type(e).__name__}: {e}"))
                return
            self._send(*stub._reply(request))

        def _send(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def _text(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p["type"] == "text")


def _png(url: str) -> bytes:
    if not url.startswith(DATA_URL_PREFIX):
        raise ValueError(f"not a PNG data URL: {url[:40]}")
    try:
        return base64.b64decode(url[len(DATA_URL_PREFIX):], validate=True)
    except binascii.Error as e:
        raise ValueError(f"bad base64 image: {e}") from None


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "stub_error", "code": None}}
                      ).encode()
