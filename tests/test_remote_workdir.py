"""Workdirs and checkpoints anywhere etils.epath reaches: a ``gs://`` workdir stays on ``gs://``
(every file, every checkpoint), trains, resumes and reads as a checkpoint; ``file://`` URLs and
relative paths are local folders.

``gs://`` is a Cloud Storage JSON API on 127.0.0.1 (`gcs_server`): gcsfs (every file through
etils.epath), tensorstore's ``gcs`` driver and Orbax's GCS commit protocol (``commit_success.txt``)
talk HTTP to it as they would to Cloud Storage."""

import json
import os
import pathlib

import numpy as np
import pytest
from absl import flags
from PIL import Image
from train_helpers import ListData, losses, pipeline_batches, tiny_config

from basque_vlm import generate
from basque_vlm.hf import writer
from basque_vlm.runtime import paths
from basque_vlm.store import checkpoint
from basque_vlm.training import loop, metrics, tensorboard

URL = "gs://bucket/workdirs/run"
NEXT = "gs://bucket/workdirs/next"
INSTRUCT = {"vision_tower": None, "connector": 1e-2, "language_model": 1e-2}


@pytest.fixture(scope="module", autouse=True)
def parsed_flags():
    flags.FLAGS.mark_as_parsed()  # Grain reads absl flags


