"""Multi-process runs for the command-line tools: the flags, and ``jax.distributed`` set up.

``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` on every process (CPU
processes use gloo collectives). On a Cloud TPU VM (TPU chips visible) the processes find each
other by themselves: ``jax.distributed.initialize()`` with no arguments; ``--multihost`` forces
that elsewhere (SLURM, ...), ``--nomultihost`` turns it off. Importing this module defines the
flags, so only CLI modules import it.
"""

from __future__ import annotations

from pathlib import Path

import jax
from absl import flags

flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (multi-process runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
flags.DEFINE_bool("multihost", None, "jax.distributed.initialize() with no arguments (cluster "
                  "auto-detection); default: on a Cloud TPU VM.")
FLAGS = flags.FLAGS


def on_tpu_vm() -> bool:
    """TPU chips visible to this host (``/dev/accel*`` on v4/v5e, ``/dev/vfio/N`` on v5p/v6e)."""
    return any(Path("/dev").glob("accel*")) or any(Path("/dev/vfio").glob("[0-9]*"))


def init() -> None:
    """``jax.distributed.initialize`` as the flags say (nothing for a single process)."""
    explicit = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise ValueError("--coordinator_address, --num_processes and --process_id go "
                             "together")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(*explicit)
    elif FLAGS.multihost if FLAGS.multihost is not None else on_tpu_vm():
        jax.distributed.initialize()
