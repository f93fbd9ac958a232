"""What every command-line tool shares (``basque_vlm.cli``)."""

import os
import subprocess
import sys

from run_cli import ROOT

START_JAX = ("from basque_vlm import cli; cli.skip_absent_tpu(); import jax; "
             "print(jax.default_backend())")


def test_no_tpu_runtime_noise_on_a_machine_without_a_tpu():
    # libtpu is installed here (make setup), but this machine has no TPU or GPU: left to itself
    # JAX starts libtpu, which prints a screenful of errors before falling back to the CPU.
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    result = subprocess.run([sys.executable, "-c", START_JAX], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, "cpu\n", "")

