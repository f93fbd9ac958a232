"""Evaluation throughput against what lmms-eval users run: ``vqav2_en`` fixture data answered by
a VLM whose LLM is the real SmolLM2-135M-Instruct (a tiny random CLIP tower and a fresh linear
connector in front), float32 on CPU, 16 prompts at a time.

Ours is ``evaluate``'s answering step (`eval.runner.Generator`: the engine's in-flight batching,
and static batches for comparison); the reference is transformers' ``LlavaForConditionalGeneration
.generate`` on the same weights and the same rendered prompts, greedy, in left-padded batches of
16 (as lmms-eval's llava backend runs it). Each side runs once untimed (compiles, warms up), then
``--reps`` timed runs, interleaved; samples/s from the medians. The share of predictions that
agree is reported (float32 on both sides: expect all). The last stdout line is JSON.

    python benchmarks/eval_throughput.py [--samples=64] [--reps=3] [--batch=16]
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import reference
import torch
from absl import app, flags, logging
from timing import busy_note, interleaved

from basque_vlm.eval import runner, tasks
from basque_vlm.eval.taskdata import decode_image
from basque_vlm.infer import placement
from basque_vlm.infer.prompts import chat_inputs
from basque_vlm.runtime import cli
from basque_vlm.store import checkpoint
from basque_vlm.testing import checkpoints, eval_fixtures, smollm2

flags.DEFINE_integer("samples", 64, "vqav2_en fixture samples")
flags.DEFINE_integer("reps", 3, "timed runs per side")
flags.DEFINE_integer("batch", 16, "prompts decoded together, on both sides")
FLAGS = flags.FLAGS


def transformers_answers(model, processor, prompts, images, max_new_tokens: int) -> list[str]:
    """Batched greedy ``generate``, ``--batch`` prompts at a time, left-padded."""
    answers = []
    for start in range(0, len(prompts), FLAGS.batch):
        chunk = slice(start, start + FLAGS.batch)
        inputs = chat_inputs(processor, prompts[chunk], [i() for i in images[chunk]])
        with torch.no_grad():
            out = model.generate(**{k: torch.from_numpy(v) for k, v in inputs.items()},
                                 max_new_tokens=max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        answers += [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]
    return answers


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    cli.skip_absent_tpu()
    torch.set_num_threads(2)
    task = tasks.TASKS["vqav2_en"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = checkpoints.assembled(smollm2.hf_folder(), root / "ckpt")
        eval_fixtures.write_parquet(root / "data" / "vqav2_en" / "val.parquet",
                                    eval_fixtures.vqav2("en", FLAGS.samples))
        samples, _ = runner.load_samples(task, root / "data", None)
        cfg = checkpoint.load_config(ckpt)
        mesh = placement.decode_mesh(cfg, checkpoint.stored_bytes(ckpt))
        _, model = checkpoint.load_model(ckpt, mesh=mesh,
                                         scan_layers=placement.scans_layers(mesh))
        processor = checkpoint.load_processor(ckpt)
        generators = {b: runner.Generator.from_model(model, processor, FLAGS.batch, mesh, b)
                      for b in ("inflight", "static")}
        hf_model = reference.llava(cfg, checkpoint.load_params(ckpt), "cpu").eval()
    prompts = [task.prompt(s, "en") for s in samples]
    images = [lambda s=s: decode_image(s.image, s.where) for s in samples]
    sides = {f"ours_{b}": (lambda g=g: g(prompts, images, task.max_new_tokens))
             for b, g in generators.items()}
    sides["transformers"] = lambda: transformers_answers(hf_model, processor, prompts, images,
                                                         task.max_new_tokens)
    answers, _, seconds, busy = interleaved(sides, FLAGS.reps)
    result = {"samples": len(samples), "batch": FLAGS.batch,
              "max_new_tokens": task.max_new_tokens}
    for name in sides:
        result[f"{name}_samples_s"] = len(samples) / seconds[name]
        print(f"{name:>16}: {result[f'{name}_samples_s']:6.2f} samples/s")
    for name in ("ours_inflight", "ours_static"):
        result[f"{name}_speedup"] = result[f"{name}_samples_s"] / result[
            "transformers_samples_s"]
        result[f"{name}_agreement"] = float(np.mean([a == b for a, b in zip(
            answers[name], answers["transformers"])]))
    result["max_other_cpu_share"] = busy
    print(f"ours (in flight) / transformers: {result['ours_inflight_speedup']:.2f}x; "
          f"predictions agree on {result['ours_inflight_agreement']:.0%}; {busy_note(busy)}")
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
