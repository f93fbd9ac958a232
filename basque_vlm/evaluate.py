"""Evaluate a checkpoint (or a training workdir: its latest step) on Basque and English tasks.

    python -m basque_vlm.evaluate --checkpoint=workdir/demo --tasks=demo_vqa_eu,demo_vqa_en \\
        --out=results/demo.json [--limit=N] [--batch_size=16] [--data_dir=eval_data]

Writes ``{task: {metric: value, "n": count, "prompt": "en"|"eu", ...}}`` to ``--out``, every
sample (prompt, prediction, references, score) to ``OUT_STEM.predictions.jsonl`` beside it, and
the Markdown table of the scores (Basque and English side by side) to ``OUT_STEM.md``; the table
is also printed. Open-ended tasks (``wildvision_*``) are judged pairwise against the reference
answers by ``--judge_url``/``--judge_model`` (an OpenAI-compatible endpoint) or
``--judge_checkpoint`` (a checkpoint of ours), and always exported for human annotators
(``OUT_STEM.TASK.annotation.csv``). Multi-process: see ``basque_vlm.runtime.distributed``; process 0
writes the files.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
from absl import app, flags

from basque_vlm.eval import judge, report, runner, suite, tasks
from basque_vlm.runtime import cli, distributed, paths

flags.DEFINE_string("checkpoint", None, "Project checkpoint or training workdir (latest step); "
                    "local or gs://.")
flags.DEFINE_string("tasks", None, "Comma-separated tasks (vqav2_eu, aokvqa_mc_en, ..., "
                    "demo_vqa_eu; README, 'Evaluation').")
flags.DEFINE_string("out", None, "Results JSON; predictions and table are written beside it "
                    "(local or gs://).")
flags.DEFINE_integer("limit", None, "Evaluate only the first N samples of each task.",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", 16, "Prompts answered together (per process).",
                     lower_bound=1)
flags.DEFINE_string("data_dir", os.environ.get("BASQUE_VLM_EVAL_DATA", "eval_data"),
                    "Task data: DATA_DIR/<task name>/*.parquet|jsonl|json (default: "
                    "$BASQUE_VLM_EVAL_DATA or ./eval_data).")
flags.DEFINE_enum("prompt_lang", "auto", ["auto", "en", "eu"],
                  "Instruction language: auto = the task's own language.")
flags.DEFINE_integer("max_new_tokens", None, "Override every task's answer length.",
                     lower_bound=1)
flags.DEFINE_bool("scan_layers", None, "Decode with lax.scan over layers (default: as the "
                  "checkpoint says).")
flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Compute dtype (default: as the "
                  "checkpoint says; bfloat16 on TPU).")
flags.DEFINE_enum("param_dtype", None, ["float32", "bfloat16"], "Cast the weights when loading "
                  "(default: as stored; a workdir stores float32).")
flags.DEFINE_string("judge_url", None, "OpenAI-compatible API base (e.g. http://host:8000/v1).")
flags.DEFINE_string("judge_model", None, "Model name for --judge_url.")
flags.DEFINE_string("judge_api_key_env", "OPENAI_API_KEY", "Environment variable holding the "
                    "judge's API key (if any).")
flags.DEFINE_string("judge_checkpoint", None, "A checkpoint of ours as the judge.")
flags.DEFINE_integer("judge_max_new_tokens", 512, "Judge reply length (--judge_checkpoint).",
                     lower_bound=1)
FLAGS = flags.FLAGS


def make_judge() -> tuple[judge.Judge, str] | None:
    if FLAGS.judge_url and FLAGS.judge_checkpoint:
        raise ValueError("choose one judge: --judge_url or --judge_checkpoint")
    if FLAGS.judge_url:
        if not FLAGS.judge_model:
            raise ValueError("--judge_url needs --judge_model")
        return judge.HttpJudge(FLAGS.judge_url, FLAGS.judge_model,
                               os.environ.get(FLAGS.judge_api_key_env)), FLAGS.judge_model
    if FLAGS.judge_checkpoint:
        generator = runner.Generator(FLAGS.judge_checkpoint, FLAGS.batch_size)
        return (judge.LocalJudge(generator, FLAGS.judge_max_new_tokens),
                FLAGS.judge_checkpoint)
    return None


def _evaluate() -> None:
    if not (FLAGS.checkpoint and FLAGS.tasks and FLAGS.out):
        raise ValueError("--checkpoint, --tasks and --out are required")
    chosen_tasks = tasks.get(FLAGS.tasks)
    distributed.init()
    cli.quiet_libraries()
    out = paths.path(FLAGS.out)  # local, or gs://...
    # Every task's data is read (and checked) before the model loads.
    loaded = {t.name: runner.load_samples(t, Path(FLAGS.data_dir), FLAGS.limit)
              for t in chosen_tasks}
    overrides = {k: v for k, v in (("scan_layers", FLAGS.scan_layers), ("dtype", FLAGS.dtype))
                 if v is not None}
    generator = runner.Generator(FLAGS.checkpoint, FLAGS.batch_size, FLAGS.param_dtype,
                                 **overrides)
    chosen_judge = make_judge() if any(t.score is None for t in chosen_tasks) else None
    results = suite.run(chosen_tasks, loaded, generator, out, FLAGS.prompt_lang,
                        FLAGS.max_new_tokens, chosen_judge)
    if jax.process_index() == 0:
        print(report.markdown_table(results), end="", flush=True)


if __name__ == "__main__":
    app.run(cli.main("evaluate", _evaluate))
