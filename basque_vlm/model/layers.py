"""Layers shared by the decoder and the vision towers.

Every parameter carries logical axis names (``out_sharding`` metadata); `model/sharding.py` maps them
to mesh axes. Projections compute as 2-D ``[tokens, in] @ [in, out]`` matmuls: on CPU, XLA lowers the
backward pass of 3-D ``[B, T, d] @ W`` products through slow transposes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Names = tuple[str | None, ...]
Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]


def param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], names: Names,
          dtype: jnp.dtype = jnp.float32) -> nnx.Param:
    assert len(shape) == len(names), (shape, names)
    return nnx.Param(init(rngs.params(), tuple(shape), dtype), out_sharding=names,
                     eager_sharding=False)


def normal(stddev: float) -> Initializer:
    return lambda key, shape, dtype: stddev * jax.random.normal(key, shape, dtype)


def ones(key, shape, dtype):
    return jnp.ones(shape, dtype)


def zeros(key, shape, dtype):
    return jnp.zeros(shape, dtype)


class Linear(nnx.Module):
    """``y = x @ kernel + bias`` with ``kernel: [*in_shape, *out_shape]``.

    ``x`` ends in ``in_shape``; ``y`` ends in ``out_shape`` (e.g. ``(heads, head_dim)`` for a query
    projection), so attention never reshapes across named axes.
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], names: Names, *,
                 use_bias: bool, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32,
                 init_std: float = 0.02):
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.dtype = dtype
        self.kernel = param(rngs, normal(init_std), self.in_shape + self.out_shape, names)
        self.bias = (param(rngs, zeros, self.out_shape, names[len(self.in_shape):])
                     if use_bias else None)

    @staticmethod
    def joined(parts: Sequence[Linear]) -> Linear:
        """One projection computing ``parts`` (same inputs) at once, their outputs side by side on
        the first output axis: one weight read instead of several when decoding."""
        first = parts[0]
        axis = len(first.in_shape)
        kernel = jnp.concatenate([p.kernel[...] for p in parts], axis=axis)
        joined = nnx.clone(first)  # its settings and axis names, with the joined weights
        joined.out_shape = kernel.shape[axis:]
        joined.kernel.set_value(kernel)
        if first.bias is not None:
            joined.bias.set_value(jnp.concatenate([p.bias[...] for p in parts]))
        return joined

    def __call__(self, x: jax.Array) -> jax.Array:
        n_in, n_out = math.prod(self.in_shape), math.prod(self.out_shape)
        lead = x.shape[:x.ndim - len(self.in_shape)]
        kernel = self.kernel[...].astype(self.dtype).reshape(n_in, n_out)
        y = x.astype(self.dtype).reshape(-1, n_in) @ kernel
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype).reshape(n_out)
        return y.reshape(*lead, *self.out_shape)


class RMSNorm(nnx.Module):
    """Llama RMSNorm, computed in float32 and cast back before the scale (as transformers does)."""

    def __init__(self, dim: int, eps: float, *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32):
        self.eps, self.dtype = eps, dtype
        self.weight = param(rngs, ones, (dim,), ("embed",))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.weight[...].astype(self.dtype) * normed.astype(self.dtype)


class LayerNorm(nnx.Module):
    """LayerNorm with scale and bias, statistics in float32."""

    def __init__(self, dim: int, eps: float, *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32):
        self.eps, self.dtype = eps, dtype
        self.weight = param(rngs, ones, (dim,), ("embed",))
        self.bias = param(rngs, zeros, (dim,), ("embed",))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        y = y * self.weight[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(self.dtype)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "linear": lambda x: x,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole layer in the backward pass
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    # The decoder's named activations (llama.Attention, attention.self_attention): the backward
    # pass skips re-running the attention projections and the attention, and recomputes the MLP.
    "save_qkv_attention": jax.checkpoint_policies.save_only_these_names(
        "query_proj", "key_proj", "value_proj", "attention_out", "attention_residuals"),
}


def stack_layers(make: Callable[[nnx.Rngs], nnx.Module], num_layers: int,
                 rngs: nnx.Rngs) -> nnx.Module:
    """One module whose parameters have a leading ``layers`` axis of size ``num_layers``."""

    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def build(rngs: nnx.Rngs) -> nnx.Module:
        return make(rngs)

    return build(rngs)


def unstack_layers(layers: nnx.Module) -> list[nnx.Module]:
    """Per-layer modules sliced from stacked ``layers``.

    Inside a decode loop, slicing stacked weights copies each layer's weights at every step;
    slicing once before the loop lets each step read them in place. ``jnp.split``, not indexing:
    the gradient of a split is one concatenation, where the gradient of ``a[i]`` pads each
    layer's gradient to the whole stack and adds the stacks up (a tenth of a CPU training step).
    """
    graphdef, state = nnx.split(layers)
    leaves, treedef = jax.tree.flatten(state)
    n = leaves[0].shape[0]
    pieces = [[jnp.squeeze(p, 0) for p in jnp.split(a, n)] for a in leaves]
    return [nnx.merge(graphdef, jax.tree.unflatten(treedef, [p[i] for p in pieces]))
            for i in range(n)]


def run_layers(layers: nnx.Module | Sequence[nnx.Module], x: jax.Array, xs, body: Callable, *,
               scan: bool, remat: str = "none", num_layers: int | None = None):
    """Applies ``layers`` in order: ``x, y_i = body(layer_i, x, xs_i)``.

    ``layers`` are stacked (a leading ``layers`` axis) or, unrolled only, a list of per-layer
    modules (`unstack_layers`). ``xs`` is None, a pytree with a leading layer axis (stacked ``ys``
    come back) or a list of per-layer pytrees (a list comes back), e.g. a KV cache. ``num_layers``
    runs only the first layers (vision feature layers). ``scan`` keeps compile time flat on TPU;
    the unrolled loop is faster on CPU.
    """
    if remat != "none" and remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat!r}; known: none, {sorted(REMAT_POLICIES)}")

    def make_step(graphdef):
        def step(carry, inputs):
            layer_state, layer_xs = inputs
            return body(nnx.merge(graphdef, layer_state), carry, layer_xs)

        if remat == "none":
            return step
        return jax.checkpoint(step, policy=REMAT_POLICIES[remat], prevent_cse=not scan)

    if scan:
        graphdef, state = nnx.split(layers)
        if num_layers is not None:
            state = jax.tree.map(lambda a: a[:num_layers], state)
            if xs is not None:
                xs = jax.tree.map(lambda a: a[:num_layers], xs)
        return jax.lax.scan(make_step(graphdef), x, (state, xs))

    modules = list(layers) if isinstance(layers, Sequence) else unstack_layers(layers)
    modules = modules[:num_layers]
    per_layer = isinstance(xs, list)
    if not per_layer:
        xs = [None if xs is None else jax.tree.map(lambda a: a[i], xs)
              for i in range(len(modules))]
    ys = []
    for module, layer_xs in zip(modules, xs):
        graphdef, state = nnx.split(module)
        x, y = make_step(graphdef)(x, (state, layer_xs))
        ys.append(y)
    if per_layer or ys[0] is None:
        return x, ys if per_layer else None
    return x, jax.tree.map(lambda *a: jnp.stack(a), *ys)
