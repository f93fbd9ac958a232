"""Restores a data pipeline from a saved state in a fresh process and saves the next batches.

    python tests/pipeline_restore.py DATA_ROOT STATE_JSON NUM_WORKERS STEPS OUT_NPZ
"""

import json
import sys
from pathlib import Path

from absl import app

sys.path.insert(0, str(Path(__file__).parent))

from basque_vlm.data import pipeline  # noqa: E402
from data_helpers import demo_config, draw, save_batches  # noqa: E402


def main(argv):
    root, state, workers, steps, out = argv[1:]
    stream = pipeline.build(demo_config(Path(root), num_workers=int(workers)).data)
    stream.set_state(json.loads(Path(state).read_text()))
    try:
        save_batches(Path(out), draw(stream, int(steps)))
    finally:
        stream.close()


if __name__ == "__main__":
    app.run(main)
