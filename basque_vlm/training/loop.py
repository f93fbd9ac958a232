"""The training loop: state on the mesh, jitted steps, metrics, checkpoints, preemption.

    result = loop.train(config, workdir)

A run starts from the workdir's latest checkpoint when it has one; otherwise from
``init_checkpoint`` (a converted checkpoint for ``align``, the ``align`` workdir for ``instruct``)
or, without one, from a model initialised from ``model`` (the demo). It stops after
``train.num_steps`` optimizer steps, on SIGTERM (after the current step, with a checkpoint), or
when the data runs out on any process. It saves every ``train.checkpoint_every`` steps and, with
``train.checkpoint_every_minutes``, also once that much wall time has passed since the last save
(on every process at the same step). A non-finite loss or gradient stops it with
`guards.NonFiniteError` and nothing saved. Process 0 logs ``metrics.jsonl`` and TensorBoard
scalars (`metrics`); ``config.eval`` evaluates the parameters in memory on a schedule
(`evaluation`). The workdir may be local or remote (``gs://...``, `basque_vlm.paths`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from basque_vlm.data import pipeline
from basque_vlm.model import sharding
from basque_vlm.model.vlm import Params, VLMConfig
from basque_vlm.runtime import paths
from basque_vlm.store import checkpoint
from basque_vlm.training import configs, evaluation, guards, metrics, preemption, setup
from basque_vlm.training.optim import PARTS, make_optimizer, trainable_parts
from basque_vlm.training.state import init_train_state, state_shardings
from basque_vlm.training.step import MODEL_INPUTS, TrainState, make_train_step
from basque_vlm.training.workdir import Checkpoints, load_frozen, save_frozen, start_workdir


class Data(Protocol):
    """What the loop needs of the input pipeline (`pipeline.Pipeline`)."""

    def __next__(self) -> dict[str, np.ndarray]: ...
    def get_state(self) -> dict[str, Any]: ...
    def set_state(self, state: Mapping[str, Any]) -> None: ...
    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Result:
    step: int                     # the step reached, saved in the workdir
    stopped: str                  # "done" | "preempted" | "data_exhausted"
    last: dict[str, Any] | None   # the metrics of the last step run


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where everything lives on the mesh, and the abstract (typed, sharded) targets."""

    mesh: jax.sharding.Mesh
    state: TrainState             # ShapeDtypeStructs with shardings
    frozen: Params                # ditto
    batch: NamedSharding
    replicated: NamedSharding

    def shardings(self, tree: Any) -> Any:
        return jax.tree.map(lambda t: t.sharding, tree)


def train(config: Any, workdir: str | Path, *, data: Data | None = None,
          clock: Callable[[], float] = time.monotonic) -> Result:
    """Runs (or resumes) the experiment ``config`` in ``workdir``. ``data`` replaces the
    configured pipeline, ``clock`` (seconds) the wall clock of the time-based saves (tests)."""
    workdir = paths.path(workdir)  # local (made absolute) or gs://...: never gs:/ on local disk
    plan = plan_step(config)
    layout, num_steps = plan.layout, int(config.train.num_steps)
    check_process_rows(layout.batch, int(config.data.global_batch_size))

    keep = configs.train_setting(config, "keep_checkpoints")
    # reads the task data now
    evaluator = evaluation.from_config(config, plan.cfg, workdir, layout.mesh)
    data = data or pipeline.build(config.data, jax.process_index(), jax.process_count())
    # Closing the checkpoints waits for saves in flight, also when a step fails.
    with contextlib.closing(data), \
            contextlib.closing(Checkpoints(workdir, keep=keep)) as ckpts:
        start_workdir(workdir, plan.stored_cfg, plan.parts, plan.frozen_parts)
        restored = ckpts.restore_latest(layout.state)
        if restored is None:
            state, frozen = fresh_state(config, plan.cfg, layout, plan.tx, workdir)
            start = 0
        else:
            state, meta = restored
            frozen = load_frozen(workdir, layout.frozen)
            data.set_state(meta["data"])
            start = int(meta["step"])
        runner = _Runner(config, plan.cfg, plan.parts, layout, ckpts, data, workdir, start,
                         num_steps, evaluator, clock)
        with sharding.use_mesh(layout.mesh), preemption.Watch() as watch, \
                contextlib.closing(runner.writer):
            return runner.run(plan.step_fn, state, frozen, watch)


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """Everything a run's step is made of: the models, the trained parts, the optimizer, where
    everything lives, and the jitted step (trace and run it under ``use_mesh(layout.mesh)``)."""

    stored_cfg: VLMConfig         # as the checkpoint describes the model
    cfg: VLMConfig                # with the ``compute`` overrides
    parts: list[str]              # trained
    frozen_parts: list[str]
    tx: Any
    layout: Layout
    step_fn: Callable[[TrainState, Params, dict[str, jax.Array]], tuple[TrainState, dict]]


