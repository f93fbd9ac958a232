"""Several CPU processes (gloo collectives) train as one: the same losses as one process with as
many devices, and a process whose data runs out first ends the run cleanly on all of them."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from data_helpers import REPO
from train_helpers import losses, tiny_flags, train_cli

from basque_vlm.store import checkpoint
from basque_vlm.training import preemption


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


def test_a_single_process_agrees_with_itself():
    assert preemption.agree((True, False)) == (True, False)


@pytest.mark.slow
def test_two_processes_of_two_devices_match_one_process_of_four(demo_root, tmp_path):
    flags = tiny_flags(demo_root, train__num_steps=6, train__checkpoint_every=3,
                       mesh__data=2, mesh__fsdp=2)
    one = train_cli(tmp_path / "one", flags, devices=4)
    address = f"localhost:{free_port()}"
    two = [train_cli(tmp_path / "two", [*flags, f"--coordinator_address={address}",
                                        "--num_processes=2", f"--process_id={i}"], devices=2)
           for i in range(2)]
    for proc in (one, *two):
        finish(proc)
    assert checkpoint.workdir_steps(tmp_path / "two") == [6, 3]
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-5)


@pytest.mark.slow
def test_one_process_running_out_of_data_ends_the_run_everywhere(demo_root, tmp_path):
    address = f"localhost:{free_port()}"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "multiprocess_train.py"), address, "2", str(i),
         str(tmp_path), str(demo_root), "3"], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [json.loads(finish(p).strip().splitlines()[-1]) for p in procs]
    for result in results:
        assert (result["step"], result["stopped"]) == (3, "data_exhausted")
    assert checkpoint.workdir_steps(tmp_path) == [3]
