"""The input pipeline: batch contract, process-count invariance, exact resume in a new process."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from data_helpers import assert_batches_equal, demo_config, draw, load_batches
from PIL import Image
from transformers import AutoTokenizer

from basque_vlm.data import mixture, pipeline, sources
from basque_vlm.data.image import ImageSpec, open_image, preprocess

flags.FLAGS.mark_as_parsed()  # Grain's worker processes read absl flags


def turns(question, answer):
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def test_batch_contract(demo_root):
    data = demo_config(demo_root, basque_ratio=0.25, num_threads=1).data
    stream = pipeline.build(data)
    batches = draw(stream, 2)
    records = mixture.dataset(mixture.plan(data), data.seed)
    tok = AutoTokenizer.from_pretrained(demo_root / "tokenizer")
    spec = ImageSpec.from_folder(demo_root / "tokenizer")
    b = data.global_batch_size
    for step, batch in enumerate(batches):
        length = batch["input_ids"].shape[1]
        assert length in (*data.length_buckets, data.max_length)
        for key in ("input_ids", "targets", "loss_mask", "attention_mask"):
            assert batch[key].shape == (b, length) and batch[key].dtype == np.int32
        assert batch["pixel_values"].shape == (b, 3, 48, 48)
        assert batch["pixel_values"].dtype == np.float32
        assert batch["num_images"].tolist() == [1] * b
        assert batch["image_mask"].tolist() == [1] * b
        assert batch["dropped"].tolist() == [""] * b
        assert batch["language"].tolist().count("eu") == b // 4
        for row in range(b):
            record = records[step * b + row]
            assert batch["language"][row] == record.conversation.lang
            assert batch["source"][row] == record.source
            np.testing.assert_array_equal(batch["pixel_values"][row],
                                          preprocess(open_image(record.images[0]), spec))
            real = batch["attention_mask"][row].sum()
            ids = batch["input_ids"][row]
            assert (ids[real:] == 0).all() and (ids == 3).sum() == data.tokens_per_image
            answer = record.conversation.messages[-1].text
            supervised = batch["targets"][row][batch["loss_mask"][row] == 1]
            assert tok.decode(supervised) == answer + "<|im_end|>"
    stream.close()


@pytest.mark.parametrize("count", [2, 4])
def test_global_batches_do_not_depend_on_process_count(demo_root, count):
    data = demo_config(demo_root, num_threads=1).data
    whole = draw(pipeline.build(data), 3)
    parts = [draw(pipeline.build(data, index, count), 3) for index in range(count)]
    joined = [{key: np.concatenate([p[step][key] for p in parts]) for key in whole[step]}
              for step in range(3)]
    assert_batches_equal(whole, joined)
    assert parts[0][0]["pixel_values"].shape[0] == data.global_batch_size // count


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])  # 2 worker processes: slower
def test_restore_in_a_new_process_gives_the_same_next_batches(demo_root, tmp_path, workers):
    data = demo_config(demo_root, num_workers=workers).data
    stream = pipeline.build(data)
    draw(stream, 3)
    state = stream.get_state()
    (tmp_path / "state.json").write_text(json.dumps(state))
    expected = draw(stream, 20)
    stream.close()
    assert state["next_step"] == 3

    out = tmp_path / "restored.npz"
    subprocess.run([sys.executable, str(Path(__file__).parent / "pipeline_restore.py"),
                    str(demo_root), str(tmp_path / "state.json"), str(workers), "20", str(out)],
                   check=True)
    assert_batches_equal(expected, load_batches(out))


def test_text_only_rows_and_image_slots(demo_root, tmp_path):
    """Text-only data at its own share; row r's k-th image in pixel_values[r*M + k]."""
    Image.new("RGB", (64, 64), (220, 0, 0)).save(tmp_path / "red.png")
    Image.new("RGB", (64, 64), (0, 0, 220)).save(tmp_path / "blue.png")
    pairs = [{"id": f"p{i}", "image": ["red.png", "blue.png"],
              "conversations": turns("<image>\n<image>\nZein da gorria?", "Lehena.")}
             for i in range(5)]
    texts = [{"id": f"t{i}", "conversations": turns("Kaixo", "Kaixo!")} for i in range(7)]
    for name, records in (("pairs", pairs), ("texts", texts)):
        (tmp_path / f"{name}.json").write_text(json.dumps(records))
        sources.prepare(tmp_path / f"{name}.json", tmp_path, tmp_path / name, "eu")
    data = demo_config(demo_root, basque_ratio=1.0, text_only_ratio=0.25, caption_ratio=0.0,
                       max_images=2, max_length=200, num_threads=1).data
    data.sources = {"pairs": {"path": str(tmp_path / "pairs"), "kind": "multimodal"},
                    "texts": {"path": str(tmp_path / "texts"), "kind": "text_only"}}
    batch = next(pipeline.build(data))
    spec = ImageSpec.from_folder(demo_root / "tokenizer")
    red, blue = (preprocess(Image.open(tmp_path / f), spec) for f in ("red.png", "blue.png"))
    text_rows = batch["source"] == "texts"
    assert text_rows.sum() == 4 and batch["pixel_values"].shape == (32, 3, 48, 48)
    for row in range(16):
        slots = batch["pixel_values"][2 * row:2 * row + 2]
        if text_rows[row]:
            assert batch["num_images"][row] == 0 and (slots == 0).all()
            assert batch["image_mask"][2 * row:2 * row + 2].tolist() == [0, 0]
        else:
            assert batch["num_images"][row] == 2
            assert batch["image_mask"][2 * row:2 * row + 2].tolist() == [1, 1]
            np.testing.assert_array_equal(slots, np.stack([red, blue]))
            assert (batch["input_ids"][row] == 3).sum() == 2 * data.tokens_per_image


