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

Each process answers its own share of the samples, as ``evaluate`` does with several processes:
the parameters (sharded over every device of the run) are copied once per evaluation onto each
process's own devices, sharded over them (``fsdp``), and decoded there. Task data is read and
checked when the run starts. Process 0 writes ``WORKDIR/eval/step_S.json`` (with the predictions
and the Markdown table beside it, as ``evaluate --out``); the loop logs the scores
(`metrics.Writer.write_eval`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from basque_vlm.eval import runner, suite, tasks
from basque_vlm.model import sharding
from basque_vlm.model.vlm import Params, VLMConfig
from basque_vlm.runtime import paths
from basque_vlm.store import checkpoint

EVAL_DIR = "eval"
PROMPT_LANGS = ("auto", "en", "eu")


class Evaluator:
    """The scheduled evaluation of one run (one process's view)."""

    def __init__(self, config: Any, cfg: VLMConfig, workdir: str | Path):
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
        # Made here, outside the training mesh (whose context the loop runs in).
        self._graphdef, self._abstract = nnx.split(checkpoint.abstract_model(cfg))
        self._copy = _LocalCopy(self._abstract, self.param_dtype)
        self._processor = None

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0 and step != self.last

    def __call__(self, step: int, params: Params, frozen: Params) -> tuple[dict[str, float],
                                                                           float]:
        """``({task: score}, seconds)`` of the parameters at ``step`` (every process takes
        part)."""
        start = time.perf_counter()
        state = jax.tree.map(lambda x: x, self._abstract)  # a fresh copy to fill
        nnx.replace_by_pure_dict(state, self._copy({**params, **frozen}))
        model = nnx.merge(self._graphdef, state)
        if self._processor is None:
            # The workdir's files (process 0 wrote them before the first step).
            self._processor = checkpoint.load_processor(self.workdir)
        devices = self._copy.mesh.size
        generator = runner.Generator.from_model(
            self.cfg, model, self._processor, math.ceil(self.batch_size / devices) * devices)
        out = self.workdir / EVAL_DIR / f"step_{step}.json"
        with sharding.use_mesh(self._copy.mesh):  # this process's devices only
            results = suite.run(self.tasks, self.loaded, generator, out, self.prompt_lang,
                                self.max_new_tokens)
        self.last = step
        return scores_of(results), time.perf_counter() - start


def from_config(config: Any, cfg: VLMConfig, workdir: str | epath.Path) -> Evaluator | None:
    """The run's scheduled evaluation; None when ``config.eval`` names no task."""
    spec = config.get("eval")
    if not spec or not str(spec.get("tasks") or "").strip(", "):
        return None
    return Evaluator(config, cfg, workdir)


class _LocalCopy:
    """The parameters copied onto this process's devices, sharded over them (``fsdp``) by the
    model's logical axes (a dimension that does not divide is replicated), optionally cast."""

    def __init__(self, abstract: nnx.State, param_dtype: str | None):
        by_process = [[d for d in jax.devices() if d.process_index == p]
                      for p in range(jax.process_count())]
        if len({len(devices) for devices in by_process}) != 1:
            raise ValueError("the scheduled evaluation needs as many devices on every process")
        count = len(by_process[0])
        self.mesh = Mesh(np.asarray(by_process[jax.process_index()]).reshape(1, count, 1),
                         ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
        # Every process's devices as one row of a mesh: replicated over rows, so that the copy
        # is one collective over all devices (within a process when there is one).
        rows = Mesh(np.asarray(by_process).reshape(len(by_process), 1, count, 1),
                    ("process", "data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 4)
        specs = jax.tree.map(lambda sh, leaf: _divisible(sh.spec, leaf.shape, self.mesh),
                             sharding.param_shardings(abstract, self.mesh),
                             abstract.to_pure_dict())
        self.local = jax.tree.map(lambda spec: NamedSharding(self.mesh, spec), specs,
                                  is_leaf=lambda x: isinstance(x, PartitionSpec))
        spread = jax.tree.map(lambda spec: NamedSharding(rows, spec), specs,
                              is_leaf=lambda x: isinstance(x, PartitionSpec))
        dtype = None if param_dtype is None else jnp.dtype(param_dtype)
        self._spread = jax.jit(
            lambda p: p if dtype is None else jax.tree.map(lambda a: a.astype(dtype), p),
            out_shardings=spread)

    def __call__(self, params: Params) -> Params:
        return jax.tree.map(self._local_array, self._spread(params), self.local)

    @staticmethod
    def _local_array(array: jax.Array, local: NamedSharding) -> jax.Array:
        shards = {s.device: s.data for s in array.addressable_shards}
        return jax.make_array_from_single_device_arrays(
            array.shape, local, [shards[d] for d in local.addressable_devices_indices_map(
                array.shape)])


def _divisible(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """``spec`` with the mesh axes of each dimension that they do not divide dropped."""
    out = []
    for size, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        out.append(axes if size % math.prod(mesh.shape[a] for a in names) == 0 else None)
    return PartitionSpec(*out)


def scores_of(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``{task: main metric}`` of ``suite.run``'s results."""
    return {name: results[name][tasks.TASKS[name].metric] for name in results}
