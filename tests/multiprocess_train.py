"""One process of a multi-process CPU training run whose data runs out early on process 1.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/multiprocess_train.py \\
        HOST:PORT NUM_PROCESSES PROCESS_ID WORKDIR DEMO_ROOT BATCHES_ON_PROCESS_1

Prints the loop's result as JSON on its last stdout line.
"""

import dataclasses
import json
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).parent))


class Truncated:
    """A pipeline that runs out after ``limit`` batches."""

    def __init__(self, data, limit: int):
        self.data, self.limit, self.drawn = data, limit, 0

    def __next__(self):
        if self.drawn >= self.limit:
            raise StopIteration
        self.drawn += 1
        return next(self.data)

    def __getattr__(self, name):  # get_state, set_state, close
        return getattr(self.data, name)


def main(address: str, num: str, index: str, workdir: str, root: str, limit: str) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(address, int(num), int(index))
    from absl import flags

    from basque_vlm.data import pipeline
    from basque_vlm.training import loop
    from train_helpers import tiny_config

    flags.FLAGS.mark_as_parsed()
    config = tiny_config(Path(root), train__num_steps=10, train__checkpoint_every=10)
    data = pipeline.build(config.data, jax.process_index(), jax.process_count())
    if jax.process_index() == 1:
        data = Truncated(data, int(limit))
    result = loop.train(config, workdir, data=data)
    print(json.dumps(dataclasses.asdict(result)), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
