"""Cloud Storage on 127.0.0.1 for the tests: gcp-storage-emulator's JSON API, with what gcsfs,
tensorstore's ``gcs`` driver and Orbax need of it, and faults on request.

    server = GcsServer.start()    # a subprocess on a free port, one in-memory bucket
    env = server.env              # STORAGE_EMULATOR_HOST (gcsfs, google-cloud-storage),
                                  # TENSORSTORE_GCS_HTTP_URL (tensorstore), a test token
    server.fail(share=0.5, seconds=3)       # 503 for half of the requests for 3 s (drop=True:
                                            # their connections closed unanswered instead)
    server.hold(r"POST .*/commit_success")  # requests that match ("METHOD /path?query",
                                            # unquoted) wait; `release` drops them unanswered
    server.names("workdirs/run/")           # the objects under a prefix
    server.stop()

What the emulator lacks, added here (``Handler``), as Cloud Storage does it:

- preconditions: ``ifGenerationMatch`` (412 Precondition Failed; ``0`` means "no live object")
  and ``ifGenerationNotMatch`` (304 Not Modified) on reads, uploads and deletes. Tensorstore's
  writes are all conditional; without these, two writers could both "win";
- ``x-goog-generation`` on media downloads: tensorstore reads an object's generation there
  (without it, every read comes back as generation 0: ``Malformed StorageGeneration``);
- ``startOffset`` / ``endOffset`` on listings (tensorstore lists key ranges that way);
- empty uploads (the emulator's media upload fails on a zero-length body);
- many connections at once (tensorstore opens up to 32): a threaded server, one request at a
  time inside the emulator's storage, which is not thread-safe.

Run as a script it serves until killed and prints its port: ``python tests/gcs_server.py``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from functools import partial
from http import HTTPStatus, server

from gcp_storage_emulator import server as emulator
from gcp_storage_emulator.handlers import buckets, objects
from gcp_storage_emulator.storage import Storage

BUCKET = "bucket"
CONTROL = "/_test"  # the tests' own endpoints: never failed, never held
STARTUP_S = 30


class MemoryStorage(Storage):
    """The emulator's in-memory storage, minus its metadata file: rewritten whole (JSON of every
    object) after each write so that a disk store survives restarts, which memory cannot."""

    def __init__(self):
        super().__init__(use_memory_fs=True)

    def _write_config_to_file(self) -> None:
        pass


@dataclasses.dataclass
class Faults:
    """Requests to fail: ``share`` of them (every 1/share-th, deterministically) until ``until``
    (time.monotonic), each answered with ``status``, or its connection closed when ``drop``."""

    share: float = 0.0
    until: float = 0.0
    status: int = 503
    drop: bool = False
    seen: float = 0.0
    failed: int = 0

    def due(self) -> bool:
        if self.share <= 0 or time.monotonic() >= self.until:
            return False
        before = int(self.seen)
        self.seen += self.share
        if int(self.seen) == before:
            return False
        self.failed += 1
        return True


class State:
    """What the tests steer: faults, held requests, counters."""

    def __init__(self):
        self.lock = threading.Lock()       # the emulator's storage, one request at a time
        self.faults = Faults()
        self.hold_pattern: re.Pattern | None = None
        self.held: list[str] = []
        self.released = threading.Event()
        self.requests = 0


class Handler(emulator.RequestHandler):
    """The emulator's handler with Cloud Storage's preconditions, generations and offsets."""

    def __init__(self, storage: Storage, state: State, *args, **kwargs):
        self.state = state
        self.extra_headers: dict[str, str] = {}
        super().__init__(storage, *args, **kwargs)

    def do_GET(self):  # noqa: N802 (http.server's names)
        self.serve("GET")

    def do_POST(self):  # noqa: N802
        self.serve("POST")

    def do_PUT(self):  # noqa: N802
        self.serve("PUT")

    def do_DELETE(self):  # noqa: N802
        self.serve("DELETE")

    def do_PATCH(self):  # noqa: N802
        self.serve("PATCH")

    def end_headers(self):
        for key, value in self.extra_headers.items():
            self.send_header(key, value)
        super().end_headers()

    def serve(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith(CONTROL):
            return self.control(method, url.path[len(CONTROL):])
        with self.state.lock:
            self.state.requests += 1
            failing = self.state.faults.due()
            drop = self.state.faults.drop
        if failing:
            return self.fail(drop)
        if self.held(f"{method} {urllib.parse.unquote(self.path)}"):
            return self.fail(drop=True)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        with self.state.lock:
            if not self.conditional(method, url.path, query):
                emulator.Router(self).handle(method)

    def fail(self, drop: bool) -> None:
        if drop:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.send_json(self.state.faults.status, {"error": {
            "code": self.state.faults.status, "message": "injected fault"}})

    def held(self, request: str) -> bool:
        """Whether ``request`` matched the hold pattern: then it was kept waiting until released,
        and is dropped unanswered (its client was killed meanwhile, or is told to retry)."""
        pattern = self.state.hold_pattern
        if pattern is None or not pattern.search(request):
            return False
        with self.state.lock:
            self.state.held.append(request)
        self.state.released.wait()
        return True

    def conditional(self, method: str, path: str, query: Mapping[str, str]) -> bool:
        """Answers what the emulator does not (see the module docstring); False to let it."""
        found = re.fullmatch(r"(/upload)?/storage/v1/b/([^/]+)/o(?:/(.+))?", path)
        if not found:
            return False
        upload, bucket, name = found.groups()
        name = urllib.parse.unquote(name) if name else query.get("name")
        if name is None:
            return method == "GET" and self.list_range(bucket, query)
        live = self.storage.objects.get(bucket, {}).get(name)
        generation = int(live["generation"]) if live else 0
        match, not_match = query.get("ifGenerationMatch"), query.get("ifGenerationNotMatch")
        if match is not None and int(match) != generation:
            self.send_json(HTTPStatus.PRECONDITION_FAILED, {"error": {
                "code": 412, "message": "At least one of the pre-conditions you specified did "
                                        "not hold."}})
            return True
        if live and not_match is not None and int(not_match) == generation:
            self.send_json(HTTPStatus.NOT_MODIFIED, None)
            return True
        if method == "POST" and upload and query.get("uploadType") == "media":
            self.upload(bucket, name)
            return True
        if method == "GET" and live:
            self.extra_headers = {"x-goog-generation": live["generation"],
                                  "x-goog-metageneration": live["metageneration"]}
        return False

    def upload(self, bucket: str, name: str) -> None:
        """A media upload (the emulator's own fails on an empty body)."""
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if bucket not in self.storage.buckets:
            return self.send_json(HTTPStatus.NOT_FOUND, {"error": {"code": 404}})
        base = f"http://{self.headers.get('Host')}"
        obj = objects._make_object_resource(base, bucket, name,
                                            self.headers.get("Content-Type"), str(len(data)))
        obj = objects._checksums(data, obj)
        self.storage.create_file(bucket, name, data, obj)
        self.send_json(HTTPStatus.OK, obj)

    def list_range(self, bucket: str, query: Mapping[str, str]) -> bool:
        """A listing with ``startOffset``/``endOffset``; False without them (the emulator's)."""
        start, end = query.get("startOffset"), query.get("endOffset")
        if start is None and end is None:
            return False
        if bucket not in self.storage.buckets:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": {"code": 404}})
            return True
        prefix = query.get("prefix", "")
        items = [obj for name, obj in sorted(self.storage.objects[bucket].items())
                 if name.startswith(prefix) and (start is None or name >= start)
                 and (end is None or name < end)]
        self.send_json(HTTPStatus.OK, {"kind": "storage#objects", "items": items})
        return True

    def send_json(self, status: int, body: object) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def control(self, method: str, command: str) -> None:
        """``POST /_test/faults`` {share, seconds, status, drop}; ``POST /_test/hold``
        {pattern}; ``POST /_test/release``; ``GET /_test/state``; ``POST /_test/wipe``."""
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        state = self.state
        with state.lock:
            if command == "/faults":
                state.faults = Faults(share=body["share"],
                                      until=time.monotonic() + body["seconds"],
                                      status=body.get("status", 503),
                                      drop=body.get("drop", False))
            elif command == "/hold":
                state.released.clear()
                state.held = []
                state.hold_pattern = re.compile(body["pattern"])
            elif command == "/release":
                state.hold_pattern = None
                state.released.set()
            elif command == "/wipe":
                self.storage.wipe(keep_buckets=True)
            elif command != "/state":
                return self.send_json(HTTPStatus.NOT_FOUND, {"error": command})
            self.send_json(HTTPStatus.OK, {"requests": state.requests,
                                           "failed": state.faults.failed,
                                           "held": state.held})

    def log_message(self, format, *args):
        pass


class ThreadingServer(socketserver.ThreadingMixIn, server.HTTPServer):
    daemon_threads = True
    request_queue_size = 256  # tensorstore connects many at once

    def handle_error(self, request, client_address):
        pass  # a client gone (killed, or its connection dropped on purpose)


def make_server(port: int = 0, bucket: str = BUCKET) -> ThreadingServer:
    storage = MemoryStorage()
    buckets.create_bucket(bucket, storage)
    # no soft delete: a deleted object is gone, as in a bucket with soft delete turned off
    storage.buckets[bucket]["softDeletePolicy"] = {"retentionDurationSeconds": "0"}
    return ThreadingServer(("127.0.0.1", port), partial(Handler, storage, State()))


@dataclasses.dataclass
class GcsServer:
    """The server in a subprocess, and how the tests steer it."""

    process: subprocess.Popen
    port: int

    @classmethod
    def start(cls) -> GcsServer:
        process = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE,
                                   text=True)
        line = process.stdout.readline()
        if not line.strip().isdigit():
            process.kill()
            raise RuntimeError(f"the GCS server did not start: {line!r}")
        return cls(process, int(line))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The environment that points every client of the project's stack here."""
        return {"STORAGE_EMULATOR_HOST": self.url,          # gcsfs, google-cloud-storage
                "TENSORSTORE_GCS_HTTP_URL": self.url,       # tensorstore's gcs driver
                "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",    # tensorstore: no credential search
                "NO_GCE_CHECK": "true",                     # google-auth: no metadata server
                "GOOGLE_CLOUD_PROJECT": "test",
                # gcsfs asks the Storage Control API (gRPC) for the bucket's layout; no
                # emulator serves it: the plain JSON-API filesystem
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

    def command(self, name: str, **body: object) -> dict:
        request = urllib.request.Request(f"{self.url}{CONTROL}/{name}",
                                         data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def names(self, prefix: str = "") -> list[str]:
        """The objects of the bucket whose names start with ``prefix`` (a JSON API listing)."""
        query = urllib.parse.urlencode({"prefix": prefix})
        with urllib.request.urlopen(f"{self.url}/storage/v1/b/{BUCKET}/o?{query}",
                                    timeout=10) as response:
            return [item["name"] for item in json.loads(response.read())["items"]]

    def fail(self, share: float, seconds: float, status: int = 503, drop: bool = False
             ) -> None:
        self.command("faults", share=share, seconds=seconds, status=status, drop=drop)

    def hold(self, pattern: str) -> None:
        self.command("hold", pattern=pattern)

    def held(self) -> list[str]:
        return self.command("state")["held"]

    def release(self) -> None:
        self.command("release")

    def state(self) -> dict:
        return self.command("state")

    def reset(self) -> None:
        """No faults, nothing held, no objects (the bucket stays)."""
        self.fail(0.0, 0.0)
        self.release()
        self.command("wipe")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def main() -> None:
    logging.disable(logging.CRITICAL)  # the emulator logs every missing object as an error
    httpd = make_server(int(os.environ.get("PORT", "0")))
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
