"""Connectors from vision features to the decoder's embedding space."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from basque_vlm.model.layers import Linear, activation

CONNECTORS = ("linear", "mlp2x_gelu")


class Connector(nnx.Module):
    """``linear``: one projection (the Basque paper's). ``mlp2x_gelu``: linear → GELU → linear
    (LLaVA-1.5, Pangea, transformers' ``LlavaMultiModalProjector``)."""

    def __init__(self, kind: str, vision_dim: int, text_dim: int, *, use_bias: bool,
                 rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32):
        if kind not in CONNECTORS:
            raise ValueError(f"unknown connector {kind!r}; choose one of {CONNECTORS}")
        self.kind = kind
        self.linear_1 = Linear((vision_dim,), (text_dim,), ("mlp", "embed"), use_bias=use_bias,
                               rngs=rngs, dtype=dtype)
        self.linear_2 = (Linear((text_dim,), (text_dim,), ("mlp", "embed"), use_bias=use_bias,
                                rngs=rngs, dtype=dtype) if kind == "mlp2x_gelu" else None)

    def __call__(self, features: jax.Array) -> jax.Array:
        x = self.linear_1(features)
        if self.linear_2 is not None:
            x = self.linear_2(activation("gelu")(x))
        return x
