"""A project checkpoint → a Hugging Face ``LlavaForConditionalGeneration`` folder (export).

Tensors are named by the same tables the importer reads (``mapping``), with transformers v5's
prefixes, and written one at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from basque_vlm.hf import mapping
from basque_vlm.hf.importer import copy_assets
from basque_vlm.hf.reader import read_json
from basque_vlm.hf.shards import LazyTensor, write_safetensors
from basque_vlm.model.vlm import Params, VLMConfig
from basque_vlm.store import checkpoint

LINEAR_NOTE = ("note: transformers' LLaVA has no single-linear projector; the linear connector is "
               "written as linear_1 = the connector, projector_hidden_act 'linear' (identity) and "
               "linear_2 = the identity matrix with zero bias, which gives the same outputs. "
               "`convert --hf_dir` folds it back into one linear layer.")


def _lookup(tree: Params, path: tuple[str, ...]) -> np.ndarray:
    for key in path:
        tree = tree[key]
    return np.asarray(tree)


def _part_tensors(part: Params, prefix: str, tensors: list[mapping.Tensor],
                  conv: tuple[int, int] | None = None) -> list[LazyTensor]:
    out = []
    for t in tensors:
        ours = _lookup(part, t.path)
        name = (mapping.EXPORT_PREFIXES["lm_head"] + t.hf_name[1:] if t.hf_name.startswith("^")
                else prefix + t.hf_name)
        layers = range(ours.shape[0]) if t.stacked else [None]
        for i in layers:
            array = ours if i is None else ours[i]
            shape = tuple(mapping.hf_shape(t, array.shape, conv))
            out.append(LazyTensor(name.format(i=i), shape, array.dtype,
                                  lambda t=t, a=array, s=shape: mapping.to_hf(t, a, s)))
    return out


def _identity_projector(d: int, dtype: np.dtype, bias: bool) -> list[LazyTensor]:
    prefix = mapping.EXPORT_PREFIXES["connector"] + "linear_2."
    out = [LazyTensor(prefix + "weight", (d, d), dtype, lambda: np.eye(d, dtype=dtype))]
    if bias:
        out.append(LazyTensor(prefix + "bias", (d,), dtype, lambda: np.zeros(d, dtype)))
    return out


def llava_tensors(cfg: VLMConfig, params: Params) -> list[LazyTensor]:
    """Every tensor of the ``LlavaForConditionalGeneration`` state dict, made on demand."""
    text, vision = cfg.text, cfg.vision
    prefixes = mapping.EXPORT_PREFIXES
    tensors = _part_tensors(
        params["language_model"], prefixes["llm"],
        mapping.llama_tensors(text.tie_word_embeddings, text.attention_bias, text.mlp_bias))
    tensors += _part_tensors(params["vision_tower"], prefixes["vision"],
                             mapping.vision_tensors(vision.has_class_token),
                             conv=(vision.num_channels, vision.patch_size))
    tensors += _part_tensors(params["connector"], prefixes["connector"],
                             mapping.connector_tensors(cfg.connector, cfg.connector_bias))
    if cfg.connector == "linear":
        kernel = _lookup(params["connector"], ("linear_1", "kernel"))
        tensors += _identity_projector(text.hidden_size, kernel.dtype, cfg.connector_bias)
    return tensors


def _eos(cfg: VLMConfig) -> int | list[int] | None:
    ids = list(cfg.eos_token_ids)
    return ids[0] if len(ids) == 1 else (ids or None)


def llava_config(cfg: VLMConfig, dtype: str) -> dict[str, Any]:
    """``config.json`` of the exported model; ``dtype`` is the stored parameters' dtype."""
    text = {**cfg.text.to_hf(), "eos_token_id": _eos(cfg), "pad_token_id": cfg.pad_token_id}
    layer = cfg.vision_feature_layer
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "text_config": text,
        "vision_config": cfg.vision.to_hf(),
        "image_token_id": cfg.image_token_id,
        "image_seq_length": cfg.tokens_per_image,
        "vision_feature_layer": list(layer) if isinstance(layer, tuple) else layer,
        "vision_feature_select_strategy": cfg.vision_feature_select_strategy,
        "projector_hidden_act": "gelu" if cfg.connector == "mlp2x_gelu" else "linear",
        "multimodal_projector_bias": cfg.connector_bias,
        "tie_word_embeddings": cfg.text.tie_word_embeddings,
        "pad_token_id": cfg.pad_token_id,
        "dtype": dtype,
    }


def export_checkpoint(ckpt: str | Path, out: str | Path, max_shard_bytes: int,
                      log: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Writes the Hugging Face folder ``out`` (which must not exist yet, or be empty) and returns
    the weight files written."""
    out = Path(out)
    cfg = checkpoint.load_config(ckpt)
    log(f"reading parameters from {ckpt}")
    params = checkpoint.load_params(ckpt)
    tensors = llava_tensors(cfg, params)
    dtype = str(tensors[0].dtype)  # the decoder's embedding table: the model's storage dtype
    out.mkdir(parents=True, exist_ok=True)
    log(f"writing {len(tensors)} tensors to {out}")
    files = write_safetensors(out, tensors, max_shard_bytes)
    (out / "config.json").write_text(json.dumps(llava_config(cfg, dtype), indent=2) + "\n")
    copy_assets(ckpt, out)
    generation = out / "generation_config.json"
    base = read_json(generation) if generation.is_file() else {}
    generation.write_text(json.dumps(
        {**base, "eos_token_id": _eos(cfg), "pad_token_id": cfg.pad_token_id}, indent=2) + "\n")
    return files
