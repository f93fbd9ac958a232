"""An HTTP server of images on 127.0.0.1 for tests: the hosts of a URL dataset, good and bad.

Each path has a `Route`: the bytes to serve, or a status, a redirect, a late answer, a body that
trickles in, or 503s for the first tries. It counts the requests per path (``requests``) and the
most it answered at once (``max_in_flight``)::

    with ImageServer({"/a.png": Route(png), "/gone.png": Route(status=404),
                      "/flaky.png": Route(png, fail_times=2)}) as server:
        url = server.url("/a.png")
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

TRICKLE_CHUNK = 64


@dataclasses.dataclass(frozen=True)
class Route:
    """What a path answers: after ``delay_s``, HTTP ``status`` with ``body`` (sent in
    ``TRICKLE_CHUNK``-byte pieces ``trickle_s`` apart, if set); a 302 to ``redirect``; HTTP 503
    for the first ``fail_times`` requests."""

    body: bytes = b""
    status: int = 200
    delay_s: float = 0.0
    trickle_s: float = 0.0
    fail_times: int = 0
    redirect: str | None = None


class ImageServer:
    """The server, on a free port of 127.0.0.1 in a thread of this process, while the ``with``
    block runs; a path without a route answers 404."""

    def __init__(self, routes: Mapping[str, Route]):
        self.routes = dict(routes)
        self.requests: Counter[str] = Counter()
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # ends the late answers still waiting
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests[handler.path] += 1
            attempt = self.requests[handler.path]
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            self._answer(handler, self.routes.get(handler.path, Route(status=404)), attempt)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer(self, handler: BaseHTTPRequestHandler, route: Route, attempt: int) -> None:
        if route.redirect is not None:
            _send(handler, 302, b"", {"Location": route.redirect})
            return
        if attempt <= route.fail_times:
            _send(handler, 503, b"busy")
            return
        if route.delay_s and self._stopping.wait(route.delay_s):
            return
        if not route.trickle_s:
            _send(handler, route.status, route.body)
            return
        _send(handler, route.status, b"", {"Content-Length": str(len(route.body))})
        for start in range(0, len(route.body), TRICKLE_CHUNK):
            if self._stopping.wait(route.trickle_s):
                return
            handler.wfile.write(route.body[start:start + TRICKLE_CHUNK])
            handler.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a late answer closes its socket: not a server error


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes,
          headers: Mapping[str, str] | None = None) -> None:
    handler.send_response(status)
    headers = {"Content-Length": str(len(body)), **(headers or {})}
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


def _handler(server: ImageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else each kept-alive answer waits for a delayed ACK

        def do_GET(self) -> None:
            server._serve(self)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
