"""Scaled dot-product attention with grouped KV heads: the XLA reference, a blocked causal
variant, and two fused kernels.

- ``xla``: `dot_product_attention`, the reference (any platform, any mask); `cached_attention`,
  its form for a KV cache (decoding).
- ``blocked``: causal self-attention a block of queries at a time, each block over the keys up to
  its last query (`blocked_attention`; XLA, any platform).
- ``splash``: Pallas splash attention on TPU (causal or full, padding as segment ids).
- ``cudnn``: cuDNN flash attention on GPU, through ``jax.nn.dot_product_attention`` (bf16/fp16).
- ``auto``: the platform's kernel (``blocked`` on CPU) where it applies, the reference elsewhere
  (`choose`).

The kernels and ``blocked`` run self-attention without a cache (training, full forwards).
Padding is handled as segments: real tokens attend to real tokens, pads to pads, so no query row
is fully masked (no NaN). Real rows agree with the reference; rows at pads (which carry no loss
and which no real token reads) differ.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name
from jax.sharding import PartitionSpec

from basque_vlm.model import sharding

IMPLEMENTATIONS = ("auto", "xla", "blocked", "cudnn", "splash")
KERNEL_PLATFORM = {"splash": "tpu", "cudnn": "gpu", "blocked": "cpu"}  # what `auto` picks where
PORTABLE = ("blocked",)  # pure XLA: may be named on any platform
CAUSAL_BLOCK = 64  # query rows per block of `blocked` (on CPU the fastest of 32-256 at 256-512)
SPLASH_BLOCKS = (512, 256, 128)  # the largest that divides the length is used
Q_NAMES = ("batch", "length", "heads", "head_dim")
KV_NAMES = ("batch", "length", "kv_heads", "head_dim")


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
                          scale: float, *, heads_first: bool = False) -> jax.Array:
    """``q: [B, T, H, D]``, ``k, v: [B, S, KVH, D]`` (``[B, KVH, S, D]`` with ``heads_first``, a
    KV cache's layout), ``mask: [B, T, S]`` (True = attend) or None.

    Scores and softmax in float32; a query with no key to attend to (a left pad) gets a uniform
    distribution rather than NaN, as in transformers.
    """
    b, t, h, d = q.shape
    kv_heads = k.shape[1 if heads_first else 2]
    keys = "bksd" if heads_first else "bskd"
    q = q.reshape(b, t, kv_heads, h // kv_heads, d)
    scores = jnp.einsum(f"btkgd,{keys}->bkgts", q, k, preferred_element_type=jnp.float32) * scale
    if mask is not None:
        scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum(f"bkgts,{keys}->btkgd", probs, v)
    return out.reshape(b, t, h, d)


def cached_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                     scale: float) -> jax.Array:
    """`dot_product_attention` over a KV cache: ``q: [B, T, H, D]``, ``k, v: [B, KVH, S, D]``
    (a cache's layout: each KV head's slots contiguous), ``mask: [B, T, S]``.

    One query per row on CPU (a decode step) is a multiply-and-sum over the slots: XLA's CPU
    matmuls of ``[H/KVH, D] × [D, S]`` per row and head read the cache at a third of the speed.
    """
    b, t, h, d = q.shape
    if t > 1 or target_platform() != "cpu":
        return dot_product_attention(q, k, v, mask, scale, heads_first=True)
    kv_heads = k.shape[1]
    q = q.reshape(b, kv_heads, h // kv_heads, d)
    scores = (q[:, :, :, None, :] * k[:, :, None]).sum(-1, dtype=jnp.float32)
    scores = jnp.where(mask[:, 0, None, None], scores * scale, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)  # [B, KVH, G, S]
    return (probs[..., None] * v[:, :, None]).sum(3).reshape(b, 1, h, d)


def decoder_mask(kv_valid: jax.Array, query_slots: jax.Array) -> jax.Array:
    """Causal + padding mask ``[B, T, S]``.

    ``kv_valid: [B, S]`` marks real (non-pad) key slots; ``query_slots: [T]`` (or ``[B, T]``, a
    row's own) is each query's slot in the key sequence (``offset + arange(T)`` when decoding
    into a KV cache).
    """
    key_slots = jnp.arange(kv_valid.shape[1])
    slots = query_slots if query_slots.ndim == 2 else query_slots[None]
    causal = key_slots[None, None, :] <= slots[:, :, None]
    return causal & kv_valid[:, None, :].astype(bool)


def target_platform() -> str:
    """Where the computation being traced will run: the active mesh's devices (which may be
    compile-only TPU devices, `basque_vlm.aot`), else JAX's default backend."""
    mesh = sharding.active_mesh()
    platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
    return "gpu" if platform in ("cuda", "rocm") else platform


def kernel_applies(kernel: str, *, length: int, kv_length: int, head_dim: int,
                   dtype: jnp.dtype, causal: bool) -> str | None:
    """None if ``kernel`` can compute this self-attention, else the reason it cannot."""
    if kv_length != length:
        return "queries and keys differ in length (a KV cache)"
    if kernel == "blocked":
        return None if causal else "blocked attention is causal only"
    if kernel == "splash":
        if length % SPLASH_BLOCKS[-1] or head_dim % 128:
            return (f"splash needs a length and a head_dim that are multiples of 128, got "
                    f"{length} and {head_dim}")
        return None
    if jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
        return f"cuDNN flash attention needs bfloat16 or float16, got {jnp.dtype(dtype)}"
    if head_dim > 128 or head_dim % 8 or length % 2:
        return (f"cuDNN flash attention needs a head_dim <= 128 that is a multiple of 8 and an "
                f"even length, got {head_dim} and {length}")
    return None


def choose(implementation: str, platform: str, **shape) -> str:
    """The implementation that computes an attention of ``shape`` (`kernel_applies`'s) on
    ``platform``.

    ``auto``: the platform's kernel (splash on TPU, cuDNN on GPU, blocked on CPU) where it
    applies, else ``xla``. A named kernel is used wherever it applies and the reference elsewhere
    (a KV cache, a vision tower's 577 tokens), but naming splash or cuDNN for another platform is
    an error.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {implementation!r}; choose one of "
                         f"{IMPLEMENTATIONS}")
    if implementation == "xla":
        return "xla"
    if implementation == "auto":
        kernel = next((n for n, p in KERNEL_PLATFORM.items() if p == platform), None)
        return kernel if kernel and kernel_applies(kernel, **shape) is None else "xla"
    if KERNEL_PLATFORM[implementation] != platform and implementation not in PORTABLE:
        raise ValueError(f"attention={implementation!r} runs on {KERNEL_PLATFORM[implementation]}"
                         f", but this computation targets {platform}; use 'auto' or 'xla'")
    return implementation if kernel_applies(implementation, **shape) is None else "xla"


def self_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float, causal: bool,
                   kv_valid: jax.Array | None, implementation: str = "auto") -> jax.Array:
    """Attention of a sequence over itself: ``q: [B, T, H, D]``, ``k, v: [B, T, KVH, D]``,
    ``kv_valid: [B, T]`` (1 = real token) or None; ``implementation`` as in `choose`."""
    kind = choose(implementation, target_platform(), length=q.shape[1], kv_length=k.shape[1],
                  head_dim=q.shape[3], dtype=q.dtype, causal=causal)
    if kind == "blocked":
        out = blocked_attention(q, k, v, scale=scale, kv_valid=kv_valid)
    elif kind == "splash":
        # Its residuals (output and logsumexp) are named "attention_residuals" in the kernel.
        return splash_attention(q, k, v, scale=scale, causal=causal, kv_valid=kv_valid)
    elif kind == "cudnn":
        out = fused_attention(q, k, v, scale=scale, causal=causal, kv_valid=kv_valid)
    else:
        if causal:
            valid = kv_valid if kv_valid is not None else jnp.ones(k.shape[:2], jnp.int32)
            mask = decoder_mask(valid, jnp.arange(q.shape[1]))
        else:
            mask = None if kv_valid is None else jnp.broadcast_to(
                kv_valid[:, None, :].astype(bool), (q.shape[0], q.shape[1], k.shape[1]))
        out = dot_product_attention(q, k, v, mask, scale)
    return checkpoint_name(out, "attention_out")  # for remat policies (layers.REMAT_POLICIES)


def blocked_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float,
                      kv_valid: jax.Array | None, block: int = CAUSAL_BLOCK) -> jax.Array:
    """Causal self-attention, ``block`` queries at a time, each block scoring only the keys up to
    its last query: for ``n`` blocks, ``(n + 1) / 2n`` of the scores the reference computes (and
    masks). Heads go first, so both products are plain batched matmuls over (batch, KV head):
    on CPU, forward + backward take 0.5-0.6× the reference's time at 256-512 tokens, on par
    with PyTorch's flash kernel. The padding is segments, as in the kernels."""
    b, t, h, d = q.shape
    kv_heads = k.shape[2]
    groups = h // kv_heads
    q = q.transpose(0, 2, 1, 3).reshape(b, kv_heads, groups, t, d)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    segments = jnp.ones((b, t), bool) if kv_valid is None else kv_valid.astype(bool)
    slots = jnp.arange(t)
    outs = []
    for start in range(0, t, block):
        end = min(start + block, t)
        rows = end - start
        q_block = q[:, :, :, start:end].reshape(b, kv_heads, groups * rows, d)
        scores = jnp.einsum("bkqd,bksd->bkqs", q_block, k[:, :, :end],
                            preferred_element_type=jnp.float32) * scale
        mask = ((slots[None, :end] <= slots[start:end, None])[None]
                & (segments[:, start:end, None] == segments[:, None, :end]))
        scores = jnp.where(mask[:, None, None], scores.reshape(b, kv_heads, groups, rows, end),
                           jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("bkqs,bksd->bkqd", probs.reshape(b, kv_heads, groups * rows, end),
                         v[:, :, :end])
        outs.append(out.reshape(b, kv_heads, groups, rows, d))
    return jnp.concatenate(outs, axis=3).reshape(b, h, t, d).transpose(0, 2, 1, 3)


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float, causal: bool,
                    kv_valid: jax.Array | None, implementation: str = "cudnn") -> jax.Array:
    """``jax.nn.dot_product_attention`` with the padding as segments: cuDNN on GPU; any of its
    implementations (``xla`` checks the masking anywhere)."""
    mask = None
    if kv_valid is not None:
        valid = kv_valid.astype(bool)
        mask = (valid[:, :, None] == valid[:, None, :])[:, None]  # [B, 1, T, S]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=causal,
                                        implementation=implementation)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float, causal: bool,
                     kv_valid: jax.Array | None, interpret: bool = False) -> jax.Array:
    """Pallas splash attention; under an active mesh, one kernel per shard (``shard_map`` over
    the batch and head axes: a Pallas call is not partitioned by XLA). ``interpret`` runs the
    kernel in the Pallas interpreter (any platform; slow)."""
    segments = (jnp.ones(q.shape[:2], jnp.int32) if kv_valid is None
                else kv_valid.astype(jnp.int32))
    body = functools.partial(_splash_local, scale=scale, causal=causal, interpret=interpret)
    mesh = sharding.active_mesh()
    if mesh is None:
        return body(q, k, v, segments)
    q_spec, kv_spec = (sharding.logical_to_spec(n, mesh) for n in (Q_NAMES, KV_NAMES))
    seg_spec = PartitionSpec(*q_spec[:2])
    return jax.shard_map(body, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, seg_spec),
                         out_specs=q_spec, check_vma=False)(q, k, v, segments)


def _splash_local(q, k, v, segments, *, scale: float, causal: bool, interpret: bool):
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    t, heads = q.shape[1], q.shape[2]
    block = next(n for n in SPLASH_BLOCKS if t % n == 0)
    head_mask = splash.CausalMask((t, t)) if causal else splash.FullMask((t, t))
    blocks = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                               block_q_dkv=block, block_kv_dkv=block,
                               block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    kernel = splash.make_splash_mha(splash.MultiHeadMask([head_mask] * heads), block_sizes=blocks,
                                    head_shards=1, q_seq_shards=1, interpret=interpret,
                                    residual_checkpoint_name="attention_residuals")
    # The kernel takes [heads, length, head_dim] per sequence and does not scale the scores.
    q = (q * jnp.asarray(scale, q.dtype)).swapaxes(1, 2)
    k, v = k.swapaxes(1, 2), v.swapaxes(1, 2)

    def one(q, k, v, seg):
        return kernel(q, k, v, segment_ids=splash.SegmentIds(q=seg, kv=seg))

    return jax.vmap(one)(q, k, v, segments).swapaxes(1, 2)