def plan_step(config: Any, devices: Sequence[jax.Device] | None = None,
              stored: VLMConfig | None = None) -> StepPlan:
    """The train step of ``config`` over ``devices`` (default: all), jitted with its shardings.

    ``stored`` describes the model instead of the config's checkpoint (`setup.model_configs`),
    e.g. to plan without the weights (`basque_vlm.aot`)."""
    stored_cfg, cfg = setup.model_configs(config, stored)
    learning_rates = dict(config.optim.learning_rates)
    parts = list(trainable_parts(learning_rates))
    check_stage(config.get("stage"), parts)
    microbatches = configs.train_setting(config, "microbatches")
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices)
    guards.check_batch(int(config.data.global_batch_size), microbatches, mesh,
                       jax.process_count())
    tx, schedules = make_optimizer(learning_rates, int(config.train.num_steps),
                                   **_optim_options(config.optim))
    graphdef, layout = make_layout(cfg, parts, mesh, tx)
    step_fn = jax.jit(
        make_train_step(graphdef, tx, microbatches=microbatches,
                        images_per_row=pipeline.images_per_row(config.data),
                        logits_chunk=setup.logits_chunk(config), schedules=schedules),
        in_shardings=(layout.shardings(layout.state), layout.shardings(layout.frozen),
                      layout.batch),
        out_shardings=(layout.shardings(layout.state), layout.replicated),
        donate_argnums=0)
    return StepPlan(stored_cfg, cfg, parts, [p for p in PARTS if p not in parts], tx, layout,
                    step_fn)


def check_stage(stage: str | None, parts: list[str]) -> None:
    """``stage`` (the 8B configs') agrees with the trained parts."""
    if stage is None:
        return
    if stage not in configs.STAGES:
        raise ValueError(f"stage must be one of {configs.STAGES}, got {stage!r}")
    wrong = (stage == "align" and parts != ["connector"]) or (
        stage == "instruct" and not {"connector", "language_model"} <= set(parts))
    if wrong:
        raise ValueError(f"stage={stage} but optim.learning_rates trains {parts}; select the "
                         "stage with the config argument (configs/llama31_8b.py:instruct), which "
                         "sets both")


def make_layout(cfg: VLMConfig, parts: list[str], mesh: jax.sharding.Mesh,
                tx: Any) -> tuple[nnx.GraphDef, Layout]:
    """Parameters sharded by the logical rules: trained parts as float32 master weights with
    their optimizer state sharded alike, frozen parts in the compute dtype."""
    graphdef, abstract = nnx.split(checkpoint.abstract_model(cfg))
    sharding.check_divisible(abstract, mesh)
    param_sh = sharding.param_shardings(abstract, mesh)
    shapes = abstract.to_pure_dict()
    replicated = NamedSharding(mesh, PartitionSpec())

    def typed(part: str, dtype: Any) -> Params:
        return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, dtype, sharding=sh),
                            shapes[part], param_sh[part])

    trained = {p: typed(p, jnp.float32) for p in parts}
    frozen = {p: typed(p, jnp.dtype(cfg.text.dtype)) for p in shapes if p not in parts}
    abstract_state = jax.eval_shape(lambda p: init_train_state(p, tx), trained)
    state_sh = state_shardings(abstract_state, {p: param_sh[p] for p in parts}, replicated)
    state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                         abstract_state, state_sh)
    return graphdef, Layout(mesh, state, frozen, sharding.batch_sharding(mesh), replicated)


def check_process_rows(batch: NamedSharding, global_batch: int) -> None:
    """This process's devices hold exactly the rows its pipeline produces (a contiguous block,
    `pipeline`'s contract)."""
    rows = global_batch // jax.process_count()
    first = jax.process_index() * rows
    held = set()
    for index in batch.addressable_devices_indices_map((global_batch,)).values():
        held.update(range(*index[0].indices(global_batch)))
    if held != set(range(first, first + rows)):
        raise ValueError(f"process {jax.process_index()}'s devices hold rows other than its data "
                         f"rows {first}..{first + rows - 1} of the global batch; give each host's "
                         "devices a contiguous block of mesh.data × mesh.fsdp")


def fresh_state(config: Any, cfg: VLMConfig, layout: Layout, tx: Any, workdir: Path
                ) -> tuple[TrainState, Params]:
    """The initial state; writes the workdir's tokenizer files and frozen parts once."""
    trained_target = layout.state.params
    params = setup.initial_params(config, cfg, {**trained_target, **layout.frozen})
    frozen = {p: params.pop(p) for p in layout.frozen}
    init = jax.jit(lambda p: init_train_state(p, tx),
                   out_shardings=layout.shardings(layout.state), donate_argnums=0)
    state = init(params)
    if jax.process_index() == 0:
        setup.write_assets(config, cfg, workdir)
    save_frozen(workdir, frozen)
    return state, frozen


