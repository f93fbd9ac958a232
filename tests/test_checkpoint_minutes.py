"""Time-based checkpoints (``train.checkpoint_every_minutes``): a save once that much wall time has
passed since the last one, at the step every process agrees on, and a run killed after one
resumes exactly where it was saved.

The wall clock is injected (``loop.train(..., clock=...)``): here it moves one minute per batch
drawn, so the saves fall on known steps however fast this machine is.
"""

import numpy as np
import pytest
from absl import flags
from train_helpers import ListData, losses, pipeline_batches, tiny_config

from basque_vlm.store import checkpoint
from basque_vlm.training import configs, loop, preemption

MINUTE = 60.0


@pytest.fixture(scope="module", autouse=True)
def parsed_flags():
    flags.FLAGS.mark_as_parsed()  # Grain reads absl flags


@pytest.fixture(scope="module")
def batches(demo_root):
    return pipeline_batches(demo_root, 8)


class Killed(Exception):
    """The process dies: nothing more is saved."""


def minutes_drawn(data: ListData):
    """A clock that reads one minute per batch ``data`` has given."""
    return lambda: data.step * MINUTE


def kill_at(step: int):
    def change(drawn: int, batch: dict) -> dict:
        if drawn == step:
            raise Killed(f"killed while drawing the batch of step {step}")
        return batch
    return change


def timed_config(root, num_steps=8):
    # Steps would save every 100: every save below is a time-based one (or the last step's).
    return tiny_config(root, train__num_steps=num_steps, train__checkpoint_every=100,
                       train__checkpoint_every_minutes=2.5)


def test_the_builder_leaves_it_off_by_default():
    assert configs.train(num_steps=10).checkpoint_every_minutes is None
    assert configs.train(num_steps=10, checkpoint_every_minutes=30).checkpoint_every_minutes \
        == 30.0


@pytest.mark.slow  # three runs' compilation
def test_saves_by_wall_time_and_a_killed_run_resumes_exactly(demo_root, batches, tmp_path):
    config = timed_config(demo_root)
    reference, run = tmp_path / "reference", tmp_path / "run"

    data = ListData(batches)
    result = loop.train(config, reference, data=data, clock=minutes_drawn(data))
    assert (result.step, result.stopped) == (8, "done")
    # 2.5 minutes after the start (step 0) is reached at step 3, 2.5 after that at step 6
    assert checkpoint.workdir_steps(reference) == [8, 6, 3]

    data = ListData(batches, kill_at(5))
    with pytest.raises(Killed):
        loop.train(config, run, data=data, clock=minutes_drawn(data))
    assert checkpoint.workdir_steps(run) == [3]

    data = ListData(batches)
    result = loop.train(config, run, data=data, clock=minutes_drawn(data))
    assert (result.step, result.stopped) == (8, "done")
    assert checkpoint.workdir_steps(run) == [8, 6, 3]  # the clock restarts at the resume
    assert sorted(losses(run)) == list(range(1, 9))
    np.testing.assert_allclose(list(losses(run).values()), list(losses(reference).values()),
                               rtol=1e-6)


@pytest.mark.slow  # a run's compilation
def test_every_process_saves_when_any_clock_says_so(demo_root, batches, tmp_path, monkeypatch):
    """The loop saves on the agreed flag (`preemption.agree`, as for SIGTERM), not on its own
    clock: here another process's clock calls for a save at step 2, this one's never does."""
    asked = []

    def agree(flags):
        asked.append(tuple(flags))
        stop, exhausted, due = flags
        return stop, exhausted, due or len(asked) == 2

    monkeypatch.setattr(preemption, "agree", agree)
    config = timed_config(demo_root, num_steps=4)
    loop.train(config, tmp_path, data=ListData(batches[:4]), clock=lambda: 0.0)
    assert checkpoint.workdir_steps(tmp_path) == [4, 2]
    assert asked == [(False, False, False)] * 4