def test_unusable_samples_become_padding_rows(demo_root):
    data = demo_config(demo_root, max_length=31, length_buckets=(), num_threads=1).data
    batch = next(pipeline.build(data))
    dropped = batch["dropped"] == "too_long"
    assert dropped.any() and (~dropped).any() and set(batch["dropped"]) <= {"", "too_long"}
    assert (batch["attention_mask"][dropped] == 0).all()
    assert (batch["loss_mask"][dropped] == 0).all()
    assert (batch["image_mask"][dropped] == 0).all() and (batch["num_images"][dropped] == 0).all()
    assert (batch["pixel_values"][dropped] == 0).all()
    assert (batch["language"] != "").all()  # the mixture's choice is still reported
    assert batch["input_ids"].shape[1] == 31


def test_corrupt_image_drops_its_row_only(demo_root):
    data = demo_config(demo_root).data
    good = [mixture.dataset(mixture.plan(data), 0)[k] for k in range(4)]
    bad = dataclasses.replace(good[1], images=[b"\xff\xd8 not a jpeg"])
    batch = pipeline.MakeBatch(pipeline.batch_spec(data))([good[0], bad, *good[2:]])
    assert batch["dropped"].tolist() == ["", "bad_image", "", ""]
    assert batch["image_mask"].tolist() == [1, 0, 1, 1]
    assert (batch["pixel_values"][1] == 0).all() and (batch["pixel_values"][2] != 0).any()


def test_state_from_another_config_is_refused(demo_root):
    stream = pipeline.build(demo_config(demo_root).data)
    state = stream.get_state() | {"seed": 5}
    with pytest.raises(ValueError, match="saved with seed=5, but data.seed is 0"):
        stream.set_state(state)


def test_batch_must_divide_over_processes(demo_root):
    with pytest.raises(ValueError, match="data.global_batch_size=16 must divide over 3"):
        pipeline.build(demo_config(demo_root).data, 0, 3)
