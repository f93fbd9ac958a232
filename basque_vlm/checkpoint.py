"""The project checkpoint folder (``CKPT``).

    CKPT/config.json     {"format": "basque_vlm", "version": 1, "model": VLMConfig as a dict}
    CKPT/params/         Orbax checkpoint of the parameter tree (source dtype kept)
    CKPT/tokenizer*, chat_template.jinja, processor_config.json, preprocessor_config.json, ...
                         the tokenizer and processor files, with the chat template
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from basque_vlm.model.vlm import VLM, VLMConfig

FORMAT = "basque_vlm"
CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


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


def save(out: str | Path, cfg: VLMConfig, params: dict[str, Any]) -> Path:
    """Writes ``config.json`` and ``params/`` (tokenizer files are the caller's to add).

    Peak memory stays at the parameters themselves: nothing is copied on the way to disk."""
    out = Path(out).absolute()
    if (out / PARAMS_DIR).exists():
        raise FileExistsError(f"{out / PARAMS_DIR} already exists; choose an empty --out")
    out.mkdir(parents=True, exist_ok=True)
    with ocp.Checkpointer(_save_handler()) as ckptr:
        ckptr.save(out / PARAMS_DIR, args=ocp.args.PyTreeSave(params))
    (out / CONFIG_FILE).write_text(json.dumps(
        {"format": FORMAT, "version": 1, "model": cfg.to_dict()}, indent=2) + "\n")
    return out


def load_config(ckpt: str | Path, **overrides: Any) -> VLMConfig:
    path = Path(ckpt) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointNotFound(f"{ckpt}: not a basque_vlm checkpoint (no {CONFIG_FILE})")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise CheckpointNotFound(f"{path}: not a basque_vlm checkpoint config "
                                 "(for a Hugging Face folder, run `convert` first)")
    return VLMConfig.from_dict(meta["model"], **overrides)


def abstract_model(cfg: VLMConfig) -> VLM:
    return nnx.eval_shape(lambda: VLM(cfg, nnx.Rngs(0)))


def load_params(ckpt: str | Path, target: Any | None = None) -> dict[str, Any]:
    """The parameter tree; ``target`` (ShapeDtypeStructs with shardings) places it on devices."""
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(Path(ckpt).absolute() / PARAMS_DIR, target)


def load_model(ckpt: str | Path, param_dtype: str | None = None, **overrides: Any
               ) -> tuple[VLMConfig, VLM]:
    """A ready model. ``param_dtype`` casts the stored parameters (None keeps them as stored);
    ``overrides`` change how it computes (``dtype``, ``scan_layers``, ``remat``)."""
    cfg = load_config(ckpt, **overrides)
    return cfg, build_model(cfg, load_params(ckpt), param_dtype)


def build_model(cfg: VLMConfig, params: dict[str, Any], param_dtype: str | None = None) -> VLM:
    """The model ``cfg`` holding ``params`` (a tree of arrays, e.g. from the importer)."""
    model = abstract_model(cfg)
    if param_dtype is not None:
        params = jax.tree.map(lambda a: jnp.asarray(a, param_dtype), params)
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
    nnx.update(model, state)
    return model
