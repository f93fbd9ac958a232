"""Llama-3.x decoder (Llama-3.1, Latxa, SmolLM2, ...) computed exactly as transformers does."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from basque_vlm.model import sharding
from basque_vlm.model.attention import cached_attention, decoder_mask, self_attention
from basque_vlm.model.layers import Linear, RMSNorm, normal, param, run_layers, stack_layers

ROPE_TYPES = ("default", "linear", "llama3")
Cache = dict[str, jax.Array] | list[dict[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """A Llama-family decoder (Llama-3.1, Latxa, SmolLM2, ...): the architecture, as
    transformers' ``LlamaConfig`` gives it (`from_hf`), plus how to compute it (the last four
    fields, which a checkpoint does not fix)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # transformers' rope parameters besides theta
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    max_position_embeddings: int = 8192
    hidden_act: str = "silu"
    # How to compute, not what the weights are: overridable at load time.
    dtype: str = "float32"
    scan_layers: bool = True
    remat: str = "none"
    attention: str = "auto"  # basque_vlm.model.attention.IMPLEMENTATIONS

    def __hash__(self) -> int:
        # The rope_scaling dict is not hashable; jit hashes the config inside a static GraphDef.
        return hash(json.dumps(dataclasses.asdict(self), sort_keys=True))

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> LlamaConfig:
        """From a transformers ``LlamaConfig`` dict (v4 ``rope_scaling`` or v5 ``rope_parameters``)."""
        if hf.get("model_type", "llama") not in ("llama", "mistral"):
            raise ValueError(f"unsupported language model type {hf.get('model_type')!r}; "
                             "expected a Llama-family model (model_type 'llama')")
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ROPE_TYPES:
            raise ValueError(f"unsupported rope_type {rope_type!r}; supported: {ROPE_TYPES}")
        rope.pop("type", None)
        rope["rope_type"] = rope_type
        heads = hf["num_attention_heads"]
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            rope_scaling=None if rope_type == "default" else rope,
            tie_word_embeddings=hf.get("tie_word_embeddings", False),
            attention_bias=hf.get("attention_bias", False),
            mlp_bias=hf.get("mlp_bias", False),
            max_position_embeddings=hf.get("max_position_embeddings", 8192),
            hidden_act=hf.get("hidden_act", "silu"),
        )

    def to_hf(self) -> dict[str, Any]:
        rope = {"rope_type": "default", **(self.rope_scaling or {}), "rope_theta": self.rope_theta}
        return {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": rope,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "mlp_bias": self.mlp_bias,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": self.hidden_act,
        }


