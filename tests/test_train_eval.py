"""Evaluation on a schedule during training (``config.eval``): the scores every N steps and at the
end in metrics.jsonl and TensorBoard, the same answers as ``evaluate`` on the saved workdir, and
a resumed run that evaluates each step once."""

import contextlib
import io
import json
import shutil

import pytest
from absl import flags
from train_helpers import ListData, losses, pipeline_batches, tiny_config

from basque_vlm.eval import runner, suite, tasks
from basque_vlm.training import loop, metrics, tensorboard

EVAL = {"eval__tasks": "demo_vqa_eu,demo_vqa_en", "eval__every": 2, "eval__limit": 4,
        "eval__batch_size": 4, "eval__max_new_tokens": 3}
TASKS = ("demo_vqa_eu", "demo_vqa_en")


@pytest.fixture(scope="module", autouse=True)
def parsed_flags():
    flags.FLAGS.mark_as_parsed()  # Grain reads absl flags


@pytest.fixture(scope="module")
def batches(demo_root):
    return pipeline_batches(demo_root, 5)


def config(root, steps):
    return tiny_config(root, train__num_steps=steps, train__checkpoint_every=3, **EVAL)


def eval_records(workdir):
    return {r["step"]: r for r in metrics.read(workdir) if "loss" not in r}


@pytest.fixture(scope="module")
def evaluated(demo_root, batches, tmp_path_factory):
    """A 3-step run evaluated every 2 steps (and at the end), and what it printed."""
    workdir = tmp_path_factory.mktemp("evaluated") / "run"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        loop.train(config(demo_root, 3), workdir, data=ListData(batches))
    return workdir, out.getvalue()


def test_scores_every_n_steps_and_at_the_end(evaluated):
    workdir, out = evaluated
    found = eval_records(workdir)
    assert sorted(found) == [2, 3]  # every 2 steps, and the end
    for record in found.values():
        assert set(record) == {"step", "eval_time_s", "elapsed_s", *(f"eval/{t}" for t in TASKS)}
        assert all(0 <= record[f"eval/{t}"] <= 1 for t in TASKS)
    assert sorted(losses(workdir)) == [1, 2, 3]
    assert "eval at step 2: demo_vqa_eu" in out
    for step in (2, 3):  # written as `evaluate --out` writes them
        results = json.loads((workdir / "eval" / f"step_{step}.json").read_text())
        assert {t: results[t]["accuracy"] for t in TASKS} == \
            {t: found[step][f"eval/{t}"] for t in TASKS}
        assert all(results[t]["n"] == 4 for t in TASKS)
        assert (workdir / "eval" / f"step_{step}.predictions.jsonl").is_file()
    scalars = tensorboard.read_scalars(workdir / "tensorboard")
    assert sorted(scalars["loss"]) == [1, 2, 3]
    for step, record in found.items():
        for task in TASKS:
            assert scalars[f"eval/{task}"][step] == pytest.approx(record[f"eval/{task}"])


def test_the_same_answers_as_evaluate_on_the_saved_workdir(evaluated, demo_root, tmp_path):
    workdir, _ = evaluated
    generator = runner.Generator(workdir, 4, scan_layers=False)  # its latest step: 3
    chosen = tasks.get(",".join(TASKS))
    loaded = {t.name: runner.load_samples(t, tmp_path, 4)
              for t in chosen}
    suite.run(chosen, loaded, generator, tmp_path / "cli" / "results.json", max_new_tokens=3)
    assert (tmp_path / "cli" / "results.predictions.jsonl").read_text() == \
        (workdir / "eval" / "step_3.predictions.jsonl").read_text()


@pytest.mark.slow  # another run's compilation: ~40 s on the shared 2-core machine
def test_a_resumed_run_evaluates_each_step_once(evaluated, demo_root, batches, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(evaluated[0], workdir)
    loop.train(config(demo_root, 5), workdir, data=ListData(batches))  # from step 3
    assert sorted(losses(workdir)) == [1, 2, 3, 4, 5]  # each step once
    assert sorted(eval_records(workdir)) == [2, 3, 4, 5]
    scalars = tensorboard.read_scalars(workdir / "tensorboard")
    assert sorted(scalars["loss"]) == [1, 2, 3, 4, 5]
    assert sorted(scalars["eval/demo_vqa_en"]) == [2, 3, 4, 5]


def test_truncate_drops_training_and_evaluation_records_after_the_checkpoint(tmp_path):
    path = tmp_path / metrics.METRICS_FILE
    records = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5},
               {"step": 2, "eval/demo_vqa_eu": 0.5}, {"step": 3, "loss": 1.0},
               {"step": 4, "eval/demo_vqa_eu": 0.75}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    kept = metrics.truncate(path, 2)
    assert [json.loads(line) for line in kept] == records[:3] == metrics.read(tmp_path)


def test_tasks_without_a_metric_and_bad_settings_fail_before_training(demo_root, tmp_path):
    with pytest.raises(ValueError, match="wildvision_eu need a judge"):
        loop.train(tiny_config(demo_root, eval__tasks="wildvision_eu"), tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        loop.train(tiny_config(demo_root, eval__tasks="nope"), tmp_path)
    with pytest.raises(ValueError, match="every >= 0"):
        loop.train(tiny_config(demo_root, eval__tasks="demo_vqa_en", eval__every=-1), tmp_path)
    assert not (tmp_path / metrics.METRICS_FILE).exists()


@pytest.mark.slow  # three train CLI processes: ~2-3 min on the shared 2-core machine
def test_two_processes_evaluate_as_one(demo_root, tmp_path):
    """The evaluation decodes on the training mesh over both processes' devices (the weights
    stay where training put them); process 0 writes: the same scores and answers as one
    process with as many devices."""
    import socket

    from train_helpers import tiny_flags, train_cli

    with socket.socket() as s:
        s.bind(("localhost", 0))
        address = f"localhost:{s.getsockname()[1]}"
    train_flags = tiny_flags(demo_root, train__num_steps=2, train__checkpoint_every=2,
                             mesh__data=2, mesh__fsdp=2, **EVAL)
    one = train_cli(tmp_path / "one", train_flags, devices=4)
    two = [train_cli(tmp_path / "two", [*train_flags, f"--coordinator_address={address}",
                                        "--num_processes=2", f"--process_id={i}"], devices=2)
           for i in range(2)]
    outs = []
    for proc in (one, *two):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        outs.append(out)
    assert "eval at step 2" in outs[1] and "eval at step 2" not in outs[2]  # process 0 prints
    assert eval_records(tmp_path / "one")[2] | {"eval_time_s": 0, "elapsed_s": 0} == \
        eval_records(tmp_path / "two")[2] | {"eval_time_s": 0, "elapsed_s": 0}
    assert (tmp_path / "one" / "eval" / "step_2.predictions.jsonl").read_text() == \
        (tmp_path / "two" / "eval" / "step_2.predictions.jsonl").read_text()
