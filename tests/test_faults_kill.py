"""``kill -9`` of ``train`` at chosen moments of an asynchronous checkpoint write to ``gs://``:
the rerun resumes from the newest complete step, never from a partial one, and reaches the same
final loss as an uninterrupted run.

The moments are made exact by the tests' Cloud Storage server (`gcs_server`): it holds the
first request that matches a pattern unanswered, the test kills the trainer while it waits, and
the held request is then dropped. Orbax marks a step complete on Cloud Storage by writing
``STEP/commit_success.txt`` last; the three moments are before it (the step's parameters being
uploaded), during it (its upload in flight) and after it (the next step's upload held)."""

import signal
import time

import numpy as np
import pytest
from train_helpers import losses, tiny_flags, train_cli, train_to_end

from basque_vlm.store import checkpoint
from basque_vlm.training import metrics

STEPS = 6
SAVED = 4  # the save that is interrupted; steps 2, 4 and 6 are saved

# moment: (the request held, the marker waited for, the complete steps left)
MOMENTS = {
    "before_commit": (rf"POST /upload/.*checkpoints/{SAVED}/params/", None, [2]),
    "during_commit": (rf"POST /upload/.*checkpoints/{SAVED}/commit_success", None, [2]),
    "after_commit": (rf"POST /upload/.*checkpoints/{STEPS}/", SAVED, [SAVED, 2]),
}


def flags(root):
    return tiny_flags(root, train__num_steps=STEPS, train__checkpoint_every=2)


@pytest.fixture(scope="module")
def reference(demo_root, tmp_path_factory):
    """The final loss of an uninterrupted run."""
    workdir = tmp_path_factory.mktemp("reference")
    train_to_end(workdir, flags(demo_root))
    return losses(workdir)[STEPS]


def wait_until(ready, proc, timeout: float = 200) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)


@pytest.mark.slow  # two runs' compilation per moment
@pytest.mark.parametrize("moment", sorted(MOMENTS))
def test_kill_9_during_an_async_save_resumes_from_the_newest_complete_step(
        gcs, demo_root, reference, moment):
    pattern, marker, complete = MOMENTS[moment]
    url = f"gs://bucket/{moment}"
    gcs.hold(pattern)
    proc = train_cli(url, flags(demo_root))
    wait_until(lambda: gcs.held(), proc)
    if marker is not None:
        wait_until(lambda: gcs.names(f"{moment}/checkpoints/{marker}/commit_success"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gcs.release()

    assert checkpoint.workdir_steps(url) == complete
    checkpoint.load_params(url)  # the newest complete step reads as a checkpoint
    out = train_to_end(url, flags(demo_root))
    assert out.splitlines()[0].startswith(f"step {complete[0] + 1}/{STEPS} "), out
    logged = {r["step"]: r["loss"] for r in metrics.read(url) if "loss" in r}
    assert sorted(logged) == list(range(1, STEPS + 1))  # each step once
    np.testing.assert_allclose(logged[STEPS], reference, rtol=1e-6)
    assert checkpoint.workdir_steps(url)[0] == STEPS
