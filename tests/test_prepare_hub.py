"""prepare_data from hub formats: a parquet snapshot (splits, image structs), save_to_disk Arrow,
paths, multi-turn messages and URL images downloaded from a local server write the same records
as the equivalent LLaVA JSON + image folder; bad tables fail in one line."""

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from basque_vlm.data import download, sources
from basque_vlm.data.columns import ColumnMap
from basque_vlm.testing.image_server import ImageServer, Route
from run_cli import assert_one_line_error, run, run_all

QA = "id=id,question=question,answer=answer,image=image"
FILES = ["red.png", "sub/blue.jpg", "green.webp", None]  # None: a text-only record
ROWS = {  # split → (id, question, answer) per file of FILES
    "eu": [("eu-a", "Zer kolore da?", "Gorria."), ("eu-b", "Eta hau?", "Urdina."),
           ("eu-c", "Zer da hau?", "Berdea."), ("eu-d", "Kaixo!", "Kaixo, zer moduz?")],
    "en": [("en-a", "What colour is it?", "Red."), ("en-b", "And this?", "Blue."),
           ("en-c", "What is this?", "Green."), ("en-d", "Hello!", "Hello, how are you?")],
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "red.png")
    Image.new("RGB", (40, 30), (10, 10, 200)).save(root / "sub" / "blue.jpg", quality=90)
    Image.new("RGBA", (20, 20), (10, 200, 10, 255)).save(root / "green.webp", lossless=True)
    return root


def llava(record_id, question, answer, image):
    """The LLaVA JSON record that a question/answer row is the same as."""
    record = {"id": record_id, "conversations": [
        {"from": "human", "value": ("<image>\n" if image else "") + question},
        {"from": "gpt", "value": answer}]}
    return {**record, "image": image} if image else record


def prepare_json(tmp_path, images, records, lang, name="json"):
    data = tmp_path / f"{name}.json"
    data.write_text(json.dumps(records))
    out = tmp_path / f"{name}_out"
    sources.prepare(data, images, out, lang)
    return out


def struct(images, file):
    return None if file is None else {"bytes": (images / file).read_bytes(), "path": file}


def qa_rows(images, split, image=struct):
    return [{"id": i, "question": q, "answer": a, "image": image(images, f)}
            for (i, q, a), f in zip(ROWS[split], FILES)]


