"""Scaled dot-product attention with grouped KV heads (the XLA reference implementation)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
                          scale: float) -> jax.Array:
    """``q: [B, T, H, D]``, ``k, v: [B, S, KVH, D]``, ``mask: [B, T, S]`` (True = attend) or None.

    Scores and softmax in float32; a query with no key to attend to (a left pad) gets a uniform
    distribution rather than NaN, as in transformers.
    """
    b, t, h, d = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(b, t, kv_heads, h // kv_heads, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32) * scale
    if mask is not None:
        scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


def decoder_mask(kv_valid: jax.Array, query_slots: jax.Array) -> jax.Array:
    """Causal + padding mask ``[B, T, S]``.

    ``kv_valid: [B, S]`` marks real (non-pad) key slots; ``query_slots: [T]`` is each query's slot
    in the key sequence (``offset + arange(T)`` when decoding into a KV cache).
    """
    key_slots = jnp.arange(kv_valid.shape[1])
    causal = key_slots[None, :] <= query_slots[:, None]
    return causal[None] & kv_valid[:, None, :].astype(bool)
