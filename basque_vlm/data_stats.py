"""Draw examples from the configured training stream and describe them.

    python -m basque_vlm.data_stats --config=configs/demo.py [--config.data.basque_ratio=0.2] \\
        [--num_examples=2000]

Prints counts by language, source and kind, token-length percentiles, the supervised-token and
padding shares; the last stdout line is JSON (``language_counts``, ``basque_share``, ...).
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from basque_vlm.data import pipeline, stats
from basque_vlm.runtime import cli

config_flags.DEFINE_config_file("config", None, "Experiment config (e.g. configs/demo.py).")
flags.DEFINE_integer("num_examples", 2000, "Examples to draw.")
FLAGS = flags.FLAGS


def _stats() -> None:
    if FLAGS.config is None:
        raise ValueError("--config is required")
    cli.quiet_libraries()
    stream = pipeline.build(FLAGS.config.data)
    try:
        result = stats.collect(stream, FLAGS.num_examples, stream.source_kinds)
    finally:
        stream.close()
    for line in stats.report(result):
        print(line)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    cli.start("data_stats", _stats)
