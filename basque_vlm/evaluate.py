"""Evaluate a checkpoint (or a training workdir: its latest step), or a model behind any
OpenAI-compatible server, on Basque and English tasks.

    python -m basque_vlm.evaluate --checkpoint=workdir/demo --tasks=demo_vqa_eu,demo_vqa_en \\
        --out=results/demo.json [--limit=N] [--batch_size=16] [--data_dir=eval_data]
    python -m basque_vlm.evaluate --endpoint=http://host:8000/v1 --model_name=NAME \\
        [--api_key_env=OPENAI_API_KEY] [--max_concurrency=8] --tasks=... --out=...

Writes ``{task: {metric: value, "n": count, "prompt": "en"|"eu", ...}}`` to ``--out``, every
sample (prompt, prediction, references, score) to ``OUT_STEM.predictions.jsonl`` beside it, and
the Markdown table of the scores (Basque and English side by side) to ``OUT_STEM.md``; the table
is also printed. An ``--endpoint`` model gets the same prompts (the image as a base64 data URL
before the text) and the same scorers; its requests that fail after their retries are counted
(``failed``) and scored as wrong answers. Open-ended tasks (``wildvision_*``) are judged
pairwise against the reference answers by ``--judge_url``/``--judge_model`` (an OpenAI-compatible
server) or ``--judge_checkpoint`` (a checkpoint of ours), as ``--wildvision_protocol`` says, and
always exported for human annotators (``OUT_STEM.TASK.annotation.csv``). Multi-process: see
``basque_vlm.runtime.distributed``; process 0 writes the files.

``--tasks=lm_eval:NAME,...`` adds text-only tasks of lm-evaluation-harness (``pip install -e
".[lm_eval]"``; any task, group or tag it knows, or a task YAML under ``--lm_eval_include_path``),
scored by lm-eval on the same loaded checkpoint: ``{"lm_eval:NAME": {metric: value,
"METRIC_stderr": value, "n": count, "num_fewshot": k}}`` in the same results and table (not in
the predictions); see `basque_vlm.eval.lm_eval_tasks`.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
from absl import flags

from basque_vlm.eval import judge, lm_eval_tasks, protocols, report, runner, suite, tasks
from basque_vlm.eval.api_model import ApiGenerator
from basque_vlm.infer import placement
from basque_vlm.infer.engine import BATCHING
from basque_vlm.runtime import cli, distributed, paths, server_flags
from basque_vlm.store import checkpoint

flags.DEFINE_string("checkpoint", None, "Project checkpoint or training workdir (latest step); "
                    "local or gs://.")
server_flags.define(instead_of="--checkpoint")
flags.DEFINE_string("tasks", None, "Comma-separated tasks (vqav2_eu, aokvqa_mc_en, ..., "
                    "demo_vqa_eu; README, 'Evaluation').")
flags.DEFINE_string("out", None, "Results JSON; predictions and table are written beside it "
                    "(local or gs://).")
flags.DEFINE_integer("limit", None, "Evaluate only the first N samples of each task.",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", 16, "Prompts decoded together over all devices (the "
                     "in-flight batch's slots, or a static batch's rows).",
                     lower_bound=1)
flags.DEFINE_string("data_dir", os.environ.get("BASQUE_VLM_EVAL_DATA", "eval_data"),
                    "Task data: DATA_DIR/<task name>/*.parquet|jsonl|json (default: "
                    "$BASQUE_VLM_EVAL_DATA or ./eval_data).")
flags.DEFINE_enum("prompt_lang", "auto", ["auto", "en", "eu"],
                  "Instruction language: auto = the task's own language.")
flags.DEFINE_integer("max_new_tokens", None, "Override every task's answer length.",
                     lower_bound=1)
flags.DEFINE_bool("scan_layers", None, "Decode with lax.scan over layers (default: on TPU; "
                  "elsewhere unrolled, faster).")
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
flags.DEFINE_enum("wildvision_protocol", protocols.DEFAULT, list(protocols.PROTOCOLS),
                  "How wildvision_* are answered and judged: lmms = as lmms-eval (4,096 new "
                  "tokens, judged once, comparable with published numbers); both_orders = the "
                  "task's 1,024 tokens, judged in both orders (README, 'WildVision').")
flags.DEFINE_enum("batching", "inflight", list(BATCHING), "inflight: a row that ends takes the "
                  "next prompt while the others decode; static: batches run until their longest "
                  "answer ends.")
flags.DEFINE_string("lm_eval_include_path", None, "A folder of lm-evaluation-harness task YAMLs "
                    "for the lm_eval: tasks, beside lm-eval's own.")
flags.DEFINE_integer("lm_eval_num_fewshot", None, "Few-shot examples in the lm_eval: tasks' "
                     "prompts (default: each task's own).", lower_bound=0)
flags.DEFINE_bool("lm_eval_apply_chat_template", False, "Render the lm_eval: tasks' prompts "
                  "with the checkpoint's chat template (lm-eval's --apply_chat_template).")
placement.define_flags()
FLAGS = flags.FLAGS


def model_info() -> dict[str, str]:
    """What the model under test is (recorded in every task's result); bad flags raise."""
    if bool(FLAGS.checkpoint) == bool(FLAGS.endpoint):
        raise ValueError("give exactly one model to evaluate: --checkpoint or --endpoint")
    if FLAGS.endpoint and not FLAGS.model_name:
        raise ValueError("--endpoint needs --model_name")
    if FLAGS.checkpoint and FLAGS.model_name:
        raise ValueError("--model_name names the model of --endpoint, not of --checkpoint")
    if FLAGS.endpoint:
        return {"model": FLAGS.model_name, "endpoint": FLAGS.endpoint}
    return {"checkpoint": FLAGS.checkpoint}


def make_model() -> runner.Answerer:
    if FLAGS.endpoint:
        return ApiGenerator(server_flags.client(FLAGS.endpoint, FLAGS.model_name,
                                                FLAGS.api_key_env))
    overrides = {k: v for k, v in (("scan_layers", FLAGS.scan_layers), ("dtype", FLAGS.dtype))
                 if v is not None}
    cfg = checkpoint.load_config(FLAGS.checkpoint, **overrides)
    mesh = placement.from_flags(cfg, checkpoint.stored_bytes(FLAGS.checkpoint,
                                                              FLAGS.param_dtype))
    return runner.Generator(FLAGS.checkpoint, FLAGS.batch_size, FLAGS.param_dtype, mesh=mesh,
                            batching=FLAGS.batching, **overrides)


def make_judge() -> tuple[judge.Judge, str] | None:
    if FLAGS.judge_url and FLAGS.judge_checkpoint:
        raise ValueError("choose one judge: --judge_url or --judge_checkpoint")
    if FLAGS.judge_url:
        if not FLAGS.judge_model:
            raise ValueError("--judge_url needs --judge_model")
        client = server_flags.client(FLAGS.judge_url, FLAGS.judge_model, FLAGS.judge_api_key_env)
        return judge.HttpJudge(client), FLAGS.judge_model
    if FLAGS.judge_checkpoint:
        generator = runner.Generator(FLAGS.judge_checkpoint, FLAGS.batch_size,
                                     batching=FLAGS.batching)
        return (judge.LocalJudge(generator, FLAGS.judge_max_new_tokens),
                FLAGS.judge_checkpoint)
    return None


def _evaluate() -> None:
    if not (FLAGS.tasks and FLAGS.out):
        raise ValueError("--tasks and --out are required")
    out = paths.path(FLAGS.out)  # local, or gs://...
    out.parent.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails now, not at the end
    about = model_info()
    ours, text_only = lm_eval_tasks.split(FLAGS.tasks)
    chosen_tasks = tasks.get(ours) if ours else []
    if text_only and FLAGS.endpoint:
        raise ValueError(f"{lm_eval_tasks.PREFIX} tasks need --checkpoint")
    distributed.init()
    cli.quiet_libraries()
    # Every task's data is read (and checked) before the model loads.
    loaded = {t.name: runner.load_samples(t, Path(FLAGS.data_dir), FLAGS.limit)
              for t in chosen_tasks}
    text_tasks = (lm_eval_tasks.task_manager(text_only, FLAGS.lm_eval_include_path)
                  if text_only else None)
    generator = make_model()
    chosen_judge = make_judge() if any(t.score is None for t in chosen_tasks) else None
    results = suite.run(chosen_tasks, loaded, generator, out, FLAGS.prompt_lang,
                        FLAGS.max_new_tokens, chosen_judge,
                        protocols.PROTOCOLS[FLAGS.wildvision_protocol], about)
    if text_only:
        results.update(lm_eval_tasks.run(
            generator, text_only, text_tasks, batch_size=FLAGS.batch_size,
            model_name=FLAGS.checkpoint, limit=FLAGS.limit, num_fewshot=FLAGS.lm_eval_num_fewshot,
            apply_chat_template=FLAGS.lm_eval_apply_chat_template, model_info=about))
        if jax.process_index() == 0:
            report.write_results(out, results)
            report.table_path(out).write_text(report.markdown_table(results))
    if jax.process_index() == 0:
        print(report.markdown_table(results), end="", flush=True)


if __name__ == "__main__":
    cli.start("evaluate", _evaluate)
