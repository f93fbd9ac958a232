"""Decode throughput: our jitted generation vs transformers' ``generate``: SmolLM2-135M float32
(``--preset=smollm2``, the default), or a benchmark preset with random weights in ``--dtype`` (e.g.
``--preset=1b --dtype=bfloat16`` on a GPU; text-only random prompts).

Both decode exactly ``--new_tokens`` greedy tokens (end-of-turn stopping off) from the same
left-padded chat prompts at batch 1 and 8. Repetitions are interleaved so that drift of the machine
hits both sides alike; before each one we wait (a while) for the machine to be quiet, and during
each we record the CPU share that other processes used. Compile time (our first call minus our
fastest call) is reported apart. The same run measures the memory read bandwidth, which bounds
batch-1 decoding: every step reads all the weights. At batch 1 each side is also timed with one
new token (the prompt's prefill and the first token), so that the decoding steps' own rate (the
full call less that one, per step) compares with the bound. The last stdout line is JSON.

    python benchmarks/decode_throughput.py [--reps=5] [--new_tokens=64] [--scan_layers]
    python benchmarks/decode_throughput.py --preset=1b --dtype=bfloat16 --scan_layers
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import presets
import reference
import torch
from absl import app, flags, logging
from flax import nnx
from timing import BUSY_WARN, read_bandwidth, timed_call
from transformers import AutoTokenizer, LlamaForCausalLM

from basque_vlm.infer import decode
from basque_vlm.infer.prompts import chat_inputs
from basque_vlm.model.vlm import VLM
from basque_vlm.store import checkpoint
from basque_vlm.testing import checkpoints, smollm2

flags.DEFINE_integer("reps", 5, "timed repetitions of each case")
flags.DEFINE_integer("new_tokens", 64, "tokens generated per row")
flags.DEFINE_bool("scan_layers", False, "decode with lax.scan over layers (default: unrolled)")
flags.DEFINE_string("preset", "smollm2", "smollm2 (real weights), or a benchmarks/presets.py "
                    "model with random weights (e.g. 1b on a GPU)")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "weights and compute of a preset")
flags.DEFINE_integer("prompt_length", 128, "prompt tokens per row of a preset")
FLAGS = flags.FLAGS

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "Hi!",
           "Explain in two sentences why the sky is blue.", "Zer da Euskal Herriko hiriburua?",
           "List three fruits.", "What is 12 times 7? Answer with the number only.",
           "Give me a short motivational quote about learning new languages every day."]
BATCHES = (1, 8)
THREADS = 2


def smollm2_models(device: str) -> tuple[VLM, torch.nn.Module, dict[int, dict]]:
    """SmolLM2-135M-Instruct (float32) and chat prompts."""
    llm_dir = smollm2.hf_folder()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = checkpoints.assembled(llm_dir, Path(tmp) / "ckpt")
        _, ours = checkpoint.load_model(ckpt, scan_layers=FLAGS.scan_layers)
    theirs = LlamaForCausalLM.from_pretrained(llm_dir, dtype=torch.float32).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    return ours, theirs, {b: chat_inputs(tokenizer, PROMPTS[:b]) for b in BATCHES}


def preset_models(name: str, device: str) -> tuple[VLM, torch.nn.Module, dict[int, dict]]:
    """A random model of a benchmark preset, its weights in ``--dtype``, and random prompts of
    ``--prompt_length`` tokens (text only: decoding reads the language model)."""
    cfg = presets.config(presets.get(name), dtype=FLAGS.dtype, scan_layers=FLAGS.scan_layers)
    model = VLM(cfg, nnx.Rngs(0))
    params = nnx.state(model).to_pure_dict()
    theirs = reference.llava(cfg, jax.device_get(params), device, getattr(torch, FLAGS.dtype))
    graphdef, state = nnx.split(model)
    ours = nnx.merge(graphdef, jax.tree.map(lambda a: a.astype(FLAGS.dtype), state))
    rng = np.random.default_rng(0)
    cases = {b: {"input_ids": rng.integers(8, cfg.text.vocab_size, (b, FLAGS.prompt_length),
                                           dtype=np.int64),
                 "attention_mask": np.ones((b, FLAGS.prompt_length), np.int64)}
             for b in BATCHES}
    return ours, theirs.eval(), cases


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    torch.set_num_threads(THREADS)
    new_tokens = FLAGS.new_tokens
    backend = jax.default_backend()
    device = "cuda" if backend == "gpu" and torch.cuda.is_available() else "cpu"
    bandwidth = read_bandwidth(on_device=backend != "cpu")
    ours, theirs, cases = (smollm2_models(device) if FLAGS.preset == "smollm2"
                           else preset_models(FLAGS.preset, device))
    ours = decode.for_decoding(ours)  # as the evaluation runner decodes
    theirs.generation_config.eos_token_id = None  # exactly new_tokens, as ours with eos_ids=()
    pad_id = ours.cfg.pad_token_id or 0
    llm_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(ours.language_model)))

    def run_ours(inputs, new_tokens=new_tokens):
        return decode.generate(ours, inputs["input_ids"], inputs["attention_mask"],
                               max_new_tokens=new_tokens, eos_ids=())

    def run_theirs(inputs, new_tokens=new_tokens):
        with torch.no_grad():
            out = theirs.generate(input_ids=torch.from_numpy(inputs["input_ids"]).to(device),
                                  attention_mask=torch.from_numpy(
                                      inputs["attention_mask"]).to(device),
                                  do_sample=False, max_new_tokens=new_tokens,
                                  pad_token_id=pad_id)
        return out[:, inputs["input_ids"].shape[1]:].cpu().numpy()

    runners = {"ours": run_ours, "transformers": run_theirs}
    first_call, same_tokens = {}, {}
    for b, inputs in cases.items():  # warm-up: compiles ours, and checks the tokens agree
        outs = {}
        for name, run in runners.items():
            outs[name], first_call[name, b], _ = timed_call(lambda: run(inputs))
        same_tokens[b] = bool(np.array_equal(outs["ours"], outs["transformers"]))
    for run in runners.values():
        run(cases[1], 1)  # compiles the prefill-only call timed below

    times = {key: [] for key in first_call}
    prefill = {name: [] for name in runners}  # batch 1, one new token: the prompt's cost
    busyness = []
    for rep in range(FLAGS.reps):
        for b, inputs in cases.items():
            for name, run in runners.items():
                _, seconds, busy = timed_call(lambda: run(inputs))
                times[name, b].append(seconds)
                busyness.append(busy)
                if busy > BUSY_WARN:
                    print(f"warning: rep {rep} {name} batch {b}: other processes used {busy:.0%} "
                          "of the CPUs; its timing is unreliable", file=sys.stderr)
        for name, run in runners.items():
            prefill[name].append(timed_call(lambda: run(cases[1], 1))[1])

    median = {key: statistics.median(ts) for key, ts in times.items()}

    def compile_s(name, b):
        return first_call[name, b] - min(times[name, b]) if name == "ours" else 0.0

    result = {"preset": FLAGS.preset, "dtype": FLAGS.dtype, "device": jax.devices()[0].device_kind,
              "bandwidth_gb_s": bandwidth / 1e9, "llm_weight_mb": llm_bytes / 1e6,
              "bound_b1_tokens_s": bandwidth / llm_bytes, "scan_layers": FLAGS.scan_layers,
              "max_other_cpu_share": max(busyness)}
    print(f"memory read bandwidth {bandwidth / 1e9:.1f} GB/s (a sum over 1 GB); LLM weights "
          f"{llm_bytes / 1e6:.0f} MB -> batch-1 bound {bandwidth / llm_bytes:.1f} tokens/s")
    print(f"{'batch':>5} {'impl':>12} {'tokens/s':>9} {'median s':>9} {'min s':>7} "
          f"{'compile s':>9} {'same tokens':>11}")
    for b in BATCHES:
        for name in runners:
            tps = b * new_tokens / median[name, b]
            print(f"{b:>5} {name:>12} {tps:>9.1f} {median[name, b]:>9.3f} "
                  f"{min(times[name, b]):>7.3f} {compile_s(name, b):>9.2f} "
                  f"{str(same_tokens[b]):>11}")
            result[f"{name}_b{b}_tokens_s"] = tps
        ratios = [t / o for o, t in zip(times["ours", b], times["transformers", b])]
        result[f"ratio_b{b}"] = statistics.median(ratios)
        result[f"ratio_fastest_b{b}"] = min(times["transformers", b]) / min(times["ours", b])
        result[f"compile_b{b}_s"] = compile_s("ours", b)
        result[f"same_tokens_b{b}"] = same_tokens[b]
        print(f"      ours / transformers at batch {b}: {result[f'ratio_b{b}']:.2f}x (median of "
              f"the per-repetition ratios), {result[f'ratio_fastest_b{b}']:.2f}x (fastest of each)")
    for name in runners:  # each repetition's full call less its prefill-only call, per step
        steps = [(full - first) / (new_tokens - 1)
                 for full, first in zip(times[name, 1], prefill[name])]
        step_s = statistics.median(steps)
        # None: the steps took less than the timing spread (a few tokens, one repetition)
        rate = result[f"{name}_b1_step_tokens_s"] = 1 / step_s if step_s > 0 else None
        result[f"{name}_b1_prefill_s"] = statistics.median(prefill[name])
        share = "too short to tell" if rate is None else (
            f"{rate:.1f} tokens/s, {rate / result['bound_b1_tokens_s']:.0%} of the bound")
        print(f"batch 1 {name}: decoding steps {share}; prefill + first token "
              f"{result[f'{name}_b1_prefill_s']:.3f} s")
    print(f"other processes' CPU share per timed call: max {max(busyness):.0%}, "
          f"median {statistics.median(busyness):.0%}")
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
