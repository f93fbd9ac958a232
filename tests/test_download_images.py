"""download_images: URL images fetched once each from a real local server, verified, failures
recorded by kind; a run killed with SIGKILL and started again fetches nothing twice, loses
nothing."""

import hashlib
import io
import json
import signal
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from basque_vlm.data import download
from basque_vlm.data.image_store import ImageStore
from basque_vlm.testing.image_server import ImageServer, Route
from run_cli import assert_one_line_error, finish, run, run_all, start

FAST = {"concurrency": 4, "timeout": 0.3, "retries": 2, "backoff": 0.01}


def encoded(colour, fmt="PNG", size=(24, 16)):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def sha(data):
    return hashlib.sha256(data).hexdigest()


PNG, JPEG = encoded((200, 10, 10)), encoded((10, 10, 200), "JPEG")
ROUTES = {
    "/red.png": Route(PNG),
    "/blue.jpg": Route(JPEG),
    "/flaky.png": Route(PNG, fail_times=2),           # 503, 503, then the image
    "/moved.png": Route(redirect="/blue.jpg"),
    "/loop.png": Route(redirect="/loop.png"),
    "/gone.png": Route(status=404),
    "/forbidden.png": Route(status=403),
    "/broken.png": Route(status=500),
    "/slow.png": Route(PNG, delay_s=3),               # no answer within the timeout
    "/trickle.png": Route(PNG, trickle_s=0.2),        # answers, but the body takes too long
    "/corrupt.png": Route(PNG[:40] + b"\0" * 40),
    "/wrong.png": Route(PNG),                          # served with another checksum
}
# path → (kind, expected requests) for the URLs that fail; the others succeed.
FAILING = {"/gone.png": ("http_404", 1), "/forbidden.png": ("http_4xx", 1),
           "/broken.png": ("http_5xx", 3), "/slow.png": ("timeout", 3),
           "/trickle.png": ("timeout", 3), "/corrupt.png": ("not_an_image", 1),
           "/wrong.png": ("checksum", 1), "/loop.png": ("connection", 6)}  # 1 + 5 redirects


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def url_rows(server, paths):
    rows = [{"image_url": server.url(p), "image_sha256": sha(PNG) if p.endswith(".png") else None}
            for p in paths]
    for row in rows:
        if row["image_url"].endswith("/wrong.png"):
            row["image_sha256"] = sha(b"something else")
        if row["image_url"].endswith(("/corrupt.png", "/moved.png")):
            row["image_sha256"] = None
    return rows


@pytest.fixture
def server():
    with ImageServer(ROUTES) as s:
        yield s


def fetch_all(table, out, **options):
    return download.download(table, "image_url", out, sha256_column="image_sha256",
                             **{**FAST, **options})


def test_each_url_once_verified_failures_by_kind(server, tmp_path):
    paths = list(ROUTES)
    rows = url_rows(server, paths) + url_rows(server, ["/red.png"])  # a repeated URL
    refused = "http://127.0.0.1:1/closed.png"  # nothing listens on port 1
    rows += [{"image_url": None, "image_sha256": None},
             {"image_url": "ftp://example.invalid/a.png", "image_sha256": None},
             {"image_url": refused, "image_sha256": None}]
    table = write_parquet(tmp_path / "train-00000-of-00001.parquet", rows)
    lines = []
    summary = fetch_all(table, tmp_path / "out", progress=lines.append, progress_seconds=0)

    kinds = [kind for kind, _ in FAILING.values()] + ["bad_url", "connection"]
    assert summary["rows"] == len(rows) and summary["no_url"] == 1
    assert summary["urls"] == len(ROUTES) + 2
    assert summary["downloaded"] == 4 and summary["already_there"] == 0
    assert summary["failed"] == len(kinds) and summary["failed_earlier"] == 0
    assert summary["failed_by_kind"] == {k: kinds.count(k) for k in kinds}
    assert lines and "ETA" in lines[-1] and "rows/s" in lines[-1]
    for path, (_, tries) in FAILING.items():
        assert server.requests[path] == tries, path
    assert server.requests["/red.png"] == 1 and server.requests["/flaky.png"] == 3

    store = ImageStore(tmp_path / "out")
    for path, data in [("/red.png", PNG), ("/blue.jpg", JPEG), ("/flaky.png", PNG),
                       ("/moved.png", JPEG)]:
        assert store.path(server.url(path)).read_bytes() == data, path
    for path in FAILING:
        assert not store.path(server.url(path)).exists()
    assert store.failures() == {server.url(p): kind for p, (kind, _) in FAILING.items()} | {
        "ftp://example.invalid/a.png": "bad_url", refused: "connection"}
    entries = [json.loads(line) for line in store.manifest.read_text().splitlines()]
    assert next(e for e in entries if e["url"] == refused)["attempts"] == 3
    ok = {e["url"]: e for e in entries if "failed" not in e}
    assert ok[server.url("/red.png")]["sha256"] == sha(PNG)
    assert ok[server.url("/red.png")]["bytes"] == len(PNG)
    assert len(entries) == summary["downloaded"] + summary["failed"]


