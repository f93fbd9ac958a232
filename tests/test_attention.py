"""The attention kernels against the XLA reference: splash (the real Pallas kernel, interpreted on
CPU, and compiled for a TPU slice), the blocked causal attention, the cuDNN wrapper's masking
(through jax.nn's XLA path), and which implementation ``auto`` picks where."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import libtpu  # noqa: F401  (make setup installs it: a missing libtpu fails, it is not skipped)
import numpy as np
import pytest
from jax.sharding import NamedSharding

from basque_vlm.model import attention, sharding
from basque_vlm.tpu import topologies

B, T, H, KVH, D = 2, 256, 4, 2, 128
SCALE = D ** -0.5


def inputs(seed: int = 0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.normal(size=(B, T, n, D)), dtype) for n in (H, KVH, KVH))
    valid = np.ones((B, T), np.int32)
    valid[0, :37] = 0       # left padding
    valid[1, 200:] = 0      # right padding
    return q, k, v, jnp.asarray(valid)


def reference(q, k, v, valid, causal):
    return attention.self_attention(q, k, v, scale=SCALE, causal=causal, kv_valid=valid,
                                    implementation="xla")


def real_rows_loss(fn, valid):
    """A loss over the real tokens only (pad rows differ by design: they attend to pads)."""
    keep = np.asarray(valid, bool)[:, :, None, None]
    return lambda q, k, v: jnp.sum(jnp.where(keep, fn(q, k, v), 0.0) ** 2)


@pytest.mark.parametrize("causal", [True, False])
def test_splash_matches_reference_on_real_tokens(causal):
    q, k, v, valid = inputs()
    ref = lambda q, k, v: reference(q, k, v, valid, causal)  # noqa: E731
    splash = lambda q, k, v: attention.splash_attention(  # noqa: E731
        q, k, v, scale=SCALE, causal=causal, kv_valid=valid, interpret=True)
    real = np.asarray(valid, bool)
    np.testing.assert_allclose(np.asarray(splash(q, k, v))[real], np.asarray(ref(q, k, v))[real],
                               atol=2e-5, rtol=1e-5)
    grads = jax.grad(real_rows_loss(splash, valid), argnums=(0, 1, 2))(q, k, v)
    ref_grads = jax.grad(real_rows_loss(ref, valid), argnums=(0, 1, 2))(q, k, v)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=2e-4, rtol=1e-4)


# Whole blocks and a partial last block run with the slow tests; (100, 32) has both.
@pytest.mark.parametrize("length,block", [pytest.param(256, 64, marks=pytest.mark.slow),
                                          pytest.param(100, 64, marks=pytest.mark.slow),
                                          (100, 32), (40, 64)])
def test_blocked_matches_reference_on_real_tokens(length, block):
    """Blocks of queries over the keys up to their end, the last block partial or the only one."""
    q, k, v, valid = (a[:, :length] for a in inputs(2))
    ref = lambda q, k, v: reference(q, k, v, valid, True)  # noqa: E731
    blocked = lambda q, k, v: attention.blocked_attention(  # noqa: E731
        q, k, v, scale=SCALE, kv_valid=valid, block=block)
    out = np.asarray(blocked(q, k, v))
    real = np.asarray(valid, bool)
    np.testing.assert_allclose(out[real], np.asarray(ref(q, k, v))[real], atol=2e-6, rtol=1e-5)
    assert np.isfinite(out).all()  # left pads attend to pads: never a NaN
    grads = jax.grad(real_rows_loss(blocked, valid), argnums=(0, 1, 2))(q, k, v)
    ref_grads = jax.grad(real_rows_loss(ref, valid), argnums=(0, 1, 2))(q, k, v)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_fused_wrapper_masks_as_the_reference(causal):
    """The cuDNN path's masking and layout, run through jax.nn's XLA implementation."""
    q, k, v, valid = inputs(1)
    ours = attention.fused_attention(q, k, v, scale=SCALE, causal=causal, kv_valid=valid,
                                     implementation="xla")
    real = np.asarray(valid, bool)
    np.testing.assert_allclose(np.asarray(ours)[real],
                               np.asarray(reference(q, k, v, valid, causal))[real],
                               atol=1e-5, rtol=1e-5)
    assert np.isfinite(np.asarray(ours)).all()  # pad rows attend to pads: never a NaN


def shape(length=2048, kv_length=None, head_dim=128, dtype=jnp.bfloat16, causal=True):
    return dict(length=length, kv_length=kv_length or length, head_dim=head_dim, dtype=dtype,
                causal=causal)


@pytest.mark.parametrize("setting,platform,kw,expected", [
    ("auto", "cpu", {}, "blocked"),
    ("auto", "cpu", {"causal": False}, "xla"),                     # a vision tower
    ("auto", "cpu", {"kv_length": 4096}, "xla"),
    ("blocked", "tpu", {}, "blocked"),                              # pure XLA: anywhere
    ("blocked", "gpu", {"causal": False}, "xla"),
    ("auto", "tpu", {}, "splash"),
    ("auto", "tpu", {"length": 577, "head_dim": 64}, "xla"),       # CLIP-L/336's patches
    ("auto", "tpu", {"kv_length": 4096}, "xla"),                     # a KV cache
    ("auto", "gpu", {}, "cudnn"),
    ("auto", "gpu", {"dtype": jnp.float32}, "xla"),
    ("auto", "gpu", {"head_dim": 256}, "xla"),
    ("splash", "tpu", {"length": 640}, "splash"),
    ("splash", "tpu", {"length": 577}, "xla"),
    ("cudnn", "gpu", {"length": 577, "head_dim": 64}, "xla"),        # odd length
    ("xla", "tpu", {}, "xla"),
])
def test_choose(setting, platform, kw, expected):
    assert attention.choose(setting, platform, **shape(**kw)) == expected


@pytest.mark.parametrize("setting,platform", [("splash", "cpu"), ("cudnn", "tpu"),
                                              ("flash", "tpu")])
def test_choose_refuses_a_kernel_of_another_platform(setting, platform):
    with pytest.raises(ValueError, match="attention|implementation"):
        attention.choose(setting, platform, **shape())


def test_splash_compiles_for_a_tpu_slice_sharded():
    """``auto`` under a mesh of v5e-8's compile-only devices lowers to the Pallas kernel, one per
    (batch, heads) shard, and the forward and backward passes compile."""
    mesh = sharding.make_mesh(2, 2, 2, topologies.devices(topologies.parse("v5e-8")))
    b, t, h, kvh = 8, 1024, 8, 4

    def spec(shape, names, dtype=jnp.bfloat16):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(
            mesh, sharding.logical_to_spec(names, mesh)))

    def grads(q, k, v, valid):
        def loss(q, k, v):
            out = attention.self_attention(q, k, v, scale=SCALE, causal=True, kv_valid=valid)
            return jnp.sum(out.astype(jnp.float32))
        return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

    args = (spec((b, t, h, D), attention.Q_NAMES), spec((b, t, kvh, D), attention.KV_NAMES),
            spec((b, t, kvh, D), attention.KV_NAMES), spec((b, t), ("batch", "length"),
                                                            jnp.int32))
    with sharding.use_mesh(mesh):
        lowered = jax.jit(grads).lower(*args)
    text = lowered.as_text()
    assert "tpu_custom_call" in text and "splash" in text
    memory = lowered.compile().memory_analysis()
    assert memory.argument_size_in_bytes > 0


def test_compute_section_selects_the_implementation():
    from data_helpers import REPO, demo_config

    from basque_vlm.training import setup

    config = demo_config(REPO)
    config.compute.attention = "xla"
    stored, cfg = setup.model_configs(config)
    assert (stored.text.attention, cfg.text.attention, cfg.vision.attention) == ("auto", "xla",
                                                                                 "xla")
