"""Training throughput: our jitted train step vs transformers' ``LlavaForConditionalGeneration``
trained by a plain PyTorch AdamW loop — same model, same initial weights, same batch.

Both sides run the same step: next-token cross-entropy in float32 over the supervised tokens
(normalised by their count), global-norm clipping at 1.0, AdamW, every parameter trained. On CPU
both compute in float32; with ``--dtype=bfloat16`` (GPUs) both keep float32 master weights and
compute in bfloat16 (ours by the model's compute dtype, PyTorch by ``torch.autocast``).
Repetitions of ``--steps`` steps are interleaved, after ``--warmup`` steps of each side (the
first compiles ours; the next let both sides' heaps settle); the first losses of both sides
are printed as a check that they train the same thing.

Model FLOPs per step are counted analytically (``basque_vlm.training.metrics.step_flops``: 2 per
multiply-add, ×3 for forward + both backward products, attention scores included, the vision
layers we actually run), i.e. ``6·N·tokens`` plus attention, as MaxText counts them. The peak they
are divided by is measured in the same run: the fastest large matmul (2048³ float32 on CPU, 8192³
bfloat16 on GPU) — and on GPUs also the datasheet's dense bf16 peak. The last stdout line is JSON.

    python benchmarks/train_throughput.py [--presets=demo,100m] [--reps=5] [--steps=3]
    python benchmarks/train_throughput.py --presets=1b --dtype=bfloat16   # on a GPU
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import presets
import reference
import torch
from absl import app, flags, logging
from flax import nnx
from timing import BUSY_WARN, matmul_peak, timed_call

from basque_vlm.model.vlm import VLM, VLMConfig
from basque_vlm.runtime import cli
from basque_vlm.training import metrics, optim
from basque_vlm.training.state import init_train_state, split_trainable
from basque_vlm.training.step import make_train_step

flags.DEFINE_list("presets", ["demo", "100m"], "model shapes (benchmarks/presets.py)")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype of both sides")
flags.DEFINE_integer("reps", 5, "timed repetitions per side and preset")
flags.DEFINE_integer("steps", 3, "optimizer steps per repetition")
flags.DEFINE_integer("warmup", 3, "untimed steps of each side before the repetitions (the first "
                     "one's time, less a step's, is the compile time)", lower_bound=1)
flags.DEFINE_integer("rows", None, "batch rows (default: the preset's)")
flags.DEFINE_integer("length", None, "tokens per row (default: the preset's)")
flags.DEFINE_bool("scan_layers", False, "lax.scan over layers (default: unrolled, faster on CPU "
                  "and GPU; scanning keeps compile time flat in depth)")
flags.DEFINE_string("remat", "none", "our remat policy (basque_vlm.model.layers)")
flags.DEFINE_integer("logits_chunk", 0, "our loss's positions per row at a time (0: all; "
                     "compute.logits_chunk)")
flags.DEFINE_string("attention", None, "our attention implementation (default: the model's)")
flags.DEFINE_bool("reference", True, "also time the PyTorch reference (--noreference: ours only, "
                  "e.g. to try settings on a GPU)")
flags.DEFINE_integer("threads", 2, "PyTorch CPU threads")
flags.DEFINE_bool("reuse_memory", True, "on the CPU, keep freed memory for the next step, as "
                  "`train` does (basque_vlm.host_memory); the setting is the process's, so both "
                  "sides run under it")
flags.DEFINE_string("json", None, "also write the result JSON here")
FLAGS = flags.FLAGS

LR = 1e-4
PARTS = ("vision_tower", "connector", "language_model")


def make_batch(cfg: VLMConfig, rows: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows of ``[bos, image placeholders, text]``, the last half of each row supervised."""
    rng = np.random.default_rng(seed)
    image = cfg.tokens_per_image
    if length < image + 8:
        raise ValueError(f"length {length} leaves no room for text after {image} image tokens")
    ids = rng.integers(8, cfg.text.vocab_size, (rows, length + 1)).astype(np.int32)
    ids[:, 0] = 1
    ids[:, 1:1 + image] = cfg.image_token_id
    loss_mask = np.zeros((rows, length), np.int32)
    loss_mask[:, length // 2:] = 1
    v = cfg.vision
    return {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": loss_mask,
            "attention_mask": np.ones((rows, length), np.int32),
            "pixel_values": rng.standard_normal(
                (rows, v.num_channels, v.image_size, v.image_size)).astype(np.float32)}


class Ours:
    def __init__(self, cfg: VLMConfig, batch: dict[str, np.ndarray]):
        graphdef, trainable, frozen = split_trainable(VLM(cfg, nnx.Rngs(0)), PARTS)
        self.initial = jax.device_get(trainable)
        tx, _ = optim.make_optimizer({p: LR for p in PARTS}, num_steps=10**6, warmup_ratio=0.0)
        self.state = init_train_state(trainable, tx)
        self.frozen = frozen
        self.step_fn = jax.jit(make_train_step(graphdef, tx, logits_chunk=FLAGS.logits_chunk),
                               donate_argnums=0)
        self.batch = jax.device_put(batch)

    def run(self, steps: int) -> float:
        for _ in range(steps):
            self.state, out = self.step_fn(self.state, self.frozen, self.batch)
        return float(out["loss"])


class Reference:
    def __init__(self, cfg: VLMConfig, params: dict[str, Any], batch: dict[str, np.ndarray],
                 device: str):
        self.model = reference.llava(cfg, params, device)
        self.model.train()
        self.device = device
        self.bf16 = jnp.dtype(cfg.text.dtype) == jnp.bfloat16
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, betas=(0.9, 0.999),
                                     eps=1e-8, weight_decay=0.0,
                                     fused=device == "cuda" or None)
        self.batch = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}

    def run(self, steps: int) -> float:
        b = self.batch
        for _ in range(steps):
            with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.model(input_ids=b["input_ids"], pixel_values=b["pixel_values"],
                                    attention_mask=b["attention_mask"]).logits
            nll = torch.nn.functional.cross_entropy(
                logits.float().flatten(0, 1), b["targets"].long().flatten(), reduction="none")
            mask = b["loss_mask"].flatten().float()
            loss = (nll * mask).sum() / mask.sum().clamp(min=1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())  # waits for the device


