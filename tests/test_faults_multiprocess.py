"""One of two training processes killed mid-run: the survivor does not hang in a collective; it
exits non-zero with a one-line reason within a bounded time, and a rerun of both resumes from
the last checkpoint to the same losses as an uninterrupted run."""

import signal
import socket
import time

import numpy as np
import pytest
from train_helpers import losses, tiny_flags, train_cli

from basque_vlm.store import checkpoint

STEPS = 60
# The survivor's bound: the heartbeat timeout of `runtime.distributed` (--heartbeat_timeout_s),
# plus start-up and the test's polling.
HEARTBEAT_S = 10
BOUND_S = 60
JAX_ABORT = "Terminating process because the JAX distributed service detected fatal errors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(workdir, root):
    flags = tiny_flags(root, train__num_steps=STEPS, train__checkpoint_every=10,
                       mesh__data=2, mesh__fsdp=2)
    address = f"127.0.0.1:{free_port()}"
    return [train_cli(workdir, [*flags, f"--coordinator_address={address}",
                                "--num_processes=2", f"--process_id={i}",
                                f"--heartbeat_timeout_s={HEARTBEAT_S}"], devices=2)
            for i in range(2)]


@pytest.mark.slow  # three runs of two processes
def test_a_killed_process_stops_the_other_in_one_line_and_both_resume(demo_root, tmp_path):
    reference = two_processes(tmp_path / "reference", demo_root)
    survivor, victim = two_processes(tmp_path / "run", demo_root)
    deadline = time.monotonic() + 200
    while not checkpoint.workdir_steps(tmp_path / "run"):
        assert survivor.poll() is None and time.monotonic() < deadline, survivor.communicate()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.communicate()
    _, err = survivor.communicate(timeout=BOUND_S)
    assert time.monotonic() - killed_at < BOUND_S and survivor.returncode != 0
    # at once, in one line, when its collective fails; else JAX's abort at the heartbeat timeout
    ours = [line for line in err.splitlines() if line.startswith("train: process 0 of 2 stops")]
    assert (len(ours) == 1 and "Traceback" not in err) or JAX_ABORT in err, err
    for proc in (*two_processes(tmp_path / "run", demo_root), *reference):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    got, want = losses(tmp_path / "run"), losses(tmp_path / "reference")
    assert sorted(got) == list(range(1, STEPS + 1))
    np.testing.assert_allclose(got[STEPS], want[STEPS], rtol=1e-6)
