"""In-flight vs static batching: the real SmolLM2-135M-Instruct (float32, CPU) answering prompts
whose answers range from 4 to 256 tokens, at the same number of decode slots.

Each prompt gets its own answer budget, spread evenly over [4, 256] and shuffled, and decodes to
it (the end-of-turn stop is off, so an answer's length is its budget). ``static`` decodes batches
of ``--slots`` prompts, each until its longest answer ends; ``inflight`` refills a slot as soon
as its answer ends. Both must give every prompt the same tokens. Generated tokens per second come
from the median of ``--reps`` timed runs, interleaved, after an untimed one (which compiles).
The last stdout line is JSON. Eight prompts per slot by default: the answers that start last run
on alone while the other slots empty, and with fewer prompts that tail is most of the run (an
`evaluate` run has hundreds of prompts per slot).

    python benchmarks/inflight_batching.py [--prompts=64] [--slots=8] [--reps=2]
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from absl import app, flags, logging
from timing import busy_note, interleaved

from basque_vlm.infer import decode, placement
from basque_vlm.infer.engine import BATCHING, Engine, Request
from basque_vlm.infer.prompts import chat_inputs
from basque_vlm.runtime import cli
from basque_vlm.store import checkpoint
from basque_vlm.testing import checkpoints, smollm2

flags.DEFINE_integer("prompts", 64, "prompts answered per run")
flags.DEFINE_integer("slots", 8, "decode slots (static: rows per batch)")
flags.DEFINE_integer("shortest", 4, "the shortest answer budget")
flags.DEFINE_integer("longest", 256, "the longest answer budget")
flags.DEFINE_integer("reps", 2, "timed runs per batching")
FLAGS = flags.FLAGS
TOPICS = ("the sea", "Bilbao", "a red bicycle", "bread", "the mountains", "a cat", "winter",
          "a library")


def workload(processor) -> list[Request]:
    """``--prompts`` text prompts with budgets spread evenly from the shortest to the longest."""
    budgets = np.linspace(FLAGS.shortest, FLAGS.longest, FLAGS.prompts).round().astype(int)
    np.random.default_rng(0).shuffle(budgets)
    return [Request(chat_inputs(processor, [f"Write about {TOPICS[i % len(TOPICS)]}, "
                                            f"part {i}."])["input_ids"][0], int(budget))
            for i, budget in enumerate(budgets)]


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    cli.skip_absent_tpu()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = checkpoints.assembled(smollm2.hf_folder(), Path(tmp) / "ckpt")
        processor = checkpoint.load_processor(ckpt)
        cfg = checkpoint.load_config(ckpt)
        mesh = placement.decode_mesh(cfg, checkpoint.stored_bytes(ckpt), data=1)
        _, model = checkpoint.load_model(ckpt, mesh=mesh,
                                         scan_layers=placement.scans_layers(mesh))
    engine = Engine(decode.for_decoding(model), mesh, slots=FLAGS.slots)
    engine.eos = ()  # every answer runs to its budget
    requests = workload(processor)
    tokens = sum(r.max_new_tokens for r in requests)
    result = {"prompts": len(requests), "slots": FLAGS.slots, "generated_tokens": tokens}
    outputs, first, seconds, busy = interleaved(
        {b: (lambda b=b: engine.generate(requests, b)) for b in BATCHING}, FLAGS.reps)
    for batching in BATCHING:
        result[f"{batching}_tokens_s"] = tokens / seconds[batching]
        result[f"{batching}_first_run_s"] = first[batching]
        print(f"{batching:>8}: {tokens / seconds[batching]:7.1f} tokens/s (median of "
              f"{FLAGS.reps}: {seconds[batching]:.1f} s; first run {first[batching]:.1f} s)",
              flush=True)
    result["speedup"] = result["inflight_tokens_s"] / result["static_tokens_s"]
    result["same_tokens"] = outputs["inflight"] == outputs["static"]
    result["max_other_cpu_share"] = busy
    print(f"in-flight / static: {result['speedup']:.2f}x; same tokens: {result['same_tokens']}; "
          f"{busy_note(busy)}")
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