def test_a_rerun_fetches_nothing_and_retries_only_transient_failures(server, tmp_path):
    paths = ["/red.png", "/gone.png", "/broken.png", "/wrong.png"]
    table = write_parquet(tmp_path / "t.parquet", url_rows(server, paths))
    first = fetch_all(table, tmp_path / "out", retries=0)
    assert first["downloaded"] == 1 and first["failed"] == 3

    server.requests.clear()
    again = fetch_all(table, tmp_path / "out", retries=0)
    assert sum(server.requests.values()) == 0
    assert again["already_there"] == 1 and again["downloaded"] == 0
    assert again["failed"] == again["failed_earlier"] == 3
    assert again["failed_by_kind"] == first["failed_by_kind"]

    retried = fetch_all(table, tmp_path / "out", retries=0, retry_failed=True)
    assert dict(server.requests) == {"/broken.png": 1}  # 404 and checksum are final
    assert retried["failed_earlier"] == 2 and retried["failed"] == 3


def test_requests_in_flight_stay_within_the_concurrency(tmp_path):
    routes = {f"/{i}.png": Route(PNG, delay_s=0.1) for i in range(8)}
    with ImageServer(routes) as server:
        table = write_parquet(tmp_path / "t.parquet", url_rows(server, list(routes)))
        summary = fetch_all(table, tmp_path / "out", concurrency=2)
        assert summary["downloaded"] == 8
        assert server.max_in_flight == 2


def test_sigkill_then_rerun_fetches_nothing_twice_and_loses_nothing(tmp_path):
    routes = {f"/{i}.png": Route(encoded((i, 100, 200)), delay_s=0.05) for i in range(40)}
    with ImageServer(routes) as server:
        rows = [{"image_url": server.url(p), "image_sha256": sha(r.body)}
                for p, r in routes.items()]
        table = write_parquet(tmp_path / "t.parquet", rows)
        out = tmp_path / "out"
        args = (f"--input={table}", "--url_column=image_url", "--sha256_column=image_sha256",
                f"--out={out}", "--concurrency=2")
        proc = start("download_images", *args)
        store = ImageStore(out)
        deadline = time.monotonic() + 60
        while (not store.manifest.exists() or
               store.manifest.read_text().count("\n") < 6) and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert finish(proc).returncode == -signal.SIGKILL
        kept = {p for p in routes if store.path(server.url(p)).is_file()}
        assert 6 <= len(kept) < len(routes)

        first = server.requests.copy()
        server.requests.clear()
        result = run("download_images", *args)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.strip().splitlines()[-1])

    assert not kept & set(server.requests), "fetched again after the kill"
    assert max(server.requests.values()) == 1
    assert set(first) | set(server.requests) == set(routes)
    assert summary["already_there"] == len(kept)
    assert summary["downloaded"] == len(routes) - len(kept) and summary["failed"] == 0
    for path, route in routes.items():
        assert store.path(server.url(path)).read_bytes() == route.body, path
    assert list((out / ".partial").iterdir()) == []
    assert store.failures() == {}


def test_a_second_writer_is_refused(tmp_path):
    store = ImageStore(tmp_path / "out")
    with store.writing(), pytest.raises(OSError, match="another download"), store.writing():
        pass


def test_bad_input_fails_in_one_line(tmp_path):
    table = write_parquet(tmp_path / "t.parquet", [{"url": "http://127.0.0.1:9/a.png"}])
    garbage = tmp_path / "train-00000-of-00001.parquet"
    garbage.write_bytes(b"PAR1 not really parquet")
    missing, unreadable = run_all("download_images", [
        [f"--input={table}", "--url_column=image_url", f"--out={tmp_path / 'a'}"],
        [f"--input={garbage}", "--url_column=url", f"--out={tmp_path / 'b'}"]])
    assert_one_line_error(missing, "download_images", str(table), "'image_url'", "url")
    assert_one_line_error(unreadable, "download_images", str(garbage), "unreadable")
