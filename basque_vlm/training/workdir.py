"""A training workdir's checkpoints: Orbax, async, keep-N, resumable, readable as a project CKPT.

    WORKDIR/config.json, tokenizer and processor files   written once, at the start of a run:
                                        the workdir reads as a project checkpoint
                                        (`basque_vlm.store.checkpoint`: a workdir = its
                                        latest step)
    WORKDIR/frozen/                     Orbax tree of the frozen parts, written once (absent when
                                        every part trains): the 8B LLM of the align stage is not
                                        rewritten at every step
    WORKDIR/checkpoints/STEP/params/    Orbax tree of the trained parts (float32 master weights)
    WORKDIR/checkpoints/STEP/opt_state/ the optimizer state
    WORKDIR/checkpoints/STEP/meta/      JSON: step, RNG, data iterator state, the experiment config

Saving is asynchronous (the arrays are copied to host memory before ``save`` returns, so the next
step may reuse their buffers). Every process takes part; Orbax writes JSON from process 0 only.
The workdir may be remote (``gs://...``, `basque_vlm.paths`): Orbax and tensorstore write there
directly.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from basque_vlm.model.vlm import Params, VLMConfig
from basque_vlm.runtime import paths
from basque_vlm.store import checkpoint
from basque_vlm.training.step import TrainState


class Checkpoints:
    """The step checkpoints of one workdir."""

    def __init__(self, workdir: str | Path, *, keep: int, async_save: bool = True):
        self.workdir = paths.path(workdir)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.workdir / checkpoint.CHECKPOINTS_DIR,
                                              options=options,
                                              item_names=("params", "opt_state", "meta"))

    def save(self, step: int, state: TrainState, meta: Mapping[str, Any]) -> None:
        with self._named():  # an earlier save's error surfaces here
            self._manager.save(step, args=ocp.args.Composite(
                params=ocp.args.StandardSave(state.params),
                opt_state=ocp.args.StandardSave(state.opt_state),
                meta=ocp.args.JsonSave({"step": step, **meta})))

    @contextlib.contextmanager
    def _named(self) -> Iterator[None]:
        """An OSError of a save (a full disk) with the folder it concerns: Orbax's own, raised
        from its writing threads, name no file."""
        try:
            yield
        except OSError as e:
            raise OSError(f"{self.workdir / checkpoint.CHECKPOINTS_DIR}: a checkpoint was not "
                          f"written: {e}") from None

    def restore_latest(self, target: TrainState) -> tuple[TrainState, dict[str, Any]] | None:
        """The newest step that loads, placed as ``target`` (ShapeDtypeStructs with shardings),
        and its meta; None when there is none. Steps newer than the one loaded are corrupt or
        partial: they are deleted, with a warning."""
        steps = sorted(self._manager.all_steps(), reverse=True)
        errors = []
        for step in steps:
            try:
                got = self._manager.restore(step, args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(target.params),
                    opt_state=ocp.args.StandardRestore(target.opt_state),
                    meta=ocp.args.JsonRestore()))
            except Exception as e:  # corrupt or partial: Orbax and tensorstore raise many types
                logging.warning("checkpoint step %d does not load (%s: %s); trying the one "
                                "before", step, type(e).__name__, e)
                errors.append(step)
                continue
            for bad in errors:
                logging.warning("deleting the unloadable checkpoint step %d", bad)
                self._manager.delete(bad)
            step_array = jax.make_array_from_callback((), target.step.sharding,
                                                      lambda _: np.int32(step))
            state = TrainState(step=step_array, params=got["params"], opt_state=got["opt_state"])
            return state, dict(got["meta"])
        if errors:
            raise ValueError(f"{self.workdir}: no checkpoint step loads (tried {errors}); "
                             "see the warnings above, or start in a new --workdir")
        return None

    def wait(self) -> None:
        with self._named():
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for saves in flight."""
        with self._named():
            self._manager.close()


def start_workdir(workdir: str | Path, cfg: VLMConfig, trainable: list[str],
                  frozen_parts: list[str]) -> None:
    """Writes ``config.json`` (process 0), or checks that it describes the same run."""
    workdir = paths.path(workdir)
    meta = {"trainable": list(trainable), "frozen": list(frozen_parts)}
    path = workdir / checkpoint.CONFIG_FILE
    if path.is_file() and checkpoint.workdir_steps(workdir):
        found = json.loads(path.read_text())
        if found.get("model") != json.loads(json.dumps(cfg.to_dict())) or \
                found.get("workdir") != meta:
            raise ValueError(f"{workdir} holds a run of another model or other trained parts; "
                             "use a new --workdir, or the config it was started with")
        return
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        checkpoint.write_config(workdir, cfg, workdir=meta)


def save_frozen(workdir: str | Path, frozen: Params) -> None:
    """The frozen parts, once (every process takes part)."""
    if frozen:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(paths.path(workdir) / checkpoint.FROZEN_DIR, frozen, force=True)


def load_frozen(workdir: str | Path, target: Params) -> Params:
    if not target:
        return {}
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(paths.path(workdir) / checkpoint.FROZEN_DIR, target)
