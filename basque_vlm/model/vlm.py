"""The LLaVA-style VLM: vision tower → connector → features spliced into the decoder's input."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from basque_vlm.model.connector import Connector
from basque_vlm.model.llama import Llama, LlamaConfig
from basque_vlm.model.vision import VisionConfig, VisionTower

STRATEGIES = ("default", "full")
# A parameter tree by part: {"vision_tower": ..., "connector": ..., "language_model": ...}, each
# a nested dict of arrays (nnx.State.to_pure_dict).
Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class VLMConfig:
    """Everything a checkpoint's ``config.json`` stores about the model: the decoder, the vision
    tower, the connector between them, which vision layers feed it and whether CLIP's class
    token is dropped, and the special tokens (the image placeholder, end of turn, padding).
    Without a vision tower (``vision`` None) it is a language model alone: text only (e.g. the
    70B translator, `convert --llm_dir` alone)."""

    text: LlamaConfig
    vision: VisionConfig | None
    connector: str  # linear | mlp2x_gelu
    image_token_id: int
    connector_bias: bool = True
    vision_feature_layer: int | tuple[int, ...] = -2
    vision_feature_select_strategy: str = "default"  # default drops CLIP's class token
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    def __post_init__(self):
        if self.vision_feature_select_strategy not in STRATEGIES:
            raise ValueError(f"vision_feature_select_strategy must be one of {STRATEGIES}, "
                             f"got {self.vision_feature_select_strategy!r}")

    @property
    def feature_layers(self) -> tuple[int, ...]:
        layer = self.vision_feature_layer
        return tuple(layer) if isinstance(layer, (list, tuple)) else (layer,)

    @property
    def tokens_per_image(self) -> int:
        """Image placeholder tokens per image: what the processor expands ``<image>`` into."""
        v = self.vision
        if v is None:
            return 0
        drop = self.vision_feature_select_strategy == "default"
        return v.num_patches + int(v.has_class_token) - int(drop)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> VLMConfig:
        """``overrides`` (e.g. ``dtype``, ``scan_layers``, ``remat``) apply to both sub-models."""
        d = dict(d)
        text = LlamaConfig(**{**d.pop("text"), **overrides})
        vision = d.pop("vision")
        vision = None if vision is None else VisionConfig(**{**vision, **overrides})
        for key in ("vision_feature_layer", "eos_token_ids"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(text=text, vision=vision, **d)


def check_image_tokens(input_ids: np.ndarray, num_images: int, tokens_per_image: int) -> None:
    """Raises ValueError when the prompt's placeholders and the images' features disagree."""
    found = int(np.sum(input_ids))
    if found != num_images * tokens_per_image:
        raise ValueError(
            f"image placeholders and image features disagree: the prompt has {found} image "
            f"tokens but {num_images} image(s) give {num_images * tokens_per_image} features "
            f"({tokens_per_image} per image)")


def check_image_slots(is_image: np.ndarray, images_per_row: int, tokens_per_image: int) -> None:
    """Raises ValueError when a row's image tokens are not whole spans that fit its slots."""
    for row, count in enumerate(is_image.sum(axis=1)):
        if count % tokens_per_image or count > images_per_row * tokens_per_image:
            raise ValueError(f"row {row} has {count} image tokens: not a multiple of "
                             f"{tokens_per_image} per image within {images_per_row} image slot(s)")


class VLM(nnx.Module):
    """The LLaVA-style model: ``input_ids [B, T]`` (with ``tokens_per_image`` placeholder tokens
    per image) and ``pixel_values [N, C, H, W]`` → logits ``[B, T, vocab]``. Its parts, which
    train or freeze separately, are ``vision_tower``, ``connector`` and ``language_model``."""

    def __init__(self, cfg: VLMConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        if cfg.vision is not None:  # else a language model alone
            self.vision_tower = VisionTower(cfg.vision, rngs)
            vision_dim = cfg.vision.hidden_size * len(cfg.feature_layers)
            self.connector = Connector(cfg.connector, vision_dim, cfg.text.hidden_size,
                                       use_bias=cfg.connector_bias, rngs=rngs,
                                       dtype=jnp.dtype(cfg.text.dtype))
        self.language_model = Llama(cfg.text, rngs)

    def image_features(self, pixel_values: jax.Array) -> jax.Array:
        """``[N, C, H, W]`` → projected features ``[N, tokens_per_image, text_hidden]``."""
        states = self.vision_tower.hidden_states(pixel_values, self.cfg.feature_layers)
        features = jnp.concatenate(states, axis=-1)
        if self.cfg.vision_feature_select_strategy == "default":
            features = features[:, 1:]
        return self.connector(features)

    def embed(self, input_ids: jax.Array, pixel_values: jax.Array | None = None,
              images_per_row: int | None = None) -> jax.Array:
        """Token embeddings with the image placeholders replaced by image features.

        By default the images are consumed in row-major order of the placeholders over the whole
        batch, as in transformers' LLaVA. With ``images_per_row = M`` (the training batches'
        layout), row ``r``'s ``k``-th image span takes image ``r * M + k``, and image slots a row
        does not use are ignored.
        """
        x = self.language_model.embed(input_ids)
        if pixel_values is None:
            return x
        if self.cfg.vision is None:
            raise ValueError("images given to a language model without a vision tower")
        is_image = input_ids == self.cfg.image_token_id
        per_image = self.cfg.tokens_per_image
        if not isinstance(input_ids, jax.core.Tracer):
            if images_per_row is None:
                check_image_tokens(np.asarray(is_image), pixel_values.shape[0], per_image)
            else:
                check_image_slots(np.asarray(is_image), images_per_row, per_image)
        features = self.image_features(pixel_values).astype(x.dtype)
        features = features.reshape(-1, features.shape[-1])
        if images_per_row is None:
            index = (jnp.cumsum(is_image.reshape(-1)) - 1).reshape(is_image.shape)
        else:
            row_start = jnp.arange(is_image.shape[0])[:, None] * (images_per_row * per_image)
            index = row_start + jnp.cumsum(is_image, axis=1) - 1
        gathered = features[jnp.clip(index, 0, features.shape[0] - 1)]
        return jnp.where(is_image[..., None], gathered, x)

    def hidden_states(self, input_ids: jax.Array, pixel_values: jax.Array | None = None,
                      attention_mask: jax.Array | None = None,
                      positions: jax.Array | None = None,
                      images_per_row: int | None = None) -> jax.Array:
        """Full forward without a cache → the final-normed hidden states ``[B, T, hidden]``."""
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        if positions is None:
            positions = positions_from_mask(attention_mask)
        hidden, _ = self.language_model(self.embed(input_ids, pixel_values, images_per_row),
                                        positions, attention_mask)
        return hidden

    def __call__(self, input_ids: jax.Array, pixel_values: jax.Array | None = None,
                 attention_mask: jax.Array | None = None,
                 positions: jax.Array | None = None,
                 images_per_row: int | None = None) -> jax.Array:
        """Full forward without a cache → logits ``[B, T, vocab]``."""
        return self.language_model.logits(self.hidden_states(
            input_ids, pixel_values, attention_mask, positions, images_per_row))


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
    """RoPE positions that start at 0 at each row's first real token (left padding)."""
    return jnp.maximum(jnp.cumsum(attention_mask, axis=-1) - 1, 0)
