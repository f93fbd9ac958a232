"""Cloud Storage failing under a training run (the tests' server, `gcs_server`): a share of the
requests answered 503, or their connections dropped, for some seconds while the run trains and
saves. The clients retry (gcsfs up to 6 times over ~30 s, tensorstore up to 32 times with a
backoff to 32 s): the run goes on to the same losses. An outage longer than gcsfs's retries
stops it with one line on stderr, and no checkpoint is recorded as complete unless it is."""

import time

import numpy as np
import pytest
from train_helpers import losses, tiny_flags, train_cli, train_to_end

from basque_vlm.runtime import paths
from basque_vlm.store import checkpoint
from basque_vlm.training import metrics

STEPS = 8
URL = "gs://bucket/run"


def flags(root, steps: int = STEPS, every: int = 2):
    return tiny_flags(root, train__num_steps=steps, train__checkpoint_every=every)


@pytest.fixture(scope="module")
def reference(demo_root, tmp_path_factory):
    """The losses of an undisturbed run."""
    workdir = tmp_path_factory.mktemp("reference")
    train_to_end(workdir, flags(demo_root))
    return losses(workdir)


def start_failing_after(gcs, proc, name: str, **faults) -> None:
    """Turns the faults on once the run has written the object ``name``."""
    deadline = time.monotonic() + 200
    while not gcs.names(name):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    gcs.fail(**faults)


@pytest.mark.slow  # a run's compilation per case, and the retries' backoff
@pytest.mark.parametrize("drop", [False, True], ids=["503", "dropped_connections"])
def test_failing_requests_are_retried_and_the_run_goes_on(gcs, demo_root, reference, drop):
    proc = train_cli(URL, flags(demo_root))
    # from the first checkpoint on: the next three saves and the metrics meet the faults
    start_failing_after(gcs, proc, "run/checkpoints/2/commit_success.txt", share=0.5,
                        seconds=20, drop=drop)
    _, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err
    assert gcs.state()["failed"] > 10
    logged = {r["step"]: r["loss"] for r in metrics.read(URL) if "loss" in r}
    assert sorted(logged) == sorted(reference)
    np.testing.assert_allclose(logged[STEPS], reference[STEPS], rtol=1e-6)
    assert checkpoint.workdir_steps(URL) == [8, 6, 4]


@pytest.mark.slow  # gcsfs's retries take ~30 s to give up
def test_an_outage_stops_the_run_in_one_line_and_records_no_partial_step(gcs, demo_root):
    proc = train_cli(URL, flags(demo_root, steps=10_000, every=50))
    start_failing_after(gcs, proc, "run/checkpoints/50/commit_success.txt", share=1.0,
                        seconds=60)
    _, err = proc.communicate(timeout=400)
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if line.startswith("train: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    steps = checkpoint.workdir_steps(URL)
    assert 50 in steps
    for step in steps:  # each step recorded complete loads
        checkpoint._restore(paths.path(URL) / "checkpoints" / str(step) / "params", None)
