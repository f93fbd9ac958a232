"""Train (or resume training) a VLM.

    python -m basque_vlm.train --config=configs/demo.py --workdir=workdir/demo \\
        [--config.train.num_steps=200 ...]
    python -m basque_vlm.train --config=configs/llama31_8b.py:instruct --workdir=gs://B/instruct

A second run on the same workdir resumes from its latest checkpoint; SIGTERM saves a checkpoint
after the current step and exits 0. The workdir reads as a project checkpoint (its latest step)
for ``generate``, ``evaluate`` and ``export``.

Multi-host: ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` on every process
(CPU processes use gloo collectives). On a Cloud TPU VM (TPU chips visible) the processes find
each other by themselves: ``jax.distributed.initialize()`` is called with no arguments;
``--multihost`` forces that elsewhere (SLURM, ...), ``--nomultihost`` turns it off.
"""

from __future__ import annotations

import jax
from absl import flags
from ml_collections import config_flags

from basque_vlm.runtime import cli, distributed, paths

config_flags.DEFINE_config_file("config", None, "Experiment config (e.g. configs/demo.py; the "
                                "8B configs take the stage: configs/llama31_8b.py:instruct).")
flags.DEFINE_string("workdir", None, "Checkpoints, metrics.jsonl, tensorboard/; resumed when it "
                    "has any. A local folder or a gs:// URL.")
FLAGS = flags.FLAGS


def _train() -> None:
    if FLAGS.config is None or not FLAGS.workdir:
        raise ValueError("--config and --workdir are required")
    distributed.init()
    cli.quiet_libraries()
    cli.reuse_memory_on_cpu()
    from basque_vlm.training import loop  # after jax.distributed, which must come first

    with distributed.stop_on_lost_process("train"):
        result = loop.train(FLAGS.config, FLAGS.workdir)
    if jax.process_index() == 0:
        loss = "" if result.last is None else f": loss {result.last['loss']:.4f}"
        print(f"step {result.step}{loss}; the workdir {paths.path(FLAGS.workdir)} reads as "
              "a checkpoint (its latest step) for generate, evaluate and export", flush=True)


if __name__ == "__main__":
    cli.start("train", _train)
