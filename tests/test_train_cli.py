"""The train CLI as a user runs it: SIGTERM then rerun resumes exactly; a checkpoint written on an
8-device mesh resumes on 2 devices."""

import shutil
import signal
import time

import jax
import numpy as np
import pytest
from train_helpers import losses, tiny_flags, train_cli

from basque_vlm.store import checkpoint

pytestmark = pytest.mark.slow  # two 60-step runs on 8 devices, then two resumes

STEPS = 60
MESH_2X2X2 = {"mesh__data": 2, "mesh__fsdp": 2, "mesh__tensor": 2}


def flags(root):
    return tiny_flags(root, train__num_steps=STEPS, train__checkpoint_every=STEPS, **MESH_2X2X2)


def finish(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


def logged_steps(workdir):
    path = workdir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


@pytest.fixture(scope="module")
def runs(demo_root, tmp_path_factory):
    """An uninterrupted run, and the same run stopped by SIGTERM (both on a 2×2×2 mesh)."""
    root = tmp_path_factory.mktemp("runs")
    reference, stopped = root / "reference", root / "stopped"
    proc = train_cli(stopped, flags(demo_root))
    reference_proc = train_cli(reference, flags(demo_root))
    deadline = time.monotonic() + 200
    while logged_steps(stopped) < 5:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out = finish(proc)
    finish(reference_proc)
    return reference, stopped, out


def test_sigterm_saves_and_a_rerun_resumes_exactly(demo_root, runs, tmp_path):
    reference, stopped, out = runs
    saved = checkpoint.workdir_steps(stopped)
    assert len(saved) == 1 and 5 <= saved[0] < STEPS, saved
    assert f"stopped by SIGTERM: saved step {saved[0]}" in out
    assert sorted(losses(stopped)) == list(range(1, saved[0] + 1))
    resumed = tmp_path / "resumed"
    shutil.copytree(stopped, resumed)
    finish(train_cli(resumed, flags(demo_root)))
    assert sorted(losses(resumed)) == list(range(1, STEPS + 1))  # each step once
    np.testing.assert_allclose(losses(resumed)[STEPS], losses(reference)[STEPS], rtol=1e-6)


def test_a_checkpoint_from_8_devices_resumes_on_2(demo_root, runs, tmp_path):
    reference, stopped, _ = runs
    resumed = tmp_path / "resumed"
    shutil.copytree(stopped, resumed)
    two = tiny_flags(demo_root, train__num_steps=STEPS, train__checkpoint_every=STEPS,
                     mesh__data=1, mesh__fsdp=2, mesh__tensor=1)
    finish(train_cli(resumed, two, devices=2))
    np.testing.assert_allclose(losses(resumed)[STEPS], losses(reference)[STEPS], rtol=1e-4)
    # ... and the workdir saved on 2 devices reads as a checkpoint on this process's 8
    got, want = checkpoint.load_params(resumed), checkpoint.load_params(reference)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