@pytest.fixture
def gs(gcs, monkeypatch, tmp_path):
    """``gs://`` served by the test server; the test runs in an empty ``tmp_path/cwd`` (where a
    ``gs:`` folder would show a path turned local)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield gcs
    assert not any(cwd.iterdir()), list(cwd.iterdir())


@pytest.fixture(scope="module")
def batches(demo_root):
    return pipeline_batches(demo_root, 4)


def test_urls_stay_urls_and_local_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(paths.path("gs://b/w") / "checkpoints") == "gs://b/w/checkpoints"
    assert paths.path("gs://b/w").name == "w" and paths.is_remote("s3://b/w")
    assert str(paths.path("rel/run")) == str(tmp_path / "rel" / "run")
    assert str(paths.path("a/../b")) == str(pathlib.Path("a/../b").absolute())  # as before
    assert str(paths.path(f"file://{tmp_path}/x%20y")) == str(tmp_path / "x y")
    assert str(paths.path("file://localhost/abs")) == "/abs"
    assert not paths.is_remote("file:///abs") and not paths.is_remote("/gs/b")
    for bad in ("memory://x", "http://host/x", "file://host/x"):
        with pytest.raises(ValueError):
            paths.path(bad)


def test_files_metrics_and_tensorboard_on_gs(gs, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    (local / "tokenizer.json").write_text("{}")
    (local / "config.json").write_text('{"a": 1}')
    (local / "big.bin").write_bytes(b"0" * 10)
    paths.path(URL).mkdir(parents=True, exist_ok=True)
    assert paths.copy_files(local, URL, paths.LOCAL_PATTERNS) == ["config.json",
                                                                  "tokenizer.json"]
    copy = paths.local_copy(URL)
    assert sorted(p.name for p in copy.iterdir()) == ["config.json", "tokenizer.json"]
    assert paths.local_copy(tmp_path / "local") == tmp_path / "local"  # local: itself
    with pytest.raises(FileNotFoundError):
        paths.local_copy("gs://bucket/nothing")

    writer = metrics.Writer(URL, 10, True)
    for step in (1, 2, 3):
        writer._log({"step": step, "loss": 1.0 / step})
    writer.write_eval(2, {"demo_vqa_en": 0.5}, 1.0)
    writer.close()
    assert [r["step"] for r in metrics.read(URL)] == [1, 2, 3, 2]
    resumed = metrics.Writer(URL, 10, True, resumed_at=2)  # truncates the object, rewrites it
    resumed._log({"step": 3, "loss": 0.25})
    resumed.close()
    assert [(r["step"], r.get("loss")) for r in metrics.read(URL)] == \
        [(1, 1.0), (2, 0.5), (2, None), (3, 0.25)]
    scalars = tensorboard.read_scalars(f"{URL}/tensorboard")
    assert scalars["loss"] == {1: 1.0, 2: 0.5, 3: 0.25}  # the first run's step 3 purged
    assert scalars["eval/demo_vqa_en"] == {2: 0.5}
    assert len(list(paths.path(f"{URL}/tensorboard").glob("events.out.tfevents.*"))) == 2


def test_a_gs_workdir_trains_and_reads_as_a_checkpoint(gs, demo_root, batches, tmp_path):
    config = instruct(demo_root, 3)
    result = loop.train(config, URL, data=ListData(batches))
    assert (result.step, result.stopped) == (3, "done")
    everything = gs.names()
    assert all(n.startswith("workdirs/run/") for n in everything), everything
    names = {n[len("workdirs/run/"):] for n in everything}
    for name in ("config.json", "tokenizer.json", "chat_template.jinja", "metrics.jsonl",
                 "eval/step_3.json", "eval/step_3.predictions.jsonl", "eval/step_3.md",
                 "checkpoints/3/commit_success.txt", "checkpoints/3/params/manifest.ocdbt"):
        assert name in names, name
    assert any(n.startswith("frozen/") for n in names)
    assert any(n.startswith("tensorboard/events.out.tfevents.") for n in names)
    assert checkpoint.workdir_steps(URL) == [3, 2]
    assert sorted(r["step"] for r in metrics.read(URL) if "loss" in r) == [1, 2, 3]
    assert json.loads(paths.path(f"{URL}/eval/step_3.json").read_text())["demo_vqa_en"]["n"] == 2
    assert sorted(tensorboard.read_scalars(f"{URL}/tensorboard")["loss"]) == [1, 2, 3]

    # generate --checkpoint=gs://...: the config, the processor (a local copy), the weights
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    answer = generate.run(URL, "What colour is the circle?", str(image), 3, 0.0, 1.0, 0)
    assert len(answer["token_ids"]) >= 1
    params = checkpoint.load_params(URL)
    assert set(params) == {"vision_tower", "connector", "language_model"}
    # export --checkpoint=gs://... (to a local folder)
    files = writer.export_checkpoint(URL, tmp_path / "hf", 5 * 2**30)
    assert files and (tmp_path / "hf" / "tokenizer.json").is_file()
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "llava"


@pytest.mark.slow  # three runs' compilation
def test_a_gs_workdir_resumes_and_starts_the_next_stage(gs, demo_root, batches):
    loop.train(instruct(demo_root, 2), URL, data=ListData(batches))
    loop.train(instruct(demo_root, 4), URL, data=ListData(batches))  # from step 2
    assert checkpoint.workdir_steps(URL) == [4, 2]
    assert sorted(r["step"] for r in metrics.read(URL) if "loss" in r) == [1, 2, 3, 4]
    # init_checkpoint=gs://...: the next stage starts from the workdir's latest step
    config = instruct(demo_root, 2)
    config.init_checkpoint, config.model = URL, None
    loop.train(config, NEXT, data=ListData(batches))
    assert checkpoint.load_config(NEXT) == checkpoint.load_config(URL)
    assert "workdirs/next/tokenizer.json" in gs.names("workdirs/next/")


@pytest.mark.slow  # two runs' compilation
def test_relative_paths_and_file_urls_are_the_same_local_folder(demo_root, batches, tmp_path,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(demo_root, train__num_steps=2, train__checkpoint_every=2)
    loop.train(config, "runs/a", data=ListData(batches))
    assert checkpoint.workdir_steps(tmp_path / "runs" / "a") == [2]
    url = f"file://{tmp_path}/runs/a"
    config = tiny_config(demo_root, train__num_steps=3, train__checkpoint_every=2)
    loop.train(config, url, data=ListData(batches))  # resumes the same folder
    assert sorted(losses(tmp_path / "runs" / "a")) == [1, 2, 3]
    assert checkpoint.workdir_steps(url) == [3, 2]
    got = checkpoint.load_params(url)
    want = checkpoint.load_params(tmp_path / "runs" / "a")
    for a, b in zip(jax_leaves(got), jax_leaves(want)):
        np.testing.assert_array_equal(a, b)
    assert not os.path.exists(tmp_path / "file:")


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def instruct(root, steps):
    """The instruct stage (the vision tower frozen: ``frozen/`` is written), evaluated at the
    end."""
    config = tiny_config(root, train__num_steps=steps, train__checkpoint_every=2,
                         eval__tasks="demo_vqa_en", eval__every=0, eval__limit=2,
                         eval__batch_size=8, eval__max_new_tokens=2)
    config.stage = "instruct"
    config.optim.learning_rates.update(INSTRUCT)
    return config