def _optim_options(optim: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("warmup_ratio", "weight_decay", "grad_clip", "b1", "b2", "eps")
    return {k: optim[k] for k in keys if k in optim}


class _Runner:
    """The step loop of one run (one process's view)."""

    def __init__(self, config: Any, cfg: VLMConfig, parts: list[str], layout: Layout,
                 ckpts: Checkpoints, data: Data, workdir: Path, start: int,
                 num_steps: int, evaluator: evaluation.Evaluator | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.config, self.cfg, self.parts, self.layout = config, cfg, parts, layout
        self.ckpts, self.data, self.start, self.num_steps = ckpts, data, start, num_steps
        self.log_every = int(config.train.log_every)
        self.checkpoint_every = int(config.train.checkpoint_every)
        minutes = config.train.get("checkpoint_every_minutes")
        self.save_seconds = None if minutes is None else 60.0 * float(minutes)
        self.clock = clock
        self.saved_at = clock()
        self.images_per_row = pipeline.images_per_row(config.data)
        self.seed = configs.train_setting(config, "seed")
        peak = config.train.get("peak_flops_per_device") or metrics.peak_flops(
            jax.devices()[0].device_kind)
        self.peak = peak * jax.device_count() if peak else None
        self.writer = metrics.Writer(workdir, num_steps, jax.process_index() == 0, start)
        self.evaluator = evaluator
        self.interval = metrics.Interval()
        self.last: dict[str, Any] | None = None

    def run(self, step_fn, state: TrainState, frozen: Params, watch: preemption.Watch
            ) -> Result:
        step, saved, stopped = self.start, self.start, "done"
        pending = None
        if step >= self.num_steps:
            self.writer.say(f"already trained: step {step} of {self.num_steps}")
        while step < self.num_steps:
            data_state = self.data.get_state()
            with self.interval.waiting():
                batch = next(self.data, None)
            stop, exhausted, timely = preemption.agree(
                (watch.requested, batch is None, self._save_is_due()))
            if stop or exhausted:
                stopped = "preempted" if stop else "data_exhausted"
                break
            flops = metrics.step_flops(self.cfg, self.parts, self.config.data.global_batch_size,
                                       batch["input_ids"].shape[1],
                                       self.config.data.global_batch_size * self.images_per_row)
            state, step_metrics = step_fn(state, frozen, self._device_batch(batch))
            step += 1
            if pending is not None:
                self._report(*pending)
            pending = (step, step_metrics, flops)
            if step % self.checkpoint_every == 0 or step == self.num_steps or timely:
                self._report(*pending)
                pending = None
                self._save(step, state, self.data.get_state())
                saved = step
            if self.evaluator is not None and self.evaluator.due(step):
                if pending is not None:
                    self._report(*pending)
                    pending = None
                self._evaluate(step, state, frozen)
        if pending is not None:
            self._report(*pending)
        if step > saved:
            self._save(step, state, data_state)
        if self.evaluator is not None and stopped != "preempted" and step > self.start and \
                self.evaluator.last != step:
            self._evaluate(step, state, frozen)  # the end of the run
        self.ckpts.wait()
        if stopped == "preempted":
            self.writer.say(f"stopped by SIGTERM: saved step {step}; rerun the same command to "
                            "resume")
        elif stopped == "data_exhausted":
            logging.warning("the data ran out at step %d of %d; saved step %d", step,
                            self.num_steps, step)
        return Result(step, stopped, self.last)

    def _save_is_due(self) -> bool:
        """This process's view: ``train.checkpoint_every_minutes`` have passed since the last
        save (the processes then agree, so that all of them save at the same step)."""
        return self.save_seconds is not None and \
            self.clock() - self.saved_at >= self.save_seconds

    def _evaluate(self, step: int, state: TrainState, frozen: Params) -> None:
        """The scheduled evaluation (every process takes part; process 0 logs)."""
        scores, seconds = self.evaluator(step, state.params, frozen)
        self.writer.write_eval(step, scores, seconds)
        self.interval.reset()  # leave the evaluation out of the throughput

    def _device_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.make_array_from_process_local_data(self.layout.batch, batch[k])
                for k in MODEL_INPUTS if k in batch}

    def _report(self, step: int, step_metrics: Mapping[str, jax.Array], flops: float) -> None:
        """Checks and logs a finished step (its values are fetched one step late, so that the
        host does not wait for the device at every step)."""
        values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        guards.check_finite(step, values)
        self.interval.add(int(values["tokens"]), flops)
        self.last = {"step": step, **values}
        if step % self.log_every == 0 or step == self.num_steps:
            lr = next(values[f"lr/{p}"] for p in ("language_model", "connector", "vision_tower")
                      if f"lr/{p}" in values)
            record = {"step": step, "loss": values["loss"], "grad_norm": values["grad_norm"],
                      "lr": lr, **{k: v for k, v in values.items() if k.startswith("lr/")},
                      "supervised_tokens": int(values["supervised_tokens"]),
                      "tokens": int(values["tokens"]), **self.interval.rates(self.peak)}
            self.writer.write(record)
            self.interval.reset()
        elif step == self.start + 1:
            self.interval.reset()  # leave the compilation out of the throughput

    def _save(self, step: int, state: TrainState, data_state: Mapping[str, Any]) -> None:
        rng = jax.random.fold_in(jax.random.key(self.seed), step)
        self.ckpts.save(step, state, {
            "data": dict(data_state),
            "rng": np.asarray(jax.random.key_data(rng)).tolist(),
            "config": self.config.to_dict() if hasattr(self.config, "to_dict") else {}})
        self.saved_at = self.clock()
