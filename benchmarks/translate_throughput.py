"""Translation throughput of the local backend against transformers' batched ``generate``: the
real SmolLM2-135M-Instruct as a text-only checkpoint (float32, CPU) translating the same English
strings into Basque with the default prompt (system message and the shipped en→eu examples in
one user message), greedy, ``--batch`` strings at a time.

Ours is ``translate --model``'s backend (`datagen.translation_backends.CheckpointBackend` over
`eval.runner.Generator`: the mesh engine, in-flight batching); the reference is
``LlamaForCausalLM.generate`` on the same weights and the same rendered prompts, in left-padded
batches of ``--batch`` formed as ours are (by answer budget, by length), each batch until its
longest answer ends or its budget. Each side runs once untimed, then ``--reps`` timed runs,
interleaved; strings/s from the medians; the share of identical translations is reported. The
last stdout line is JSON.

    python benchmarks/translate_throughput.py [--strings=48] [--batch=16] [--reps=2]
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from absl import app, flags, logging
from timing import busy_note, interleaved
from transformers import AutoTokenizer, LlamaForCausalLM

from basque_vlm.datagen import translation_prompt as tp
from basque_vlm.datagen.translation_backends import CheckpointBackend, by_budget, clean
from basque_vlm.eval import runner
from basque_vlm.infer.prompts import chat_inputs
from basque_vlm.runtime import cli
from basque_vlm.testing import checkpoints, smollm2

flags.DEFINE_integer("strings", 48, "English strings translated per run")
flags.DEFINE_integer("batch", 16, "strings decoded together, on both sides")
flags.DEFINE_integer("max_new_tokens", 64, "the longest answer")
flags.DEFINE_integer("reps", 2, "timed runs per side")
FLAGS = flags.FLAGS
SUBJECTS = ("The cat", "A red bicycle", "My grandmother", "The old bridge", "This small village",
            "The library")
PREDICATES = ("is next to the window.", "was built many years ago and is still used today.",
              "sleeps all afternoon.", "is closed on Sundays.",
              "has a garden with apple trees and a blue door.", "is near the river.")


def strings() -> list[str]:
    rng = np.random.default_rng(0)
    return [f"{SUBJECTS[rng.integers(6)]} {PREDICATES[rng.integers(6)]}"
            for _ in range(FLAGS.strings)]


def reference(model, tokenizer, prompt: tp.Prompt, texts: list[str]) -> list[str]:
    """Batched greedy ``generate``, the batches formed as the backend forms them."""
    out = [""] * len(texts)
    for budget, indices in by_budget(texts, FLAGS.max_new_tokens).items():
        indices = sorted(indices, key=lambda i: len(texts[i]))
        for start in range(0, len(indices), FLAGS.batch):
            part = indices[start:start + FLAGS.batch]
            inputs = chat_inputs(tokenizer, [prompt.single(texts[i]) for i in part])
            with torch.no_grad():
                tokens = model.generate(**{k: torch.from_numpy(v) for k, v in inputs.items()},
                                        max_new_tokens=budget, do_sample=False)
            replies = tokenizer.batch_decode(tokens[:, inputs["input_ids"].shape[1]:],
                                             skip_special_tokens=True)
            for i, reply in zip(part, replies):
                out[i] = clean(reply, texts[i])
    return out


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    cli.skip_absent_tpu()
    torch.set_num_threads(2)
    prompt = tp.Prompt(tp.language("en"), tp.language("eu"), examples=tuple(
        tp.read_examples(tp.default_examples(tp.language("en"), tp.language("eu")))))
    texts = strings()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = checkpoints.language_model(smollm2.hf_folder(), Path(tmp) / "ckpt")
        backend = CheckpointBackend(runner.Generator(ckpt, FLAGS.batch), str(ckpt), prompt,
                                    FLAGS.max_new_tokens, chunk=len(texts))
    hf_model = LlamaForCausalLM.from_pretrained(smollm2.hf_folder(), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2.hf_folder())

    def ours() -> list[str]:
        out = [""] * len(texts)
        backend.translate(texts, lambda i, reply: out.__setitem__(i, reply))
        return out

    sides = {"ours": ours, "transformers": lambda: reference(hf_model, tokenizer, prompt, texts)}
    answers, _, seconds, busy = interleaved(sides, FLAGS.reps)
    result = {"strings": len(texts), "batch": FLAGS.batch}
    for name in sides:
        result[f"{name}_strings_s"] = len(texts) / seconds[name]
        print(f"{name:>12}: {result[f'{name}_strings_s']:6.2f} strings/s")
    result["speedup"] = result["ours_strings_s"] / result["transformers_strings_s"]
    result["identical"] = float(np.mean([a == b for a, b in zip(answers["ours"],
                                                                answers["transformers"])]))
    result["max_other_cpu_share"] = busy
    print(f"ours / transformers: {result['speedup']:.2f}x; identical translations: "
          f"{result['identical']:.0%}; {busy_note(busy)}")
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
