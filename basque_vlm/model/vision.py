"""Vision towers: CLIP ViT (class token, pre-layernorm) and SigLIP ViT (no class token).

Only the encoder part that LLaVA reads is computed: the hidden states after ``k`` layers for each
requested ``vision_feature_layer`` (transformers' ``hidden_states[k]``, 0 = the embeddings).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from basque_vlm.model.attention import self_attention
from basque_vlm.model.layers import LayerNorm, Linear, activation, normal, param, run_layers, stack_layers

VISION_KINDS = ("clip", "siglip")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """A CLIP or SigLIP vision transformer (the vision half of a LLaVA model), as transformers'
    ``CLIPVisionConfig`` / ``SiglipVisionConfig`` give it (`from_hf`), plus how to compute it."""

    kind: str  # clip | siglip
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    image_size: int
    patch_size: int
    num_channels: int = 3
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    dtype: str = "float32"
    scan_layers: bool = True
    remat: str = "none"
    attention: str = "auto"  # basque_vlm.model.attention.IMPLEMENTATIONS

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def has_class_token(self) -> bool:
        return self.kind == "clip"

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> VisionConfig:
        """From a ``clip_vision_model`` / ``siglip_vision_model`` config (or a full CLIP/SigLIP one)."""
        model_type = hf.get("model_type", "")
        if model_type in ("clip", "siglip"):
            hf = {**hf["vision_config"], "model_type": f"{model_type}_vision_model"}
            model_type = hf["model_type"]
        kind = model_type.removesuffix("_vision_model")
        if kind not in VISION_KINDS:
            raise ValueError(f"unsupported vision model_type {model_type!r}; "
                             "expected clip_vision_model or siglip_vision_model")
        return cls(
            kind=kind,
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            image_size=hf["image_size"],
            patch_size=hf["patch_size"],
            num_channels=hf.get("num_channels", 3),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-5 if kind == "clip" else 1e-6),
            hidden_act=hf.get("hidden_act", "quick_gelu" if kind == "clip" else "gelu_pytorch_tanh"),
        )

    def to_hf(self) -> dict[str, Any]:
        hf = {
            "model_type": f"{self.kind}_vision_model",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_channels": self.num_channels,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": self.hidden_act,
        }
        if self.kind == "siglip":
            hf["vision_use_head"] = False  # LLaVA never reads the pooling head
        return hf


class EncoderLayer(nnx.Module):
    def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs):
        d, h, dt = cfg.hidden_size, cfg.num_heads, jnp.dtype(cfg.dtype)
        hd = d // h

        def proj(in_shape, out_shape, names):
            return Linear(in_shape, out_shape, names, use_bias=True, rngs=rngs, dtype=dt)

        self.layer_norm1 = LayerNorm(d, cfg.layer_norm_eps, rngs=rngs, dtype=dt)
        self.q_proj = proj((d,), (h, hd), ("embed", "heads", "head_dim"))
        self.k_proj = proj((d,), (h, hd), ("embed", "heads", "head_dim"))
        self.v_proj = proj((d,), (h, hd), ("embed", "heads", "head_dim"))
        self.out_proj = proj((h, hd), (d,), ("heads", "head_dim", "embed"))
        self.layer_norm2 = LayerNorm(d, cfg.layer_norm_eps, rngs=rngs, dtype=dt)
        self.fc1 = proj((d,), (cfg.intermediate_size,), ("embed", "mlp"))
        self.fc2 = proj((cfg.intermediate_size,), (d,), ("mlp", "embed"))
        self.act = activation(cfg.hidden_act)
        self.scale = hd ** -0.5
        self.implementation = cfg.attention

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.layer_norm1(x)
        attn = self_attention(self.q_proj(h), self.k_proj(h), self.v_proj(h), scale=self.scale,
                              causal=False, kv_valid=None, implementation=self.implementation)
        x = x + self.out_proj(attn)
        return x + self.fc2(self.act(self.fc1(self.layer_norm2(x))))


class VisionTower(nnx.Module):
    """The vision transformer: ``pixel_values [N, C, H, W]`` → per-layer hidden states
    ``[N, tokens, hidden]`` (tokens = the patches, plus CLIP's class token first); LLaVA reads
    the layers it names (`hidden_states`)."""

    def __init__(self, cfg: VisionConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        d, dt = cfg.hidden_size, jnp.dtype(cfg.dtype)
        pixels = cfg.num_channels * cfg.patch_size ** 2
        self.patch_embedding = Linear((pixels,), (d,), ("patch_pixels", "embed"),
                                      use_bias=cfg.kind == "siglip", rngs=rngs, dtype=dt)
        positions = cfg.num_patches + int(cfg.has_class_token)
        self.position_embedding = param(rngs, normal(0.02), (positions, d), ("patch", "embed"))
        if cfg.has_class_token:
            self.class_embedding = param(rngs, normal(0.02), (d,), ("embed",))
            self.pre_layrnorm = LayerNorm(d, cfg.layer_norm_eps, rngs=rngs, dtype=dt)
        self.layers = stack_layers(lambda r: EncoderLayer(cfg, r), cfg.num_layers, rngs)
        # Never computed by LLaVA; kept so that an exported model is complete.
        self.post_layernorm = LayerNorm(d, cfg.layer_norm_eps, rngs=rngs, dtype=dt)

    def embed(self, pixel_values: jax.Array) -> jax.Array:
        """``pixel_values: [N, C, H, W]`` (transformers' layout) → ``[N, tokens, hidden]``."""
        n, c, height, width = pixel_values.shape
        p = self.cfg.patch_size
        patches = pixel_values.reshape(n, c, height // p, p, width // p, p)
        patches = patches.transpose(0, 2, 4, 1, 3, 5).reshape(n, -1, c * p * p)
        x = self.patch_embedding(patches)
        if self.cfg.has_class_token:
            cls = jnp.broadcast_to(self.class_embedding[...].astype(x.dtype), (n, 1, x.shape[-1]))
            x = jnp.concatenate([cls, x], axis=1)
        x = x + self.position_embedding[...].astype(x.dtype)
        if self.cfg.has_class_token:
            x = self.pre_layrnorm(x)
        return x

    def hidden_states(self, pixel_values: jax.Array, layers: tuple[int, ...]) -> list[jax.Array]:
        """transformers' ``hidden_states[i]`` for each ``i`` in ``layers`` (negative from the end)."""
        total = self.cfg.num_layers + 1
        wanted = [i % total for i in layers]
        for i, w in zip(layers, wanted):
            if not -total <= i < total:
                raise ValueError(f"vision_feature_layer {i} out of range for a "
                                 f"{self.cfg.num_layers}-layer vision tower")
        x = self.embed(pixel_values)
        depth = max(wanted)
        if depth == 0:
            return [x for _ in wanted]
        keep_all = len(set(wanted)) > 1 or wanted[0] != depth

        def body(layer, h, _):
            h = layer(h)
            return h, (h if keep_all else None)

        last, stacked = run_layers(self.layers, x, None, body, scan=self.cfg.scan_layers,
                                   remat=self.cfg.remat, num_layers=depth)
        return [x if w == 0 else (stacked[w - 1] if keep_all else last) for w in wanted]
