"""The local annotation page for one annotator's package: a threading HTTP server of the
standard library that serves the page (`annotation_html.PAGE`), the package's images and a
small JSON API:

- ``GET /api/items``: ``{"annotator": str, "items": [PackageItem, ...]}`` in the order shown;
- ``GET /api/state``: ``{"annotator", "done", "total", "next", "answers": {key: Answer}}``,
  ``next`` being the first unanswered item (``total`` when none is left);
- ``POST /api/answer`` with ``{"key", "verdict": "accept"|"reject", "correction"?,
  "comment"?}`` (``Content-Type: application/json``): saved to disk before the reply,
  ``{"answer": Answer, "done", "total", "next"}``; a bad answer gets 400 and ``{"error"}``.

Requiring a JSON content type keeps other web pages out: a browser sends such a POST to
another origin only after a CORS preflight, which this server does not answer.
"""

from __future__ import annotations

import dataclasses
import json
import mimetypes
import re
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from basque_vlm.datagen.annotation_html import PAGE
from basque_vlm.datagen.annotations import IMAGES, AnswerStore, make_answer

MAX_BODY = 1 << 20
_IMAGE_NAME = re.compile(r"[\w-]+(\.\w+)?")  # as `sampling` names the copies: no path


class AnnotationServer(ThreadingHTTPServer):
    """Serves ``store``'s package on ``(host, port)`` (port 0: a free one)."""

    daemon_threads = True

    def __init__(self, store: AnswerStore, host: str, port: int):
        self.store = store
        self.items = {"annotator": store.package.annotator,
                      "items": [item.to_json() for item in store.package.items]}
        try:
            super().__init__((host, port), _Handler)
        except OSError as e:
            raise OSError(f"cannot serve on --host={host} --port={port}: "
                          f"{e.strerror or e}") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class _Refused(Exception):
    """A request refused with an HTTP status and a message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _Handler(BaseHTTPRequestHandler):
    server: AnnotationServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: stderr is for errors, and every answer is on disk anyway."""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode(),
                   "application/json; charset=utf-8")

    def _image(self, name: str) -> None:
        path = self.server.store.package.folder / IMAGES / name
        if not _IMAGE_NAME.fullmatch(name) or not path.is_file():
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no image {name!r}"})
            return
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._send(HTTPStatus.OK, path.read_bytes(), content_type)

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/api/items":
            self._json(HTTPStatus.OK, self.server.items)
        elif path == "/api/state":
            self._json(HTTPStatus.OK, self.server.store.state())
        elif path.startswith(f"/{IMAGES}/"):
            self._image(path.removeprefix(f"/{IMAGES}/"))
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"})

    def _body(self) -> dict[str, Any]:
        """The request's JSON object, or `_Refused`."""
        if self.headers.get_content_type() != "application/json":
            raise _Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        declared = self.headers.get("Content-Length", "")
        if not declared.isdigit():
            raise _Refused(HTTPStatus.LENGTH_REQUIRED, "no Content-Length")
        length = int(declared)
        if length > MAX_BODY:
            raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "answer too large")
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError as e:
            raise _Refused(HTTPStatus.BAD_REQUEST, f"not valid JSON ({e})") from None
        if not isinstance(body, dict):
            raise _Refused(HTTPStatus.BAD_REQUEST, "expected a JSON object")
        return body

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/api/answer":
            self.close_connection = True  # its body is left unread
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {self.path}"})
            return
        store = self.server.store
        try:
            body = self._body()
            answer = make_answer(body.get("key"), body.get("verdict"),
                                 body.get("correction", ""), body.get("comment", ""))
            store.save(answer)
        except _Refused as e:
            self.close_connection = True  # its body may be left unread
            self._json(e.status, {"error": e.message})
            return
        except ValueError as e:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            return
        state = store.state()
        self._json(HTTPStatus.OK, {"answer": dataclasses.asdict(answer),
                                   **{k: state[k] for k in ("done", "total", "next")}})


def serve(store: AnswerStore, host: str, port: int, ready: Callable[[str], None]) -> None:
    """Serves the page until interrupted (Ctrl-C); ``ready`` gets the page's URL once the
    server listens."""
    server = AnnotationServer(store, host, port)
    with server:
        ready(server.url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
