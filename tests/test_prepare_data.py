"""prepare_data: LLaVA JSON + images → ArrayRecord (TFDS format); bad records stop or count."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from basque_vlm.data import sources
from basque_vlm.data.conversation import from_record
from data_helpers import REPO


def turns(question, answer="Gorria."):
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


GOOD = [
    {"id": "png", "image": "red.png", "conversations": turns("<image>\nZer kolore?")},
    {"id": "jpeg", "image": "sub/blue.jpg", "conversations": turns("<image>\nEta hau?", "Urdina.")},
    {"id": "webp", "image": "green.webp", "conversations": turns("Hau <image> zer da?", "Berdea.")},
    {"id": "text", "conversations": turns("Kaixo!", "Kaixo, zer moduz?")},
]
# One bad record of each kind, by id → the kind it is reported as.
BAD = {
    "missing": ({"id": "missing", "image": "nowhere.png", "conversations": turns("<image>\nZer?")},
                "missing_image"),
    "corrupt": ({"id": "corrupt", "image": "corrupt.jpg", "conversations": turns("<image>\nZer?")},
                "bad_image"),
    "no_reply": ({"id": "no_reply", "conversations": [{"from": "human", "value": "Kaixo"}]},
                 "no_assistant"),
    "mismatch": ({"id": "mismatch", "image": "red.png",
                  "conversations": turns("<image> eta <image>?")}, "image_count"),
    "json": ('{"id": "json", "conversations": [', "invalid_json"),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "red.png")
    Image.new("RGB", (40, 30), (10, 10, 200)).save(root / "sub" / "blue.jpg", quality=90)
    Image.new("RGBA", (20, 20), (10, 200, 10, 255)).save(root / "green.webp", lossless=True)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                            for r in records))
    return path


def all_records():
    """Good and bad interleaved; the first bad one is 'missing' (line 2)."""
    bad = [record for record, _ in BAD.values()]
    return [GOOD[0], bad[0], GOOD[1], bad[1], bad[2], GOOD[2], bad[3], bad[4], GOOD[3]]


def cli(*args):
    result = subprocess.run([sys.executable, "-m", "basque_vlm.prepare_data", *args],
                            capture_output=True, text=True, cwd=REPO)
    lines = result.stdout.strip().splitlines()
    return result, json.loads(lines[-1]) if lines else None


def test_default_stops_at_the_first_bad_record_and_names_it(images, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", all_records())
    out = tmp_path / "out"
    result, summary = cli(f"--input={data}", f"--image_root={images}", f"--out={out}",
                          "--lang=eu")
    assert result.returncode == 1
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "'missing'" in err[0] and "missing_image" in err[0], result.stderr
    assert summary["ok"] is False and summary["written"] == 0 and summary["skipped"] == 0
    assert summary["failed_at"]["id"] == "missing"
    assert summary["failed_at"]["kind"] == "missing_image"
    assert not out.exists()


def test_budget_skips_and_counts_by_kind(images, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", all_records())
    out = tmp_path / "out"
    result, summary = cli(f"--input={data}", f"--image_root={images}", f"--out={out}",
                          "--lang=eu", "--max_bad_fraction=0.6", "--name=Demo-Set")
    assert result.returncode == 0, result.stderr
    assert summary["ok"] is True
    assert summary["written"] == 4 and summary["skipped"] == 5 and summary["records"] == 9
    assert summary["skipped_by_kind"] == {kind: 1 for _, kind in BAD.values()}
    assert summary["name"] == "demo_set"

    info = tfds.builder_from_directory(str(out)).info
    assert info.splits["train"].num_examples == 4
    assert info.metadata["lang"] == "eu" and info.metadata["written"] == 4
    assert info.file_format.value == "array_record"

    source = sources.ConversationSource(out)
    assert len(source) == 4
    got = {source[i][0].id: source[i] for i in range(len(source))}
    for record in GOOD:
        conv, stored = got[record["id"]]
        expected = from_record(record)
        assert [(m.role, m.text) for m in conv.messages] == [(m.role, m.text)
                                                             for m in expected.messages]
        assert conv.lang == "eu" and len(stored) == len(expected.images)
    # PNG and JPEG bytes are kept as they are; WebP is re-encoded as PNG.
    assert got["png"][1] == [(images / "red.png").read_bytes()]
    assert got["jpeg"][1] == [(images / "sub" / "blue.jpg").read_bytes()]
    webp = Image.open(io.BytesIO(got["webp"][1][0]))
    assert webp.format == "PNG" and np.asarray(webp.convert("RGB"))[0, 0].tolist() == [10, 200, 10]


def test_too_many_bad_records_fail_and_leave_nothing(images, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", all_records())
    out = tmp_path / "out"
    result, summary = cli(f"--input={data}", f"--image_root={images}", f"--out={out}",
                          "--lang=eu", "--max_bad_fraction=0.5")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "5 of 9" in result.stderr
    assert summary["ok"] is False and summary["skipped"] == 5 and summary["written"] == 0
    assert not out.exists()


@pytest.mark.parametrize("name", list(BAD))
def test_each_bad_kind_stops_by_default(images, tmp_path, name):
    record, kind = BAD[name]
    data = write_jsonl(tmp_path / "in.jsonl", [GOOD[0], record, GOOD[1]])
    with pytest.raises(sources.BadRecords) as e:
        sources.prepare(data, images, tmp_path / "out", "eu")
    failed = e.value.summary["failed_at"]
    assert failed["kind"] == kind
    assert failed["id"] == (None if name == "json" else name)
    if name == "json":
        assert failed["line"] == 2 and "line 2" in str(e.value)
    else:
        assert repr(name) in str(e.value)


def test_shards_stream_and_keep_order(images, tmp_path):
    records = [{**GOOD[0], "id": f"r{i}"} for i in range(30)]
    data = write_jsonl(tmp_path / "in.jsonl", records)
    lines = []
    summary = sources.prepare(data, images, tmp_path / "out", "en", shard_bytes=400,
                              progress=lines.append, progress_seconds=0)
    assert summary["shards"] > 3 and summary["written"] == 30
    assert lines and "records read" in lines[-1]
    files = sorted(p.name for p in (tmp_path / "out").glob("*.array_record-*"))
    assert len(files) == summary["shards"] and files[0].endswith(f"-of-{len(files):05d}")
    source = sources.ConversationSource(tmp_path / "out")
    assert [source[i][0].id for i in range(30)] == [f"r{i}" for i in range(30)]


def test_record_language_must_match(images, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [{**GOOD[0], "lang": "en"}])
    with pytest.raises(sources.BadRecords, match="differs from --lang 'eu'"):
        sources.prepare(data, images, tmp_path / "out", "eu")


@pytest.mark.parametrize("args, message", [
    (["--lang=Basque"], "--lang must be a language code"),
    (["--lang=eu", "--max_bad_fraction=2"], "--max_bad_fraction must be in [0, 1]"),
    (["--lang=eu", "--input=/nonexistent.jsonl"], "no such file"),
])
def test_bad_flags_fail_in_one_line(images, tmp_path, args, message):
    data = write_jsonl(tmp_path / "in.jsonl", GOOD)
    result = subprocess.run(
        [sys.executable, "-m", "basque_vlm.prepare_data", f"--input={data}",
         f"--image_root={images}", f"--out={tmp_path / 'out'}", *args],
        capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr
