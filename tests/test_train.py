"""The training loop in-process: both stages learn and keep frozen parts, the guards (non-finite
values, what does not divide over the mesh), data running out, a corrupt latest checkpoint, and
the workdir read as a project checkpoint."""

import logging
import shutil

import jax
import numpy as np
import pytest
from absl import flags
from run_cli import assert_one_line_error
from train_helpers import ListData, losses, pipeline_batches, tiny_config, tiny_flags, train_cli

from basque_vlm.model import sharding
from basque_vlm.store import checkpoint
from basque_vlm.training import guards, loop, setup
from basque_vlm.training.optim import make_optimizer, trainable_parts

ALIGN = {"vision_tower": None, "connector": 3e-2, "language_model": None}
INSTRUCT = {"vision_tower": None, "connector": 1e-2, "language_model": 1e-2}


@pytest.fixture(scope="module", autouse=True)
def parsed_flags():
    flags.FLAGS.mark_as_parsed()  # Grain reads absl flags


@pytest.fixture(scope="module")
def batches(demo_root):
    return pipeline_batches(demo_root, 6)


@pytest.fixture(scope="module")
def four_of_six(demo_root, batches, tmp_path_factory):
    """A 6-step run (checkpoints every 2 steps) whose data runs out after step 4."""
    config = tiny_config(demo_root, train__num_steps=6, train__checkpoint_every=2)
    workdir = tmp_path_factory.mktemp("four_of_six")
    result = loop.train(config, workdir, data=ListData(batches[:4]))
    return config, workdir, result


def staged(root, stage, lrs, **overrides):
    config = tiny_config(root, **overrides)
    config.stage = stage
    config.optim.learning_rates.update(lrs)
    return config


def initial(config):
    """The parameters a run of ``config`` starts from (the same function, so the same bits)."""
    cfg = setup.model_configs(config)[1]
    lrs = dict(config.optim.learning_rates)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    _, layout = loop.make_layout(cfg, list(trainable_parts(lrs)), mesh, make_optimizer(lrs, 9)[0])
    params = setup.initial_params(config, cfg, {**layout.state.params, **layout.frozen})
    return jax.tree.map(np.asarray, params)


def assert_frozen(before, after, frozen):
    for part in before:
        same = jax.tree.map(np.array_equal, before[part], jax.tree.map(np.asarray, after[part]))
        assert all(jax.tree.leaves(same)) == (part in frozen), part


def test_both_stages_overfit_a_batch_and_keep_frozen_parts(demo_root, batches, tmp_path):
    instruct, align = tmp_path / "instruct", tmp_path / "align"
    # instruct: connector + LLM, the vision tower frozen; from scratch
    config = staged(demo_root, "instruct", INSTRUCT, train__num_steps=25,
                    train__checkpoint_every=25)
    result = loop.train(config, instruct, data=ListData(batches[:1], repeat=True))
    assert (result.step, result.stopped) == (25, "done")
    loss = losses(instruct)
    assert loss[25] < 0.5 * loss[1], loss
    assert_frozen(initial(config), checkpoint.load_params(instruct), ["vision_tower"])
    # align: the connector only. A random frozen LM bounds the logits, so it starts from the
    # instruct workdir (as instruct starts from the align one), on another batch.
    config = staged(demo_root, "align", ALIGN, train__num_steps=25, train__checkpoint_every=25)
    config.init_checkpoint, config.model = str(instruct), None
    loop.train(config, align, data=ListData(batches[1:2], repeat=True))
    loss = losses(align)
    assert loss[25] < loss[1] - 0.1, loss
    assert_frozen(checkpoint.load_params(instruct), checkpoint.load_params(align),
                  ["vision_tower", "language_model"])
    assert checkpoint.load_config(align) == checkpoint.load_config(instruct)
    assert (align / "tokenizer.json").is_file()  # copied from its init_checkpoint


def test_stage_and_learning_rates_must_agree(demo_root, tmp_path):
    with pytest.raises(ValueError, match="stage=instruct but optim.learning_rates trains"):
        loop.train(staged(demo_root, "instruct", ALIGN), tmp_path)


@pytest.mark.slow  # fault injection
def test_nan_in_the_batch_stops_and_keeps_the_last_checkpoint(demo_root, batches, tmp_path):
    def poison(step, batch):
        if step == 3:
            batch["pixel_values"] = np.full_like(batch["pixel_values"], np.nan)
        return batch

    config = tiny_config(demo_root, train__num_steps=6, train__checkpoint_every=2)
    with pytest.raises(guards.NonFiniteError, match="at step 3") as error:
        loop.train(config, tmp_path, data=ListData(batches, poison))
    assert error.value.step == 3
    assert checkpoint.workdir_steps(tmp_path) == [2]
    assert sorted(losses(tmp_path)) == [1, 2]


@pytest.mark.slow
def test_nan_in_the_parameters_stops_at_the_first_step(demo_root, batches, tmp_path,
                                                       monkeypatch):
    real = setup.initial_params

    def poisoned(config, cfg, target):
        params = real(config, cfg, target)
        kernel = params["connector"]["linear_1"]["kernel"]
        params["connector"]["linear_1"]["kernel"] = kernel.at[0, 0].set(np.nan)
        return params

    monkeypatch.setattr(setup, "initial_params", poisoned)
    with pytest.raises(guards.NonFiniteError, match="at step 1"):
        loop.train(tiny_config(demo_root, train__num_steps=3), tmp_path, data=ListData(batches))
    assert checkpoint.workdir_steps(tmp_path) == []


@pytest.mark.parametrize("overrides, needles", [
    ({"data__global_batch_size": 6, "mesh__data": 4, "mesh__fsdp": 2},
     ["data.global_batch_size=6", "data×fsdp = 4×2 = 8", "multiple of 8"]),
    ({"train__microbatches": 4, "mesh__data": 4, "mesh__fsdp": 2},
     ["2 rows per micro-batch", "multiple of 32"]),
    ({"mesh__data": 1, "mesh__tensor": 8}, ["does not divide over the mesh", "mesh.tensor=8"]),
    ({"mesh__data": 2, "mesh__tensor": 4}, ["model.text.num_kv_heads=2", "mesh.tensor=4"]),
])
def test_what_does_not_divide_fails_before_compiling(demo_root, tmp_path, overrides, needles):
    with pytest.raises(ValueError) as error:
        loop.train(tiny_config(demo_root, **overrides), tmp_path)
    for needle in needles:
        assert needle in str(error.value), str(error.value)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_cli_reports_a_bad_mesh_in_one_line(demo_root, tmp_path):
    proc = train_cli(tmp_path, tiny_flags(demo_root, mesh__data=1, mesh__tensor=8))
    out, err = proc.communicate(timeout=120)
    result = type("Result", (), {"returncode": proc.returncode, "stdout": out, "stderr": err})
    assert_one_line_error(result, "train", "does not divide over the mesh", "mesh.tensor=8")


def test_running_out_of_data_ends_the_run_with_a_checkpoint(four_of_six):
    _, workdir, result = four_of_six
    assert (result.step, result.stopped) == (4, "data_exhausted")
    assert checkpoint.workdir_steps(workdir) == [4, 2]
    assert sorted(losses(workdir)) == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_corrupt_latest_checkpoint_falls_back_and_resumes_exactly(demo_root, batches,
                                                                   four_of_six, tmp_path, caplog):
    config, stopped, _ = four_of_six
    reference, run = tmp_path / "reference", tmp_path / "run"
    loop.train(config, reference, data=ListData(batches))
    shutil.copytree(stopped, run)
    for path in (run / "checkpoints" / "4" / "params").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(b"corrupt")
    (run / "checkpoints" / "5" / "params").mkdir(parents=True)  # a partial write
    with caplog.at_level(logging.WARNING):
        result = loop.train(config, run, data=ListData(batches))
    assert "checkpoint step 5 does not load" in caplog.text
    assert "checkpoint step 4 does not load" in caplog.text
    assert (result.step, result.stopped) == (6, "done")
    assert checkpoint.workdir_steps(run) == [6, 4, 2]
    assert sorted(losses(run)) == [1, 2, 3, 4, 5, 6]  # steps 3, 4 logged again, once
    np.testing.assert_allclose(list(losses(run).values()), list(losses(reference).values()),
                               rtol=1e-6)


def test_the_workdir_reads_as_a_project_checkpoint(four_of_six, tmp_path):
    from PIL import Image
    from transformers import AutoProcessor

    from basque_vlm.infer import decode
    from basque_vlm.infer.prompts import chat_inputs

    _, workdir, _ = four_of_six
    cfg, model = checkpoint.load_model(workdir)
    processor = AutoProcessor.from_pretrained(workdir)
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    inputs = chat_inputs(processor, ["What colour is the circle?"], [image])
    assert (inputs["input_ids"] == cfg.image_token_id).sum() == cfg.tokens_per_image
    tokens = decode.generate(model, inputs["input_ids"], inputs["attention_mask"],
                             inputs["pixel_values"], max_new_tokens=3)
    assert tokens.shape == (1, 3)
    (tmp_path / "config.json").write_bytes((workdir / "config.json").read_bytes())
    with pytest.raises(checkpoint.CheckpointNotFound, match="no loadable checkpoint"):
        checkpoint.load_params(tmp_path)  # a workdir before its first checkpoint
