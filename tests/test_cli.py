"""What every command-line tool shares (``basque_vlm.cli``)."""

import os
import subprocess
import sys

import pytest
import run_cli
from jax._src import hardware_utils
from run_cli import ROOT

START_JAX = ("from basque_vlm.runtime import cli; cli.skip_absent_tpu(); import jax; "
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


FAULT_PROBE = """
import resource
from basque_vlm.runtime import cli
from basque_vlm import train  # noqa: F401  (what the tool imports comes first)
cli.skip_absent_tpu()
cli.reuse_memory_on_cpu()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.cumsum(jnp.sin(x)).sum())
x = jnp.ones(2**25)
temp = f.lower(x).compile().memory_analysis().temp_size_in_bytes
for _ in range(8):
    f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    f(x).block_until_ready()
print(temp, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_cpu_executions_reuse_their_temporary_memory():
    """With glibc's defaults each execution maps its temporary buffer afresh and page-faults all
    of it in (256 MiB here: 65,536 faults per execution); `cli.reuse_memory_on_cpu` keeps freed
    memory, so the executions reuse it. The heap settles over a few executions: one may start
    before the last one's buffer is freed, and then the heap grows by a buffer."""
    result = subprocess.run([sys.executable, "-c", FAULT_PROBE], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr
    temp, faults = map(int, result.stdout.split())
    assert temp >= 2**27  # past the largest size glibc would serve from a heap by default
    assert faults < 5 * temp / 4096  # glibc's defaults: 10 × (temp / 4096)


def test_a_config_override_of_no_key_is_one_line():
    result = run_cli.run("train", "--config=configs/demo.py", "--workdir=unused",
                         "--config.train.num_step=5")
    run_cli.assert_one_line_error(result, "train",
                                  "--config.train.num_step: the config has no key 'num_step'",
                                  'Did you mean "num_steps"')
    result = run_cli.run("train", "--config=configs/demo.py", "--workdir=unused",
                         "--config.train.num_steps=many")
    run_cli.assert_one_line_error(result, "train", "--config.train.num_steps=many")
