"""The project checkpoint folder (``CKPT``), and reading a training workdir as one.

    CKPT/config.json     {"format": "basque_vlm", "version": 1, "model": VLMConfig as a dict}
    CKPT/params/         Orbax checkpoint of the parameter tree (source dtype kept)
    CKPT/tokenizer*, chat_template.jinja, processor_config.json, preprocessor_config.json, ...
                         the tokenizer and processor files, with the chat template

A training workdir (``basque_vlm.training.workdir``) has the same ``config.json`` and tokenizer
files, but its parameters are split so that frozen parts are written once, not at every step::

    WORKDIR/frozen/                   Orbax tree of the frozen parts (absent if all parts train)
    WORKDIR/checkpoints/STEP/params/  Orbax tree of the trained parts at STEP (+ optimizer state,
                                      ...)

Every reader here accepts either: a workdir means its latest step, merged with ``frozen/`` (a step
that fails to load falls back to the one before, with a warning). Either may be remote
(``gs://...``: `basque_vlm.paths`); `paths.local_copy` gives the tokenizer and processor files
as a local folder for ``from_pretrained``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import nnx
from jax.sharding import Mesh

from basque_vlm.model import sharding
from basque_vlm.model.vlm import VLM, VLMConfig
from basque_vlm.runtime import paths
from basque_vlm.store import shard_reader

FORMAT = "basque_vlm"
CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
CHECKPOINTS_DIR = "checkpoints"  # a workdir's Orbax CheckpointManager folder
FROZEN_DIR = "frozen"


class CheckpointNotFound(ValueError):
    pass


def _save_handler() -> ocp.PyTreeCheckpointHandler:
    """Orbax's default handler, minus two full-size copies: numpy arrays are written as they are
    (the save is synchronous, so they cannot change meanwhile) and uncompressed (zstd buffers of
    every chunk stay in memory until the write commits, and weights barely compress)."""
    registry = ocp.type_handlers.create_type_handler_registry(
        (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)),
        (jax.Array, ocp.type_handlers.ArrayHandler()))
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry, use_compression=False)


def save(out: str | Path, cfg: VLMConfig, params: dict[str, Any]) -> epath.Path:
    """Writes ``config.json`` and ``params/`` (tokenizer files are the caller's to add).

    Peak memory stays at the parameters themselves: nothing is copied on the way to disk."""
    out = paths.path(out)
    if (out / PARAMS_DIR).exists():
        raise FileExistsError(f"{out / PARAMS_DIR} already exists; choose an empty --out")
    out.mkdir(parents=True, exist_ok=True)
    with ocp.Checkpointer(_save_handler()) as ckptr:
        ckptr.save(out / PARAMS_DIR, args=ocp.args.PyTreeSave(params))
    write_config(out, cfg)
    return out


def write_config(out: str | Path, cfg: VLMConfig, **extra: Any) -> None:
    """``out/config.json``; ``extra`` keys are stored beside ``model``."""
    (paths.path(out) / CONFIG_FILE).write_text(json.dumps(
        {"format": FORMAT, "version": 1, "model": cfg.to_dict(), **extra}, indent=2) + "\n")


def load_config(ckpt: str | Path, **overrides: Any) -> VLMConfig:
    meta = _read_meta(ckpt)
    try:
        return VLMConfig.from_dict(meta["model"], **overrides)
    except (KeyError, TypeError, ValueError) as e:  # a field missing, unknown or mistyped
        raise CheckpointNotFound(f"{paths.path(ckpt) / CONFIG_FILE}: not a valid model config "
                                 f"({type(e).__name__}: {e})") from None


def _read_meta(ckpt: str | Path) -> dict[str, Any]:
    path = paths.path(ckpt) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointNotFound(f"{ckpt}: not a basque_vlm checkpoint (no {CONFIG_FILE})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointNotFound(f"{path}: not JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointNotFound(f"{path}: not a basque_vlm checkpoint config "
                                 "(for a Hugging Face folder, run `convert` first)")
    return meta


def load_processor(ckpt: str | Path) -> Any:
    """The checkpoint's transformers ``AutoProcessor`` (tokenizer, chat template and image
    processor), from a local copy of its files when it is remote."""
    from transformers import AutoProcessor  # slow to import

    try:
        return AutoProcessor.from_pretrained(str(paths.local_copy(ckpt)))
    except OSError as e:
        raise ValueError(f"cannot load the tokenizer/processor of {ckpt}: {e}") from None


def abstract_model(cfg: VLMConfig) -> VLM:
    return nnx.eval_shape(lambda: VLM(cfg, nnx.Rngs(0)))


def load_params(ckpt: str | Path, target: Any | None = None, dtype: Any = None
                ) -> dict[str, Any]:
    """The parameter tree of a checkpoint or a workdir (its latest step). ``target``, keyed by
    part, places it on devices: ShapeDtypeStructs with shardings, or shardings alone (each array
    then keeps its stored shape, and its stored dtype unless ``dtype`` is given). Every host
    reads only the pieces its devices hold: no host or device holds the whole model."""
    ckpt = paths.path(ckpt)
    meta = _read_meta(ckpt).get("workdir")
    if meta is None:
        return _restore(ckpt / PARAMS_DIR, target, dtype)
    frozen = (_restore(ckpt / FROZEN_DIR, _parts(target, meta["frozen"]), dtype)
              if meta["frozen"] else {})
    steps = workdir_steps(ckpt)
    for step in steps:
        try:
            trained = _restore(ckpt / CHECKPOINTS_DIR / str(step) / PARAMS_DIR,
                               _parts(target, meta["trainable"]), dtype)
        except Exception as e:  # a corrupt or partly written step: Orbax raises many types
            logging.warning("%s: step %d does not load (%s); trying the one before", ckpt, step,
                            e)
            continue
        return {**frozen, **trained}
    raise CheckpointNotFound(f"{ckpt}: a training workdir with no loadable checkpoint yet"
                             + (f" (steps {steps} failed)" if steps else ""))


def stored_bytes(ckpt: str | Path, dtype: Any = None) -> int:
    """The size of the stored parameters (a workdir: its latest step and ``frozen/``), read from
    the Orbax metadata; in ``dtype`` when given."""
    ckpt = paths.path(ckpt)
    meta = _read_meta(ckpt).get("workdir")
    steps = workdir_steps(ckpt) if meta else []
    folders = ([ckpt / PARAMS_DIR] if meta is None else
               [ckpt / FROZEN_DIR] * bool(meta["frozen"]) +
               [ckpt / CHECKPOINTS_DIR / str(s) / PARAMS_DIR for s in steps[:1]])
    total = 0
    for folder in folders:
        for leaf in jax.tree.leaves(ocp.PyTreeCheckpointHandler().metadata(folder).tree):
            total += math.prod(leaf.shape) * np.dtype(dtype or leaf.dtype).itemsize
    return total


def workdir_steps(workdir: str | Path) -> list[int]:
    """The finalized checkpoint steps of a training workdir, newest first."""
    folder = paths.path(workdir) / CHECKPOINTS_DIR
    return sorted(ocp.utils.checkpoint_steps(folder), reverse=True) if folder.is_dir() else []


def _parts(target: Any | None, parts: list[str]) -> Any | None:
    return None if target is None else {p: target[p] for p in parts}


def _restore(path: epath.Path, target: Any | None, dtype: Any = None) -> dict[str, Any]:
    """Placed as ``target`` (see `load_params`), or without one as host (numpy) arrays: a tree
    saved from sharded arrays (training) does not restore onto other devices without a
    target."""
    metadata = ocp.PyTreeCheckpointHandler().metadata(epath.Path(path))
    leaves = metadata.tree
    if target is not None:
        target = jax.tree.map(
            lambda t, stored: t if isinstance(t, jax.ShapeDtypeStruct) else jax.ShapeDtypeStruct(
                stored.shape, dtype or stored.dtype, sharding=t), target, leaves)
        return shard_reader.read_placed(epath.Path(path), metadata, target)
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), leaves)
    with ocp.PyTreeCheckpointer() as ckptr:
        return ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))


def load_model(ckpt: str | Path, param_dtype: str | None = None, mesh: Mesh | None = None,
               **overrides: Any) -> tuple[VLMConfig, VLM]:
    """A ready model. ``param_dtype`` casts the stored parameters (None keeps them as stored);
    ``overrides`` change how it computes (``dtype``, ``scan_layers``, ``remat``). With ``mesh``,
    each weight is read straight into its shards on the mesh's devices, split by the logical
    rules (`model.sharding`); a dimension that does not divide is a ValueError naming it."""
    cfg = load_config(ckpt, **overrides)
    if mesh is None:
        return cfg, build_model(cfg, load_params(ckpt), param_dtype)
    abstract = nnx.state(abstract_model(cfg), nnx.Param)
    sharding.check_divisible(abstract, mesh)
    placed = load_params(ckpt, sharding.param_shardings(abstract, mesh), param_dtype)
    return cfg, build_model(cfg, placed)


def build_model(cfg: VLMConfig, params: dict[str, Any], param_dtype: str | None = None) -> VLM:
    """The model ``cfg`` holding ``params`` (a tree of arrays, e.g. from the importer)."""
    model = abstract_model(cfg)
    if param_dtype is not None:
        params = jax.tree.map(lambda a: jnp.asarray(a, param_dtype), params)
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
    nnx.update(model, state)
    return model