def measure(name: str, backend: str, torch_device: str) -> dict[str, Any]:
    preset = presets.get(name)
    rows, length = FLAGS.rows or preset.rows, FLAGS.length or preset.length
    scan = FLAGS.scan_layers
    compute = dict(dtype=FLAGS.dtype, scan_layers=scan, remat=FLAGS.remat)
    if FLAGS.attention:
        compute["attention"] = FLAGS.attention
    cfg = presets.config(preset, **compute)
    batch = make_batch(cfg, rows, length)
    ours = Ours(cfg, batch)
    runners = {"ours": ours.run}
    if FLAGS.reference:
        runners["pytorch"] = Reference(cfg, ours.initial, batch, torch_device).run
    n_params = sum(x.size for x in jax.tree.leaves(ours.initial))
    del ours.initial

    first, first_loss = {}, {}
    for side, run in runners.items():  # the first step of each from the same weights
        first_loss[side], first[side], _ = timed_call(lambda: run(1))
    if FLAGS.warmup > 1:
        for run in runners.values():
            run(FLAGS.warmup - 1)
    times = {side: [] for side in runners}
    faults = {side: [] for side in runners}  # minor page faults per step: the heap growing
    busy = []
    for rep in range(FLAGS.reps):
        for side, run in runners.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            _, seconds, other = timed_call(lambda: run(FLAGS.steps), quiet=backend == "cpu")
            times[side].append(seconds / FLAGS.steps)
            faults[side].append(
                (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // FLAGS.steps)
            busy.append(other)
            if other > BUSY_WARN and backend == "cpu":
                print(f"warning: {name} rep {rep} {side}: other processes used {other:.0%} of "
                      "the CPUs; its timing is unreliable", file=sys.stderr)

    flops = metrics.step_flops(cfg, PARTS, rows, length, images=rows)
    step_s = {side: statistics.median(ts) for side, ts in times.items()}
    result = {"preset": name, "params_m": n_params / 1e6, "rows": rows, "length": length,
              "dtype": FLAGS.dtype, "scan_layers": scan, "remat": FLAGS.remat,
              "model_tflop_per_step": flops / 1e12,
              **{f"first_loss_{side}": loss for side, loss in first_loss.items()},
              "compile_s": first["ours"] - step_s["ours"], "max_other_cpu_share": max(busy)}
    for side in runners:
        result[f"{side}_tokens_s"] = rows * length / step_s[side]
        result[f"{side}_step_s"] = step_s[side]
        result[f"{side}_rep_step_s"] = [round(t, 4) for t in times[side]]
        result[f"{side}_rep_page_faults"] = faults[side]
        result[f"{side}_tflop_s"] = flops / step_s[side] / 1e12
    if FLAGS.reference:
        result["ratio"] = statistics.median(t / o for o, t in zip(times["ours"], times["pytorch"]))
    return result


def print_table(results: list[dict[str, Any]], peak: float, spec: float | None) -> None:
    print(f"matmul peak measured here: {peak / 1e12:.3f} TFLOP/s"
          + (f"; datasheet {spec / 1e12:.0f} TFLOP/s" if spec else ""))
    print(f"{'preset':>6} {'params':>8} {'batch':>9} {'side':>8} {'tokens/s':>10} {'step s':>8} "
          f"{'TFLOP/s':>8} {'of peak':>7} {'first loss':>10}")
    for r in results:
        for side in [s for s in ("ours", "pytorch") if f"{s}_step_s" in r]:
            print(f"{r['preset']:>6} {r['params_m']:>7.1f}M {r['rows']:>4}x{r['length']:<4} "
                  f"{side:>8} {r[f'{side}_tokens_s']:>10.1f} {r[f'{side}_step_s']:>8.3f} "
                  f"{r[f'{side}_tflop_s']:>8.3f} {r[f'{side}_of_peak']:>7.1%} "
                  f"{r[f'first_loss_{side}']:>10.4f}")
        if "ratio" in r:
            print(f"       ours / pytorch {r['ratio']:.2f}x (median of per-repetition ratios)")
        print(f"       our compile {r['compile_s']:.1f} s")


def main(argv: list[str]) -> None:
    del argv
    cli.skip_absent_tpu()
    if FLAGS.reuse_memory:
        cli.reuse_memory_on_cpu()
    logging.set_verbosity(logging.WARNING)
    backend = jax.default_backend()
    torch_device = "cuda" if backend == "gpu" and torch.cuda.is_available() else "cpu"
    torch.set_num_threads(FLAGS.threads)
    peak_dtype, n = ("float32", 2048) if backend == "cpu" else ("bfloat16", 8192)
    peak = matmul_peak(peak_dtype, n)
    spec = metrics.peak_flops(jax.devices()[0].device_kind) if backend != "cpu" else None
    results = []
    start = time.perf_counter()
    for name in FLAGS.presets:
        r = measure(name, backend, torch_device)
        for side in [s for s in ("ours", "pytorch") if f"{s}_step_s" in r]:
            r[f"{side}_of_peak"] = r[f"{side}_tflop_s"] * 1e12 / peak
            if spec:
                r[f"{side}_mfu"] = r[f"{side}_tflop_s"] * 1e12 / spec
        results.append(r)
    print_table(results, peak, spec)
    out = {"device": jax.devices()[0].device_kind, "backend": backend,
           "reuse_memory": FLAGS.reuse_memory,
           "matmul_peak_tflop_s": peak / 1e12, "datasheet_peak_tflop_s": spec and spec / 1e12,
           "seconds": time.perf_counter() - start, "results": results}
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(out, f, indent=2)
    print(json.dumps(out))


if __name__ == "__main__":
    app.run(main)
