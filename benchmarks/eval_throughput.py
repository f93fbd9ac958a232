"""Evaluation throughput: ``vqav2_en`` fixture data answered by a VLM whose LLM is the real
SmolLM2-135M-Instruct (a tiny random CLIP tower and a fresh linear connector in front), float32
on CPU, at batch 1 and batch 16.

Each batch size first runs once untimed (compiles every prompt-length bucket), then ``--reps``
timed runs over the same samples; samples/s is from the median. Predictions must be the same at
both batch sizes (a row's answer does not depend on its batch). The CPU share that other
processes used during the timed runs is reported: the numbers are only as good as the machine was
quiet. The last stdout line is JSON.

    python benchmarks/eval_throughput.py [--samples=32] [--reps=3]
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

from absl import app, flags, logging
from timing import timed_call

from basque_vlm.eval import runner, tasks
from basque_vlm.testing import checkpoints, eval_fixtures, smollm2

flags.DEFINE_integer("samples", 32, "vqav2_en fixture samples")
flags.DEFINE_integer("reps", 3, "timed runs per batch size")
FLAGS = flags.FLAGS
BATCHES = (1, 16)


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    task = tasks.TASKS["vqav2_en"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = checkpoints.assembled(smollm2.hf_folder(), root / "ckpt")
        eval_fixtures.write_parquet(root / "data" / "vqav2_en" / "val.parquet",
                                    eval_fixtures.vqav2("en", FLAGS.samples))
        samples, _ = runner.load_samples(task, root / "data", None)
        generator = runner.Generator(ckpt, BATCHES[0])

    def run(batch: int) -> list[str]:
        generator.batch_size = batch
        records = runner.answer(task, samples, generator, "en")
        return [r["prediction"] for r in records]

    result: dict = {"samples": len(samples), "max_new_tokens": task.max_new_tokens}
    predictions, busy = {}, []
    for b in BATCHES:
        predictions[b], first, _ = timed_call(lambda: run(b), quiet=False)
        times = []
        for _ in range(FLAGS.reps):
            _, seconds, other = timed_call(lambda: run(b), quiet=False)
            times.append(seconds)
            busy.append(other)
        median = statistics.median(times)
        result[f"b{b}_samples_s"] = len(samples) / median
        result[f"b{b}_compile_s"] = first - median
        print(f"batch {b:>2}: {len(samples) / median:6.2f} samples/s (median of {FLAGS.reps}: "
              f"{median:.1f} s; first run {first:.1f} s)")
    result["speedup"] = result[f"b{BATCHES[-1]}_samples_s"] / result[f"b{BATCHES[0]}_samples_s"]
    result["same_predictions"] = predictions[BATCHES[0]] == predictions[BATCHES[-1]]
    result["max_other_cpu_share"] = max(busy)
    print(f"batched speed-up: {result['speedup']:.1f}x; same predictions: "
          f"{result['same_predictions']}; other processes' CPU share up to {max(busy):.0%}")
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
