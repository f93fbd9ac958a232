"""Batched generation: a jitted prefill and KV-cache decode loop (``lax.while_loop``).

Prompts are left-padded: every row's last prompt token sits in the same slot, so each decode step
writes one cache slot for the whole batch. RoPE positions start at 0 at each row's first real token
and pads are masked, so a row's tokens do not depend on the rest of the batch.

On a mesh (``mesh=``; the model's weights already placed on it, `store.checkpoint.load_model`)
the rows are split over ``data`` (and ``fsdp``), the KV cache likewise and over ``tensor`` by its
KV heads, the weights as the logical rules say; every process of the mesh calls `generate` with
the same whole batch and gets all of it back.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from basque_vlm.infer.sampling import next_token
from basque_vlm.model import sharding
from basque_vlm.model.layers import unstack_layers
from basque_vlm.model.llama import init_cache, unstack_cache
from basque_vlm.model.vlm import VLM, check_image_tokens, positions_from_mask


def generate(model: VLM, input_ids: np.ndarray, attention_mask: np.ndarray,
             pixel_values: np.ndarray | None = None, *, max_new_tokens: int,
             temperature: float = 0.0, top_p: float = 1.0, rng: jax.Array | None = None,
             eos_ids: Sequence[int] | None = None, pad_id: int | None = None,
             length_multiple: int = 64, mesh: Mesh | None = None) -> np.ndarray:
    """Generated ids ``[B, max_new_tokens]``; after a row's end-of-turn token, ``pad_id``.

    ``input_ids``/``attention_mask``: ``[B, T]``, left-padded. ``temperature=0`` is greedy;
    otherwise sampling with ``temperature`` and ``top_p`` needs ``rng``. ``eos_ids`` (default: the
    config's end-of-turn ids; ``()`` never stops) end a row. Prompts are left-padded further to a
    multiple of ``length_multiple`` so that one compilation serves many prompt lengths.
    """
    cfg = model.cfg
    eos = tuple(cfg.eos_token_ids if eos_ids is None else eos_ids)
    if pad_id is None:
        pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else (eos[0] if eos else 0)
    if max_new_tokens < 1 or temperature < 0 or not 0 < top_p <= 1:
        raise ValueError("need max_new_tokens >= 1, temperature >= 0 and 0 < top_p <= 1; got "
                         f"{max_new_tokens}, {temperature}, {top_p}")
    sample = temperature > 0
    if sample and rng is None:
        raise ValueError("sampling (temperature > 0) needs an explicit rng key")
    input_ids, attention_mask = np.asarray(input_ids), np.asarray(attention_mask)
    if pixel_values is not None:
        check_image_tokens(input_ids == cfg.image_token_id, len(pixel_values),
                           cfg.tokens_per_image)
    input_ids, attention_mask = left_pad(input_ids, attention_mask, pad_id, length_multiple)
    rows = len(input_ids)
    ids, mask = input_ids.astype(np.int32), attention_mask.astype(np.int32)
    graphdef, state = nnx.split(model)
    with contextlib.ExitStack() as stack:
        if mesh is not None:
            stack.enter_context(sharding.use_mesh(mesh))
            ids, mask, pixel_values = (_rows_on_mesh(mesh, a, rows)
                                       for a in (ids, mask, pixel_values))
        tokens = _generate(graphdef, state, ids, mask, pixel_values, rng if sample else None,
                           jnp.float32(temperature), jnp.float32(top_p),
                           max_new_tokens=max_new_tokens, eos_ids=eos, pad_id=pad_id)
    return np.asarray(tokens)[:rows]


def _rows_on_mesh(mesh: Mesh, array: np.ndarray | None, rows: int) -> jax.Array | None:
    """A batch input (``rows`` rows; pixel values: the same number of images per row) padded
    to a whole number of row shards with copies of its first row, and placed on the mesh."""
    if array is None:
        return None
    array = np.asarray(array)
    padded = pad_rows(array.reshape(rows, -1, *array.shape[1:]), sharding.row_shards(mesh))
    placed = sharding.shard_rows(mesh, padded.shape, lambda index: padded[index])
    return placed.reshape(-1, *array.shape[1:])


def pad_rows(array: np.ndarray, multiple: int) -> np.ndarray:
    """``array`` with copies of its first row appended up to a multiple of ``multiple`` rows."""
    extra = -len(array) % multiple
    return np.concatenate([array, np.repeat(array[:1], extra, axis=0)]) if extra else array



def lower_greedy(graphdef: nnx.GraphDef, state: Any, input_ids: Any, attention_mask: Any,
                 pixel_values: Any | None, *, max_new_tokens: int, eos_ids: Sequence[int],
                 pad_id: int) -> jax.stages.Lowered:
    """`generate`'s jitted prefill and decode loop, greedy, lowered for these inputs (arrays or
    ``jax.ShapeDtypeStruct``s with shardings; ``state`` is the model's ``nnx.split`` state), so
    that it can be compiled ahead of time (`basque_vlm.tpu.fit`)."""
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    return _generate.lower(graphdef, state, input_ids, attention_mask, pixel_values, None,
                           scalar, scalar, max_new_tokens=max_new_tokens,
                           eos_ids=tuple(eos_ids), pad_id=pad_id)


def for_decoding(model: VLM, fuse: bool = True) -> VLM:
    """``model`` ready for many `generate` calls: when it decodes unrolled (``scan_layers`` off,
    as on CPU), its decoder layers as separate modules, each with its projections fused (one
    matmul for q, k and v, one for gate and up) unless ``fuse`` is off — as it must be when
    ``tensor`` splits the heads: a fused projection would mix the shards of q, k and v. A model
    with stacked layers has them copied out at every call instead: on CPU, a tenth of a 64-token
    answer. Returns a new model that shares the other weights; drop the old one to free its
    stacked layers."""
    ready = nnx.merge(*nnx.split(model))
    _unroll_layers(ready.language_model, fuse)
    return ready


def _unroll_layers(lm: nnx.Module, fuse: bool = True) -> None:
    """Replaces stacked decoder layers that decode unrolled by per-layer modules, their
    projections fused with ``fuse`` (in place; a no-op for scanned or already unrolled layers)."""
    if lm.cfg.scan_layers or isinstance(lm.layers, nnx.List):
        return
    modules = unstack_layers(lm.layers)
    if fuse:
        for layer in modules:
            layer.self_attn.fuse_projections()
            layer.mlp.fuse_projections()
    lm.layers = nnx.List(modules)


def left_pad(input_ids: np.ndarray, attention_mask: np.ndarray, pad_id: int,
             multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """Pads ``[B, T]`` on the left to the next multiple of ``multiple``."""
    extra = -input_ids.shape[1] % multiple
    return (np.pad(input_ids, ((0, 0), (extra, 0)), constant_values=pad_id),
            np.pad(attention_mask, ((0, 0), (extra, 0))))


def trim(tokens: np.ndarray, eos_ids: Sequence[int]) -> list[list[int]]:
    """Each row up to and including its first end-of-turn id (as transformers returns it)."""
    rows = []
    for row in np.asarray(tokens).tolist():
        ends = [i for i, t in enumerate(row) if t in eos_ids]
        rows.append(row[:ends[0] + 1] if ends else row)
    return rows


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "eos_ids", "pad_id"))
def _generate(graphdef, state, input_ids, attention_mask, pixel_values, rng, temperature, top_p,
              *, max_new_tokens: int, eos_ids: tuple[int, ...], pad_id: int):
    model = nnx.merge(graphdef, state)
    lm = model.language_model
    batch, length = input_ids.shape
    kv_valid = jnp.concatenate(
        [attention_mask, jnp.ones((batch, max_new_tokens), attention_mask.dtype)], axis=1)
    positions = positions_from_mask(attention_mask)
    # inside the call, unless `for_decoding` did it once (unfused: the heads may be split)
    _unroll_layers(lm, fuse=sharding.active_mesh() is None)
    cache = init_cache(lm.cfg, batch, length + max_new_tokens)
    if isinstance(lm.layers, nnx.List):  # unrolled: each step updates per-layer caches in place
        cache = unstack_cache(cache)
    hidden, cache = lm(model.embed(input_ids, pixel_values), positions, kv_valid, cache, 0)
    eos = jnp.asarray(eos_ids, jnp.int32)

    def choose(logits, step, finished):
        key = None if rng is None else jax.random.fold_in(rng, step)
        token = jnp.where(finished, pad_id, next_token(logits, key, temperature, top_p))
        return token, finished | jnp.isin(token, eos)

    token, finished = choose(lm.logits(hidden[:, -1]), 0, jnp.zeros((batch,), bool))
    out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(token)

    def cond(carry):
        step, _, _, finished, _ = carry
        return (step < max_new_tokens) & ~jnp.all(finished)

    def body(carry):
        step, token, cache, finished, out = carry
        # The token chosen at `step - 1` goes into slot `length + step - 1`.
        hidden, cache = lm(lm.embed(token[:, None]), positions[:, -1:] + step, kv_valid, cache,
                           length + step - 1)
        token, finished = choose(lm.logits(hidden[:, 0]), step, finished)
        return step + 1, token, cache, finished, out.at[:, step].set(token)

    *_, out = jax.lax.while_loop(cond, body, (1, token, cache, finished, out))
    return sharding.constrain(out, (None, None))  # on a mesh: every process gets all rows
