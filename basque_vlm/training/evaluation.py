"""Evaluation on a schedule during training: ``config.eval`` names tasks of `basque_vlm.eval.tasks`,
and the loop scores the parameters in memory every ``every`` steps and at the end, with the code
of ``python -m basque_vlm.evaluate`` (`basque_vlm.eval.suite`, `runner`).

    config.eval = dict(tasks="demo_vqa_eu,demo_vqa_en", every=1000, limit=200, batch_size=16)

Keys (`basque_vlm.training.configs.evaluation`): ``tasks`` (comma-separated, or a sequence; empty:
no evaluation), ``every`` (steps; default ``train.checkpoint_every``; 0: only at the end),
``limit`` (the first N samples of each task), ``batch_size`` (prompts per batch on each
process, rounded up to a multiple of its device count), ``data_dir`` (``evaluate --data_dir``;
default ``$BASQUE_VLM_EVAL_DATA`` or ``./eval_data``), ``prompt_lang``, ``max_new_tokens``,
``param_dtype`` (cast the evaluated copy of the weights, e.g. ``bfloat16``; default as trained).

The parameters are decoded where they are, on the run's mesh over every process's devices (cast
to ``param_dtype`` if set, in place), as ``evaluate`` decodes a checkpoint: all processes answer
all the samples together. Task data is read and checked when the run starts. Process 0 writes ``WORKDIR/eval/step_S.json`` (with the predictions
and the Markdown table beside it, as ``evaluate --out``); the loop logs the scores
(`metrics.Writer.write_eval`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from etils import epath
from flax import nnx
from jax.sharding import Mesh

from basque_vlm.eval import runner, suite, tasks
from basque_vlm.model.vlm import Params, VLMConfig
from basque_vlm.runtime import paths
from basque_vlm.store import checkpoint

EVAL_DIR = "eval"
PROMPT_LANGS = ("auto", "en", "eu")


class Evaluator:
    """The scheduled evaluation of one run (one process's view)."""

    def __init__(self, config: Any, cfg: VLMConfig, workdir: str | Path, mesh: Mesh):
        spec = dict(config.get("eval") or {})
        self.tasks = tasks.get(spec["tasks"])
        judged = [t.name for t in self.tasks if t.score is None]
        if judged:
            raise ValueError(f"eval.tasks: {', '.join(judged)} need a judge; evaluate them with "
                             "python -m basque_vlm.evaluate")
        every = spec.get("every")
        self.every = int(config.train.checkpoint_every if every is None else every)
        limit = spec.get("limit")
        self.batch_size = int(spec.get("batch_size") or 16)
        self.prompt_lang = spec.get("prompt_lang") or "auto"
        self.max_new_tokens = spec.get("max_new_tokens")
        self.param_dtype = spec.get("param_dtype")
        if self.every < 0 or self.batch_size < 1 or (limit is not None and int(limit) < 1) or \
                self.prompt_lang not in PROMPT_LANGS:
            raise ValueError(f"eval: need every >= 0, batch_size >= 1, limit >= 1 (or None) and "
                             f"prompt_lang in {PROMPT_LANGS}; got {spec}")
        data_dir = spec.get("data_dir") or os.environ.get("BASQUE_VLM_EVAL_DATA", "eval_data")
        # Read and checked now, not hours into the run.
        self.loaded = {t.name: runner.load_samples(t, Path(data_dir), None if limit is None
                                                   else int(limit)) for t in self.tasks}
        self.cfg = cfg
        self.workdir = paths.path(workdir)
        self.last: int | None = None  # the last step evaluated
        self.mesh = mesh
        self._graphdef, self._abstract = nnx.split(checkpoint.abstract_model(cfg))
        dtype = None if self.param_dtype is None else jnp.dtype(self.param_dtype)
        self._cast = jax.jit(lambda p: p if dtype is None else jax.tree.map(
            lambda a: a.astype(dtype), p))
        self._processor = None

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0 and step != self.last

    def __call__(self, step: int, params: Params, frozen: Params) -> tuple[dict[str, float],
                                                                           float]:
        """``({task: score}, seconds)`` of the parameters at ``step`` (every process takes
        part)."""
        start = time.perf_counter()
        state = jax.tree.map(lambda x: x, self._abstract)  # a fresh copy to fill
        nnx.replace_by_pure_dict(state, self._cast({**params, **frozen}))
        model = nnx.merge(self._graphdef, state)
        if self._processor is None:
            # The workdir's files (process 0 wrote them before the first step).
            self._processor = checkpoint.load_processor(self.workdir)
        generator = runner.Generator.from_model(model, self._processor, self.batch_size,
                                                self.mesh)
        out = self.workdir / EVAL_DIR / f"step_{step}.json"
        results = suite.run(self.tasks, self.loaded, generator, out, self.prompt_lang,
                            self.max_new_tokens)
        self.last = step
        return scores_of(results), time.perf_counter() - start


def from_config(config: Any, cfg: VLMConfig, workdir: str | epath.Path, mesh: Mesh
                ) -> Evaluator | None:
    """The run's scheduled evaluation on the training ``mesh``; None when ``config.eval`` names
    no task."""
    spec = config.get("eval")
    if not spec or not str(spec.get("tasks") or "").strip(", "):
        return None
    return Evaluator(config, cfg, workdir, mesh)


def scores_of(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``{task: main metric}`` of ``suite.run``'s results."""
    return {name: results[name][tasks.TASKS[name].metric] for name in results}
