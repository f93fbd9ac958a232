"""Every benchmark from one command, and the table of measure / ours / reference / ratio / target.

Each benchmark is its own script (run here in a subprocess, so that each starts with a fresh JAX
and PyTorch and its memory is its own) that times our implementation and the reference in one
run, interleaved, and prints a JSON line last; this collects those lines.

    python benchmarks/run.py [--quick] [--only=train,decode,data,convert] [--json=FILE]

``--quick`` is a smoke run of every benchmark on the smallest shapes (a few minutes); the full
run's JSON goes under ``benchmarks/results/``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from absl import app, flags

HERE = Path(__file__).resolve().parent
flags.DEFINE_bool("quick", False, "smallest shapes, one repetition: a smoke run")
flags.DEFINE_list("only", None, "benchmarks to run (default: all): train, decode, data, "
                  "convert, load, inflight, eval, translate")
flags.DEFINE_string("json", None, "write everything (the table and each benchmark's JSON) here")
flags.DEFINE_integer("timeout_s", 3600, "per benchmark")
FLAGS = flags.FLAGS

# name -> (full arguments, quick arguments); the script is the first argument.
BENCHMARKS = {
    "train": (["train_throughput.py", "--presets=demo,100m"],
              ["train_throughput.py", "--presets=demo", "--reps=1", "--steps=1",
               "--warmup=1"]),
    "decode": (["decode_throughput.py", "--reps=5"],
               ["decode_throughput.py", "--reps=1", "--new_tokens=8"]),
    "decode_demo": (["decode_throughput.py", "--preset=demo", "--reps=5"],
                    ["decode_throughput.py", "--preset=demo", "--reps=1", "--new_tokens=8",
                     "--prompt_length=16"]),
    "data": (["data_pipeline.py", "--samples=2048"],
             ["data_pipeline.py", "--samples=128", "--records=64"]),
    "convert": (["convert_memory.py"], ["convert_memory.py", "--size_gb=0.25"]),
    "load": (["load_memory.py"], ["load_memory.py", "--size_gb=0.25"]),
    "inflight": (["inflight_batching.py"],
                 ["inflight_batching.py", "--prompts=8", "--slots=4", "--longest=32",
                  "--reps=1"]),
    "eval": (["eval_throughput.py"], ["eval_throughput.py", "--samples=8", "--reps=1"]),
    "translate": (["translate_throughput.py"],
                  ["translate_throughput.py", "--strings=8", "--reps=1"]),
}
GROUPS = {"decode": ("decode", "decode_demo")}


def run_one(args: list[str]) -> tuple[dict[str, Any] | None, float, str]:
    """The benchmark's last-line JSON (None if it failed), its seconds, and its output's tail."""
    start = time.perf_counter()
    env = {**os.environ, "BENCHMARK_QUIET_WAIT_S": "0"} if FLAGS.quick else None
    proc = subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]], cwd=HERE.parent,
                          capture_output=True, text=True, timeout=FLAGS.timeout_s, env=env)
    seconds = time.perf_counter() - start
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
    except json.JSONDecodeError:
        result = None
    return result, seconds, (proc.stdout + proc.stderr)[-2000:]


def rows(name: str, r: dict[str, Any]) -> list[tuple[str, float | None, float | None, str, str]]:
    """``(measure, ours, reference, target, unit)`` rows of one benchmark's result."""
    out = []
    if name == "train":
        for p in r["results"]:
            target = {"demo": ">= 0.8x", "100m": ">= 1.0x"}.get(p["preset"], "")
            out.append((f"train {p['preset']} ({p['params_m']:.1f}M, {p['rows']}x{p['length']}) "
                        "tokens/s", p["ours_tokens_s"], p["pytorch_tokens_s"], target, ""))
            out.append((f"train {p['preset']} share of matmul peak", p["ours_of_peak"],
                        p["pytorch_of_peak"], ">= 65%" if p["preset"] == "100m" else "", "%"))
            out.append((f"train {p['preset']} compile s", p["compile_s"], None,
                        "<= 10 s" if p["preset"] == "demo" else "", "s"))
    elif name.startswith("decode"):
        for b in (1, 8):
            target = (">= 1.0x" if b == 1 else ">= 1.3x") if name == "decode" else ""
            out.append((f"decode {r['preset']} batch {b} tokens/s", r[f"ours_b{b}_tokens_s"],
                        r[f"transformers_b{b}_tokens_s"], target, ""))
        out.append((f"decode {r['preset']} batch 1 share of read bound (with prefill)",
                    r["ours_b1_tokens_s"] / r["bound_b1_tokens_s"],
                    r["transformers_b1_tokens_s"] / r["bound_b1_tokens_s"],
                    "", "%"))
        steps = [r[f"{side}_b1_step_tokens_s"] for side in ("ours", "transformers")]
        out.append((f"decode {r['preset']} batch 1 share of read bound (steps only)",
                    *[None if s is None else s / r["bound_b1_tokens_s"] for s in steps],
                    ">= 90%" if name == "decode" else "", "%"))
        out.append((f"decode {r['preset']} compile s (batch 1)", r["compile_b1_s"], None, "", "s"))
    elif name == "data":
        for setting, p in r["pipeline"].items():
            out.append((f"data samples/s ({setting})", p["samples_per_s"], None, ">= 150", ""))
    elif name == "load":
        out.append((f"load onto {r['mesh']['fsdp']} devices: loader peak RSS / largest tensor",
                    r["loader_peak_over_largest_tensor"], None, f"<= {r['target']}", "x"))
    elif name == "inflight":
        out.append((f"in-flight batching tokens/s ({r['prompts']} prompts, {r['slots']} slots, "
                    "answers 4-256 tokens; reference: static batches)", r["inflight_tokens_s"],
                    r["static_tokens_s"], ">= 1.5x", ""))
    elif name == "eval":
        out.append((f"evaluate samples/s, batch {r['batch']} (reference: transformers "
                    "generate)", r["ours_inflight_samples_s"], r["transformers_samples_s"],
                    ">= 2x", ""))
    elif name == "translate":
        out.append((f"translate strings/s, batch {r['batch']} (reference: transformers "
                    "generate)", r["ours_strings_s"], r["transformers_strings_s"], ">= 2x", ""))
    elif name == "convert":
        out.append(("convert peak RSS / checkpoint size", r["ratio"], None, "<= 1.3", "x"))
        out.append(("convert s per GB", r["seconds"] / (r["checkpoint_bytes"] / 1e9), None, "",
                    "s"))
    return out


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:.0%}" if unit == "%" else f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def main(argv: list[str]) -> None:
    del argv
    names = [n for n in BENCHMARKS
             if not FLAGS.only or n in FLAGS.only or any(n in GROUPS.get(o, ()) for o in FLAGS.only)]
    machine = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
               "date": datetime.date.today().isoformat(), "quick": FLAGS.quick}
    results, table = {}, []
    for name in names:
        args = BENCHMARKS[name][1 if FLAGS.quick else 0]
        print(f"== {name}: {' '.join(args)}", flush=True)
        result, seconds, tail = run_one(args)
        results[name] = {"seconds": round(seconds, 1), "result": result}
        if result is None:
            print(f"{name} failed after {seconds:.0f} s:\n{tail}", file=sys.stderr)
            continue
        table += rows(name, result)
        print(f"   done in {seconds:.0f} s", flush=True)

    print(f"\n{machine['machine']}, {machine['date']}" + (" (quick)" if FLAGS.quick else ""))
    print(f"| {'measure':<58} | {'ours':>9} | {'reference':>9} | {'ratio':>6} | {'target':>8} |")
    print(f"|{'-' * 60}|{'-' * 11}|{'-' * 11}|{'-' * 8}|{'-' * 10}|")
    for measure, ours, ref, target, unit in table:
        ratio = f"{ours / ref:.2f}x" if ours is not None and ref else ""
        print(f"| {measure:<58} | {fmt(ours, unit):>9} | {fmt(ref, unit):>9} | {ratio:>6} | "
              f"{target:>8} |")
    out = {**machine, "table": [dict(zip(("measure", "ours", "reference", "target", "unit"), row))
                                for row in table], "benchmarks": results}
    if FLAGS.json:
        Path(FLAGS.json).write_text(json.dumps(out, indent=2) + "\n")
    if any(r["result"] is None for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
