"""Next-token cross-entropy, summed over supervised positions, in float32.

``chunked_cross_entropy_sum`` never holds the logits of the whole batch: it computes them
``chunk`` positions of every row at a time inside a ``lax.scan`` and recomputes each chunk in the
backward pass, so the logits' memory is ``rows × chunk × vocab`` instead of ``rows × length ×
vocab`` (for Llama-3.1's 128,256-entry vocabulary at 16 × 2048 tokens a chip: 2 GiB of float32
logits in chunks of 256 instead of 15.7 GiB, and as much again for their gradient).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy_sum(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Sum over masked positions of ``-log softmax(logits)[target]``, in float32."""
    logits = logits.astype(jnp.float32)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = jax.nn.logsumexp(logits, axis=-1) - target_logit
    return jnp.sum(nll * mask)


def chunked_cross_entropy_sum(hidden: jax.Array, output_embedding: jax.Array,
                              targets: jax.Array, mask: jax.Array, chunk: int) -> jax.Array:
    """``cross_entropy_sum(hidden @ output_embedding, targets, mask)`` for ``hidden [B, T, H]``
    and ``output_embedding [H, V]``, ``chunk`` positions at a time (0, or ``chunk >= T``: all at
    once). ``T`` need not divide by ``chunk``: the last chunk is padded with unsupervised
    positions."""
    rows, length, width = hidden.shape

    def logits_of(h: jax.Array) -> jax.Array:  # a 2-D matmul: see `model.layers`
        return (h.reshape(-1, width) @ output_embedding).reshape(*h.shape[:-1], -1)

    if chunk <= 0 or chunk >= length:
        return cross_entropy_sum(logits_of(hidden), targets, mask)
    pad = -length % chunk
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
        mask = jnp.pad(mask, ((0, 0), (0, pad)))
    chunks = (length + pad) // chunk

    def by_chunk(a: jax.Array) -> jax.Array:  # [B, T, ...] → [T / chunk, B, chunk, ...]
        return a.reshape(rows, chunks, chunk, *a.shape[2:]).swapaxes(0, 1)

    @jax.checkpoint  # keep only each chunk's hidden states: its logits are recomputed
    def chunk_loss(h: jax.Array, t: jax.Array, m: jax.Array) -> jax.Array:
        return cross_entropy_sum(logits_of(h), t, m)

    def body(total: jax.Array, xs: tuple[jax.Array, ...]) -> tuple[jax.Array, None]:
        return total + chunk_loss(*xs), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32),
                            (by_chunk(hidden), by_chunk(targets), by_chunk(mask)))
    return total