def write_parquet(path, rows, schema=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def snapshot(root, images):
    """A hub snapshot's layout: ``data/{split}-0000i-of-0000n.parquet``, eu in two files."""
    eu, en = qa_rows(images, "eu"), qa_rows(images, "en")
    write_parquet(root / "data" / "eu-00000-of-00002.parquet", eu[:2])
    write_parquet(root / "data" / "eu-00001-of-00002.parquet", eu[2:])
    write_parquet(root / "data" / "en-00000-of-00001.parquet", en)
    (root / "README.md").write_text("---\nconfigs: []\n---\n")
    return root


def save_to_disk(folder, rows, split=None):
    """What ``datasets.Dataset.save_to_disk`` writes: an Arrow IPC stream + state.json."""
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist(rows)
    with pa.ipc.new_stream(folder / "data-00000-of-00001.arrow", table.schema) as writer:
        for batch in table.to_batches(max_chunksize=3):
            writer.write_batch(batch)
    (folder / "state.json").write_text(json.dumps({
        "_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_fingerprint": "f0",
        "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
        "_output_all_columns": False, "_split": split}))
    (folder / "dataset_info.json").write_text(json.dumps({"citation": "", "features": {}}))
    return folder


def records(out):
    source = sources.ConversationSource(out)
    return [source[i] for i in range(len(source))]


def assert_same_records(out, expected_out):
    got, expected = records(out), records(expected_out)
    assert [c.id for c, _ in got] == [c.id for c, _ in expected]
    for (conv, images), (want, want_images) in zip(got, expected):
        assert conv.messages == want.messages and conv.lang == want.lang, conv.id
        assert images == want_images, conv.id


def summary_of(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_snapshot_splits_write_the_same_records_as_llava_json(images, tmp_path):
    snap = snapshot(tmp_path / "snap", images)
    result = run("prepare_data", f"--input={snap}", "--split=eu", f"--columns={QA}",
                 f"--out={tmp_path / 'eu'}", "--lang=eu")
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert summary["ok"] and summary["written"] == 4 and summary["split"] == "eu"
    assert summary["name"] == "snap_eu"
    expected = [llava(*row, file) for row, file in zip(ROWS["eu"], FILES)]
    assert_same_records(tmp_path / "eu", prepare_json(tmp_path, images, expected, "eu"))

    sources.prepare_table(snap, tmp_path / "en", "en", ColumnMap.parse(QA), split="en")
    expected = [llava(*row, file) for row, file in zip(ROWS["en"], FILES)]
    assert_same_records(tmp_path / "en", prepare_json(tmp_path, images, expected, "en", "en"))


def test_splits_are_chosen_never_mixed(images, tmp_path):
    snap = snapshot(tmp_path / "snap", images)
    columns = ColumnMap.parse(QA)
    with pytest.raises(ValueError, match="holds the splits en, eu: choose one with --split"):
        sources.prepare_table(snap, tmp_path / "out", "eu", columns)
    with pytest.raises(ValueError, match="--split=fr: .* holds the splits en, eu"):
        sources.prepare_table(snap, tmp_path / "out", "eu", columns, split="fr")
    # a save_to_disk DatasetDict: one folder per split
    (tmp_path / "dict").mkdir()
    (tmp_path / "dict" / "dataset_dict.json").write_text('{"splits": ["en", "eu"]}')
    for split in ("en", "eu"):
        save_to_disk(tmp_path / "dict" / split, qa_rows(images, split), split)
    summary = sources.prepare_table(tmp_path / "dict", tmp_path / "out", "eu", columns,
                                    split="eu")
    assert summary["split"] == "eu"
    assert [c.id for c, _ in records(tmp_path / "out")] == [r[0] for r in ROWS["eu"]]


def test_save_to_disk_captions_with_paths_under_image_root(images, tmp_path):
    captions = ["Goian: zirkulu gorri bat.", "Karratu urdin bat.", "Triangelu berde bat."]
    rows = [{"url": file, "caption": caption} for file, caption in zip(FILES, captions)]
    folder = save_to_disk(tmp_path / "cc3m_eu", rows)
    summary = sources.prepare_table(folder, tmp_path / "out", "eu",
                                    ColumnMap.parse("caption=caption,image=url"),
                                    image_root=images)
    assert summary["written"] == 3 and summary["name"] == "cc3m_eu_eu"
    expected = [llava(f"row-{i}", "Deskribatu irudia.", caption, file)
                for i, (file, caption) in enumerate(zip(FILES, captions))]
    assert_same_records(tmp_path / "out", prepare_json(tmp_path, images, expected, "eu"))
    with pytest.raises(ValueError, match="captions in 'es' need --caption_prompt"):
        sources.prepare_table(folder, tmp_path / "es", "es",
                              ColumnMap.parse("caption=caption,image=url"), image_root=images)


def test_messages_and_path_structs_relative_to_the_data(images, tmp_path):
    shutil.copytree(images, tmp_path / "table" / "imgs")
    turns = [{"from": "human", "value": "Zer kolore da?"}, {"from": "gpt", "value": "Gorria."},
             {"from": "human", "value": "Ziur?"}, {"from": "gpt", "value": "Bai."}]
    rows = [  # LLaVA turns; PixMo-CapQA's alternating strings; a JSON string with a placeholder
        {"id": "turns", "messages": json.dumps(turns), "image": {"bytes": None,
                                                                "path": "imgs/red.png"}},
        {"id": "strings", "messages": json.dumps(["Eta hau?", "Urdina."]),
         "image": {"bytes": None, "path": "imgs/sub/blue.jpg"}},
        {"id": "placed", "messages": json.dumps([{"role": "user", "content": "Hau <image> zer?"},
                                                 {"role": "assistant", "content": "Berdea."}]),
         "image": {"bytes": None, "path": "imgs/green.webp"}},
    ]
    table = write_parquet(tmp_path / "table" / "train.parquet", rows)
    sources.prepare_table(table, tmp_path / "out", "eu",
                          ColumnMap.parse("id=id,messages=messages,image=image"))
    turns[0]["value"] = "<image>\n" + turns[0]["value"]
    expected = [
        {"id": "turns", "image": "red.png", "conversations": turns},
        llava("strings", "Eta hau?", "Urdina.", "sub/blue.jpg"),
        {"id": "placed", "images": ["green.webp"], "messages": [
            {"role": "user", "content": "Hau <image> zer?"},
            {"role": "assistant", "content": "Berdea."}]},
    ]
    assert_same_records(tmp_path / "out", prepare_json(tmp_path, images, expected, "eu"))


def test_url_images_downloaded_from_a_server_are_the_same_records(images, tmp_path):
    routes = {f"/{f}": Route((images / f).read_bytes()) for f in FILES if f}
    with ImageServer(routes) as server:
        rows = [{"image_url": server.url(f"/{f}") if f else None, "question": q, "answer": a}
                for (_, q, a), f in zip(ROWS["eu"], FILES)]
        rows.insert(1, {"image_url": server.url("/gone.jpg"), "question": "Eta?", "answer": "Ez."})
        table = write_parquet(tmp_path / "pixmo" / "data" / "train-00000-of-00001.parquet", rows)
        fetched = download.download(tmp_path / "pixmo", "image_url", tmp_path / "dl")
    assert fetched["downloaded"] == 3 and fetched["failed_by_kind"] == {"http_404": 1}

    columns = ColumnMap.parse("question=question,answer=answer,image=image_url")
    summary = sources.prepare_table(table, tmp_path / "out", "eu", columns,
                                    image_root=tmp_path / "dl")
    assert summary["written"] == 4 and summary["unavailable"] == 1
    assert summary["skipped"] == 1 and summary["skipped_by_kind"] == {"http_404": 1}
    expected = [llava(f"row-{i}", q, a, f)
                for i, ((_, q, a), f) in zip([0, 2, 3, 4], zip(ROWS["eu"], FILES))]
    assert_same_records(tmp_path / "out", prepare_json(tmp_path, images, expected, "eu"))

    rows.append({"image_url": "http://127.0.0.1:9/never.png", "question": "Q?", "answer": "A."})
    write_parquet(table, rows)
    with pytest.raises(sources.BadRecords) as e:
        sources.prepare_table(table, tmp_path / "out2", "eu", columns, image_root=tmp_path / "dl")
    failed = e.value.summary["failed_at"]
    assert failed["kind"] == "missing_image" and failed["row"] == 5 and failed["id"] == "row-5"
    assert "not downloaded" in failed["message"]


def test_bad_tables_fail_in_one_line(images, tmp_path):
    good = write_parquet(tmp_path / "good.parquet", qa_rows(images, "eu"))
    garbage = tmp_path / "bad.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet")
    rows = qa_rows(images, "eu")
    rows[2]["answer"] = None
    null = write_parquet(tmp_path / "null.parquet", rows)
    data = tmp_path / "in.jsonl"
    data.write_text("")
    common = ["--lang=eu", f"--image_root={images}"]
    missing, unreadable, null_answer, json_columns, no_columns = run_all("prepare_data", [
        [f"--input={good}", f"--out={tmp_path / 'a'}", "--columns=caption=caption", *common],
        [f"--input={garbage}", f"--out={tmp_path / 'b'}", f"--columns={QA}", *common],
        [f"--input={null}", f"--out={tmp_path / 'c'}", f"--columns={QA}", *common],
        [f"--input={data}", f"--out={tmp_path / 'd'}", f"--columns={QA}", *common],
        [f"--input={good}", f"--out={tmp_path / 'e'}", *common]])
    assert_one_line_error(missing, "prepare_data", str(good), "'caption'", "question")
    assert_one_line_error(unreadable, "prepare_data", str(garbage), "unreadable parquet")
    assert_one_line_error(null_answer, "prepare_data", "'eu-c'", "row 2", "'answer'", "null")
    assert summary_of(null_answer)["failed_at"]["row"] == 2
    assert_one_line_error(json_columns, "prepare_data", "--columns", "not JSON")
    assert_one_line_error(no_columns, "prepare_data", "--columns is required")
    for out in "abcde":
        assert not (tmp_path / out).exists()
