"""Multi-process runs for the command-line tools: the flags, and ``jax.distributed`` set up.

``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` on every process (CPU
processes use gloo collectives). On a Cloud TPU VM (TPU chips visible) the processes find each
other by themselves: ``jax.distributed.initialize()`` with no arguments; ``--multihost`` forces
that elsewhere (SLURM, ...), ``--nomultihost`` turns it off. Importing this module defines the
flags, so only CLI modules import it.

When a process dies (killed, preempted, out of memory), the others learn it in one of two ways:

- in a collective (every training step has some): its connection is reset, the collective
  fails at once, and `stop_on_lost_process` ends this process with one line;
- otherwise, from the coordination service, once the dead process has sent no heartbeat for
  ``--heartbeat_timeout_s`` (JAX's default, 100 s): JAX then aborts every process with its own
  message ("Terminating process because the JAX distributed service detected fatal errors").

``--initialization_timeout_s`` (JAX's default, 300 s) bounds the wait for every process to join
at the start.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import jax
from absl import flags

flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (multi-process runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
flags.DEFINE_bool("multihost", None, "jax.distributed.initialize() with no arguments (cluster "
                  "auto-detection); default: on a Cloud TPU VM.")
flags.DEFINE_integer("heartbeat_timeout_s", 100, "Seconds without a heartbeat after which a "
                     "process counts as dead and the run stops (multi-process runs).")
flags.DEFINE_integer("initialization_timeout_s", 300, "Seconds the processes wait for each "
                     "other to start (multi-process runs).")
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
        jax.distributed.initialize(*explicit, **_timeouts())
    elif FLAGS.multihost if FLAGS.multihost is not None else on_tpu_vm():
        jax.distributed.initialize(**_timeouts())


def _timeouts() -> dict[str, int]:
    return {"initialization_timeout": FLAGS.initialization_timeout_s,
            "heartbeat_timeout_seconds": FLAGS.heartbeat_timeout_s}


@contextlib.contextmanager
def stop_on_lost_process(prog: str) -> Iterator[None]:
    """In a multi-process run, a failed collective (another process gone, most often) ends this
    process at once: ``prog: <reason>`` on stderr, exit 1. Not with a traceback, and not through
    JAX's exit handler, which would wait for the lost process until the heartbeat timeout and
    then abort."""
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1:
            raise
        reason = " ".join(str(e).split())
        print(f"{prog}: process {jax.process_index()} of {jax.process_count()} stops: {reason}; "
              "if another process of the run died, rerun all of them to resume from the last "
              "checkpoint", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
