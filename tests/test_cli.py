"""What every command-line tool shares (``basque_vlm.cli``)."""

import os
import subprocess
import sys

import pytest
from jax._src import hardware_utils

import run_cli
from run_cli import ROOT

START_JAX = ("from basque_vlm import cli; cli.skip_absent_tpu(); import jax; "
             "print(jax.default_backend())")


@pytest.mark.skipif(hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
                    or hardware_utils.has_visible_nvidia_gpu(), reason="an accelerator is here")
def test_no_tpu_runtime_noise_on_a_machine_without_a_tpu():
    # libtpu is installed here (make setup), but this machine has no TPU or GPU: left to itself
    # JAX starts libtpu, which prints a screenful of errors before falling back to the CPU.
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    result = subprocess.run([sys.executable, "-c", START_JAX], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, "cpu\n", "")



def test_a_config_override_of_no_key_is_one_line():
    result = run_cli.run("train", "--config=configs/demo.py", "--workdir=unused",
                         "--config.train.num_step=5")
    run_cli.assert_one_line_error(result, "train", "--config.train.num_step: the config has no key 'num_step'",
                                  'Did you mean "num_steps"')
    result = run_cli.run("train", "--config=configs/demo.py", "--workdir=unused",
                         "--config.train.num_steps=many")
    run_cli.assert_one_line_error(result, "train", "--config.train.num_steps=many")