def rope_inv_freq(cfg: LlamaConfig) -> np.ndarray:
    """Inverse frequencies, float32, bit-for-bit as transformers' rope initialisers compute them."""
    exponents = np.arange(0, cfg.head_dim, 2, dtype=np.int64).astype(np.float32) / cfg.head_dim
    inv_freq = (1.0 / (np.float32(cfg.rope_theta) ** exponents)).astype(np.float32)
    scaling = cfg.rope_scaling or {"rope_type": "default"}
    if scaling["rope_type"] == "linear":
        return (inv_freq / np.float32(scaling["factor"])).astype(np.float32)
    if scaling["rope_type"] == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    return inv_freq


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """``x: [B, T, H, D]``, ``positions: [B, T]``; rotate-half convention of transformers' Llama."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
    x1, x2 = jnp.split(x, 2, axis=-1)
    return x * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


class Attention(nnx.Module):
    """Grouped-query self-attention with RoPE: ``[B, T, embed]`` → ``[B, T, embed]``.
    ``num_heads`` query heads share ``num_kv_heads`` key/value heads of ``head_dim``; the
    projections' kernels are ``[embed, heads, head_dim]`` (``q_proj``), ``[embed, kv_heads,
    head_dim]`` (``k_proj``, ``v_proj``) and ``[heads, head_dim, embed]`` (``o_proj``)."""

    def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
        d, h, kv, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        dt = jnp.dtype(cfg.dtype)
        bias = cfg.attention_bias
        self.q_proj = Linear((d,), (h, hd), ("embed", "heads", "head_dim"), use_bias=bias,
                             rngs=rngs, dtype=dt)
        self.k_proj = Linear((d,), (kv, hd), ("embed", "kv_heads", "head_dim"), use_bias=bias,
                             rngs=rngs, dtype=dt)
        self.v_proj = Linear((d,), (kv, hd), ("embed", "kv_heads", "head_dim"), use_bias=bias,
                             rngs=rngs, dtype=dt)
        self.o_proj = Linear((h, hd), (d,), ("heads", "head_dim", "embed"), use_bias=bias,
                             rngs=rngs, dtype=dt)
        self.qkv_proj = nnx.data(None)  # q_proj, k_proj and v_proj in one, after `fuse_projections`
        self.scale = hd ** -0.5
        self.implementation = cfg.attention
        self.num_heads = h

    def fuse_projections(self) -> None:
        """One matmul for the queries, keys and values (for decoding: see `for_decoding`)."""
        self.qkv_proj = Linear.joined([self.q_proj, self.k_proj, self.v_proj])
        self.q_proj = self.k_proj = self.v_proj = None

    def project(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        if self.qkv_proj is None:
            return self.q_proj(x), self.k_proj(x), self.v_proj(x)
        qkv = self.qkv_proj(x)
        kv_heads = (qkv.shape[-2] - self.num_heads) // 2
        return tuple(jnp.split(qkv, [self.num_heads, self.num_heads + kv_heads], axis=-2))

    def __call__(self, x, positions, inv_freq, kv_valid, cache, offset):
        """``cache`` is None (keys are ``x`` itself), ``{"k", "v": [B, KVH, S, D]}`` that gets
        this call's keys at slot ``offset`` (a scalar, or ``[B]``: each row its own slot, as
        in-flight batching decodes), or `Packed` (several batches' tokens side by side, each
        with its own cache); returns ``(out, updated cache or None)``."""
        q, k, v = self.project(x)
        # The names let a remat policy (layers.REMAT_POLICIES) keep these activations (and
        # `self_attention` names its own).
        q = checkpoint_name(apply_rope(q, positions, inv_freq), "query_proj")
        k = checkpoint_name(apply_rope(k, positions, inv_freq), "key_proj")
        v = checkpoint_name(v, "value_proj")
        if cache is None:
            out = self_attention(q, k, v, scale=self.scale, causal=True, kv_valid=kv_valid,
                                 implementation=self.implementation)
        elif isinstance(cache, Packed):
            out, cache = cache.attend(q, k, v, self.scale)
        else:
            out, cache = attend_cached(q, k, v, cache, kv_valid, offset, self.scale)
        return self.o_proj(out), cache


def attend_cached(q, k, v, cache, kv_valid, offset, scale):
    """Attention of ``q`` over ``cache`` once ``k`` and ``v`` are written into it from slot
    ``offset``: always the XLA reference (decoding)."""
    cache = {name: write_cache(cache[name], new, offset) for name, new in (("k", k), ("v", v))}
    mask = decoder_mask(kv_valid, jnp.asarray(offset)[..., None] + jnp.arange(q.shape[1]))
    out = cached_attention(q, cache["k"].astype(q.dtype), cache["v"].astype(q.dtype), mask,
                           scale)
    return out, cache


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Packed:
    """Several batches decoded in one pass, so that each weight is read once for all of them
    (in-flight batching: prompts prefilled in the same pass as a decode step of the other
    rows). Batch ``i`` has ``shapes[i] = (rows, length)``; the layers see the tokens of every
    batch side by side, ``[G, N / G]`` for ``G`` row shards (`pack`), so that each row shard
    keeps its own rows. Only attention tells the batches apart: batch ``i`` attends over
    ``caches[i]`` (``{"k", "v"}``, one layer's or stacked), written from ``offsets[i]``, keys
    masked by ``kv_valid[i]`` (all with a leading layer axis when the caches are stacked)."""

    caches: tuple
    kv_valid: tuple
    offsets: tuple
    shapes: tuple = dataclasses.field(metadata={"static": True})

    def attend(self, q, k, v, scale):
        outs, caches = [], []
        for i, (q_i, k_i, v_i) in enumerate(zip(*(unpack(a, self.shapes) for a in (q, k, v)))):
            out, cache = attend_cached(q_i, k_i, v_i, self.caches[i], self.kv_valid[i],
                                       self.offsets[i], scale)
            outs.append(out)
            caches.append(cache)
        return pack(outs, q.shape[0]), dataclasses.replace(self, caches=tuple(caches))


def unpack(packed: jax.Array, shapes: Sequence[tuple[int, int]]) -> list[jax.Array]:
    """`pack`'s inverse: ``[G, N / G, ...]`` → each batch's ``[rows, length, ...]``."""
    groups, out, start = packed.shape[0], [], 0
    for rows, length in shapes:
        width = rows // groups * length
        part = jax.lax.slice_in_dim(packed, start, start + width, axis=1)
        out.append(part.reshape(rows, length, *packed.shape[2:]))
        start += width
    return out


def pack(batches: Sequence[jax.Array], groups: int) -> jax.Array:
    """Batches ``[rows_i, length_i, ...]`` (rows a multiple of ``groups``) side by side as
    ``[groups, sum(rows_i * length_i) / groups, ...]``: row shard ``g`` holds the tokens of its
    own rows of every batch."""
    return jnp.concatenate([b.reshape(groups, -1, *b.shape[2:]) for b in batches], axis=1)


class MLP(nnx.Module):
    """Llama's gated MLP, ``down(silu(gate(x)) * up(x))``: ``[..., embed]`` → ``[..., embed]``
    through ``intermediate_size`` (logical axis ``mlp``)."""

    def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
        d, f, dt = cfg.hidden_size, cfg.intermediate_size, jnp.dtype(cfg.dtype)
        b = cfg.mlp_bias
        self.gate_proj = Linear((d,), (f,), ("embed", "mlp"), use_bias=b, rngs=rngs, dtype=dt)
        self.up_proj = Linear((d,), (f,), ("embed", "mlp"), use_bias=b, rngs=rngs, dtype=dt)
        self.down_proj = Linear((f,), (d,), ("mlp", "embed"), use_bias=b, rngs=rngs, dtype=dt)
        self.gate_up_proj = nnx.data(None)  # gate_proj and up_proj in one, after `fuse_projections`

    def fuse_projections(self) -> None:
        """One matmul for the gate and the up projection (for decoding: see `for_decoding`)."""
        self.gate_up_proj = Linear.joined([self.gate_proj, self.up_proj])
        self.gate_proj = self.up_proj = None

    def __call__(self, x):
        if self.gate_up_proj is None:
            gate, up = self.gate_proj(x), self.up_proj(x)
        else:
            gate, up = jnp.split(self.gate_up_proj(x), 2, axis=-1)
        return self.down_proj(jax.nn.silu(gate) * up)


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
        dt = jnp.dtype(cfg.dtype)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, rngs=rngs, dtype=dt)
        self.self_attn = Attention(cfg, rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, rngs=rngs,
                                                dtype=dt)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x, positions, inv_freq, kv_valid, cache, offset):
        attn, cache = self.self_attn(self.input_layernorm(x), positions, inv_freq, kv_valid, cache,
                                     offset)
        x = x + attn
        x = x + self.mlp(self.post_attention_layernorm(x))
        return sharding.constrain(x, ("batch", "length", "embed")), cache


class Llama(nnx.Module):
    """Decoder-only LM. Takes embeddings (so a VLM can splice in image features); ``embed`` and
    ``logits`` are the two ends."""

    def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        dt = jnp.dtype(cfg.dtype)
        self.embed_tokens = param(rngs, normal(0.02), (cfg.vocab_size, cfg.hidden_size),
                                  ("vocab", "embed"))
        self.layers = stack_layers(lambda r: DecoderLayer(cfg, r), cfg.num_layers, rngs)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, rngs=rngs, dtype=dt)
        self.lm_head = (None if cfg.tie_word_embeddings else
                        Linear((cfg.hidden_size,), (cfg.vocab_size,), ("embed", "vocab"),
                               use_bias=False, rngs=rngs, dtype=dt))

    def embed(self, input_ids: jax.Array) -> jax.Array:
        table = self.embed_tokens[...].astype(self.cfg.dtype)
        return sharding.constrain(table[input_ids], ("batch", "length", "embed"))

    def __call__(self, x: jax.Array, positions: jax.Array, kv_valid: jax.Array,
                 cache: Cache | None = None,
                 cache_index: jax.Array | int = 0) -> tuple[jax.Array, Cache | None]:
        """``x: [B, T, embed]`` → final-normed hidden states ``[B, T, embed]`` and the updated cache.

        ``positions: [B, T]`` are RoPE positions; ``kv_valid: [B, S]`` marks real key slots
        (``S = T`` without a cache, the cache length with one); ``cache`` receives this call's
        keys at slot ``cache_index``. Its form decides how the layers run: a stacked cache
        (`init_cache`) with ``lax.scan``, a list of per-layer caches unrolled; without a cache,
        ``cfg.scan_layers`` decides.
        """
        inv_freq = rope_inv_freq(self.cfg)

        def body(layer, h, layer_cache):
            return layer(h, positions, inv_freq, kv_valid, layer_cache, cache_index)

        scan = self.cfg.scan_layers if cache is None else not isinstance(cache, list)
        x, cache = run_layers(self.layers, x, cache, body, scan=scan, remat=self.cfg.remat)
        return self.norm(x), cache

    def output_embedding(self) -> jax.Array:
        """``[hidden, vocab]``, in the compute dtype: the logits are the hidden states times it
        (``lm_head``'s kernel, or the transposed input embedding when the two are tied)."""
        if self.lm_head is None:
            return self.embed_tokens[...].astype(self.cfg.dtype).T
        return self.lm_head.kernel[...].astype(self.cfg.dtype)

    def logits(self, hidden: jax.Array) -> jax.Array:
        n = math.prod(hidden.shape[:-1])
        out = hidden.astype(self.cfg.dtype).reshape(n, -1) @ self.output_embedding()
        return out.reshape(*hidden.shape[:-1], -1)


CACHE_AXES = ("batch", "kv_heads", "length", "head_dim")  # of one layer's keys or values


def write_cache(cache: jax.Array, new: jax.Array, offset: jax.Array | int) -> jax.Array:
    """``cache: [B, KVH, S, D]`` with ``new: [B, T, KVH, D]`` written from slot ``offset`` (a
    scalar, or ``[B]``: a slot per row)."""
    new = new.astype(cache.dtype).transpose(0, 2, 1, 3)
    if jnp.ndim(offset) == 0:
        cache = jax.lax.dynamic_update_slice_in_dim(cache, new, offset, 2)
    else:
        cache = jax.vmap(lambda c, n, o: jax.lax.dynamic_update_slice_in_dim(c, n, o, 1))(
            cache, new, offset)
    return sharding.constrain(cache, CACHE_AXES)


def init_cache(cfg: LlamaConfig, batch: int, length: int, dtype=None) -> dict[str, jax.Array]:
    """Zeros ``{"k", "v": [L, B, KVH, S, D]}``: rows over the mesh's ``data`` (and ``fsdp``), KV
    heads over ``tensor``, as the logical rules place them."""
    shape = (cfg.num_layers, batch, cfg.num_kv_heads, length, cfg.head_dim)
    dtype = dtype or cfg.dtype
    return {name: sharding.constrain(jnp.zeros(shape, dtype), ("layers", *CACHE_AXES))
            for name in ("k", "v")}


def unstack_cache(cache: dict[str, jax.Array]) -> list[dict[str, jax.Array]]:
    """Per-layer caches ``{"k", "v": [B, KVH, S, D]}``: a decode loop updates each in place,
    where slicing a stacked cache would copy it at every step."""
    return [{name: sharding.constrain(a[i], CACHE_AXES) for name, a in cache.items()}
            for i in range(cache["k"].shape[0])]
