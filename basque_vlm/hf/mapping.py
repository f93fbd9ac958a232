"""How each project parameter corresponds to a Hugging Face tensor (both directions).

One table per part (decoder, vision tower, connector). Names are relative to the part's prefix in
the Hugging Face file; ``{i}`` stands for a layer index of a stacked parameter. The reader and the
writer both walk these tables, so import and export cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tensor:
    path: tuple[str, ...]  # path in the project's parameter tree
    hf_name: str           # name relative to the part's prefix, ``{i}`` = layer
    kind: str = "same"     # same | flat (1-D in the file) | dense | conv
    in_dims: int = 1       # dense: how many leading dims of our kernel are input dims

    @property
    def stacked(self) -> bool:
        return "{i}" in self.hf_name


def to_project(t: Tensor, hf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A Hugging Face tensor (one layer's, for stacked ones) → our layout of ``shape``; usually a
    strided view of ``hf``, for the caller to copy where it wants it."""
    if t.kind == "dense":  # torch Linear [out, in] -> [*in, *out]
        return hf.T.reshape(shape)
    if t.kind == "conv":   # Conv2d [out, C, p, p] -> [C*p*p, out]
        return hf.reshape(hf.shape[0], -1).T
    return hf.reshape(shape)


def to_hf(t: Tensor, ours: np.ndarray, hf_shape: tuple[int, ...]) -> np.ndarray:
    """Our array (one layer's, for stacked ones) → the Hugging Face tensor of ``hf_shape``."""
    if t.kind == "dense":
        n_in = math.prod(ours.shape[:t.in_dims])
        return np.ascontiguousarray(ours.reshape(n_in, -1).T)
    if t.kind == "conv":
        return np.ascontiguousarray(ours.T).reshape(hf_shape)
    return ours.reshape(hf_shape)


def hf_shape(t: Tensor, shape: tuple[int, ...], conv: tuple[int, int] | None = None) -> list[int]:
    """The Hugging Face shape of a tensor whose shape is ``shape`` in our layout. A ``conv`` one
    also needs ``(channels, patch_size)``: ours flattens them."""
    if t.kind == "dense":
        return [math.prod(shape[t.in_dims:]), math.prod(shape[:t.in_dims])]
    if t.kind == "flat":
        return [math.prod(shape)]
    if t.kind == "conv":
        channels, patch = conv
        return [shape[-1], channels, patch, patch]
    return list(shape)


def _linear(path: tuple[str, ...], hf: str, bias: bool, in_dims: int = 1) -> list[Tensor]:
    out = [Tensor(path + ("kernel",), f"{hf}.weight", "dense", in_dims)]
    if bias:
        out.append(Tensor(path + ("bias",), f"{hf}.bias", "flat"))
    return out


def _norm(path: tuple[str, ...], hf: str, bias: bool = False) -> list[Tensor]:
    out = [Tensor(path + ("weight",), f"{hf}.weight")]
    if bias:
        out.append(Tensor(path + ("bias",), f"{hf}.bias"))
    return out


def llama_tensors(tie_word_embeddings: bool, attention_bias: bool, mlp_bias: bool) -> list[Tensor]:
    """Decoder tensors relative to ``model.``; a name starting with ``^`` is relative to the prefix
    of ``lm_head`` instead."""
    layer = ("layers",)
    out = [Tensor(("embed_tokens",), "embed_tokens.weight")]
    for proj in ("q_proj", "k_proj", "v_proj"):
        out += _linear(layer + ("self_attn", proj), f"layers.{{i}}.self_attn.{proj}", attention_bias)
    out += _linear(layer + ("self_attn", "o_proj"), "layers.{i}.self_attn.o_proj", attention_bias,
                   in_dims=2)
    for proj in ("gate_proj", "up_proj", "down_proj"):
        out += _linear(layer + ("mlp", proj), f"layers.{{i}}.mlp.{proj}", mlp_bias)
    out += _norm(layer + ("input_layernorm",), "layers.{i}.input_layernorm")
    out += _norm(layer + ("post_attention_layernorm",), "layers.{i}.post_attention_layernorm")
    out += _norm(("norm",), "norm")
    if not tie_word_embeddings:
        out.append(Tensor(("lm_head", "kernel"), "^lm_head.weight", "dense"))
    return out


def vision_tensors(has_class_token: bool) -> list[Tensor]:
    """Vision tower tensors relative to ``vision_model.``."""
    out = [Tensor(("patch_embedding", "kernel"), "embeddings.patch_embedding.weight", "conv"),
           Tensor(("position_embedding",), "embeddings.position_embedding.weight")]
    if has_class_token:
        out += [Tensor(("class_embedding",), "embeddings.class_embedding")]
        out += _norm(("pre_layrnorm",), "pre_layrnorm", bias=True)
    else:
        out += [Tensor(("patch_embedding", "bias"), "embeddings.patch_embedding.bias")]
    layer = ("layers",)
    for proj in ("q_proj", "k_proj", "v_proj"):
        out += _linear(layer + (proj,), f"encoder.layers.{{i}}.self_attn.{proj}", True)
    out += _linear(layer + ("out_proj",), "encoder.layers.{i}.self_attn.out_proj", True, in_dims=2)
    out += _linear(layer + ("fc1",), "encoder.layers.{i}.mlp.fc1", True)
    out += _linear(layer + ("fc2",), "encoder.layers.{i}.mlp.fc2", True)
    out += _norm(layer + ("layer_norm1",), "encoder.layers.{i}.layer_norm1", bias=True)
    out += _norm(layer + ("layer_norm2",), "encoder.layers.{i}.layer_norm2", bias=True)
    out += _norm(("post_layernorm",), "post_layernorm", bias=True)
    return out


def connector_tensors(kind: str, bias: bool) -> list[Tensor]:
    out = _linear(("linear_1",), "linear_1", bias)
    if kind == "mlp2x_gelu":
        out += _linear(("linear_2",), "linear_2", bias)
    return out


# Where each part lives in the files transformers writes: LLaVA v5 layout, LLaVA v4 layout, and
# standalone models (a bare CLIP/SigLIP vision model has no prefix from transformers v5 on). The
# first prefix whose probe tensor exists wins.
LLM_PREFIXES = ("model.language_model.", "language_model.model.", "model.")
LM_HEAD_PREFIXES = ("", "language_model.")
VISION_PREFIXES = ("model.vision_tower.vision_model.", "vision_tower.vision_model.",
                   "model.vision_tower.", "vision_tower.", "vision_model.", "")
CONNECTOR_PREFIXES = ("model.multi_modal_projector.", "multi_modal_projector.")
PROBES = {"llm": "embed_tokens.weight", "lm_head": "lm_head.weight",
          "vision": "embeddings.position_embedding.weight", "connector": "linear_1.weight"}

# The names the exporter writes: the layout of the published llava-hf checkpoints, which
# transformers v4 and v5 (it renames them on load) and other LLaVA loaders all read.
EXPORT_PREFIXES = {"llm": "language_model.model.", "lm_head": "language_model.",
                   "vision": "vision_tower.vision_model.", "connector": "multi_modal_projector."}
