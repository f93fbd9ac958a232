"""The train step: it learns, frozen parts stay put, and the mesh or micro-batching change nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from test_sharding import tiny_config
from basque_vlm.model import sharding
from basque_vlm.model.vlm import VLM
from basque_vlm.training.optim import make_optimizer
from basque_vlm.training.state import init_train_state, split_trainable
from basque_vlm.training.step import make_train_step


def fixed_batch(cfg, rows=8, length=24, seed=0):
    rng = np.random.default_rng(seed)
    span = [cfg.image_token_id] * cfg.tokens_per_image
    ids = rng.integers(1, 100, (rows, length)).astype(np.int32)
    ids[:, 2:2 + len(span)] = span
    attention = np.ones_like(ids)
    attention[::2, -3:] = 0                       # some right padding
    loss_mask = np.zeros_like(ids)
    loss_mask[:, 2 + len(span):-4] = 1
    targets = np.roll(ids, -1, axis=1)
    pixels = rng.normal(size=(rows, 3, 28, 28)).astype(np.float32)
    return {"input_ids": ids, "targets": targets, "loss_mask": loss_mask * attention,
            "attention_mask": attention, "pixel_values": pixels}


def run(steps, lrs, *, mesh=None, microbatches=1, logits_chunk=0, seed=0):
    cfg = tiny_config()
    model = VLM(cfg, nnx.Rngs(seed))
    tx, schedules = make_optimizer(lrs, num_steps=100, warmup_ratio=0.0)
    graphdef, trainable, frozen = split_trainable(model, [p for p in lrs if lrs[p]])
    initial = jax.tree.map(np.array, trainable)  # the step donates the state's buffers
    state = init_train_state(trainable, tx)
    step = make_train_step(graphdef, tx, microbatches=microbatches, logits_chunk=logits_chunk,
                           schedules=schedules)
    batch = fixed_batch(cfg)
    if mesh is not None:
        shardings = sharding.param_shardings(nnx.state(model), mesh)
        state = state.replace(params=jax.device_put(
            state.params, {p: shardings[p] for p in state.params}))
        frozen = jax.device_put(frozen, {p: shardings[p] for p in frozen})
        batch = jax.device_put(batch, sharding.batch_sharding(mesh))
    losses = []
    jitted = jax.jit(step, donate_argnums=0)
    for _ in range(steps):
        if mesh is not None:
            with sharding.use_mesh(mesh):
                state, metrics = jitted(state, frozen, batch)
        else:
            state, metrics = jitted(state, frozen, batch)
        losses.append(float(metrics["loss"]))
    return losses, state, frozen, initial


def test_overfits_a_fixed_batch_and_keeps_frozen_parts():
    lrs = {"connector": 3e-3, "language_model": 3e-3, "vision_tower": None}
    losses, state, frozen, _ = run(40, lrs)
    assert losses[-1] < 0.5 * losses[0], losses
    before = split_trainable(VLM(tiny_config(), nnx.Rngs(0)), ["connector"])[2]["vision_tower"]
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(frozen["vision_tower"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert set(state.params) == {"connector", "language_model"}


def test_align_stage_trains_only_the_connector():
    losses, state, frozen, initial = run(20, {"connector": 1e-2})
    assert losses[-1] < losses[0]
    assert set(frozen) == {"language_model", "vision_tower"}
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), initial["connector"],
                           state.params["connector"])
    assert all(jax.tree.leaves(changed))


def test_microbatches_match_one_batch():
    lrs = {"connector": 1e-3, "language_model": 1e-3, "vision_tower": 1e-4}
    one, *_ = run(3, lrs)
    four, *_ = run(3, lrs, microbatches=4)
    np.testing.assert_allclose(four, one, rtol=1e-5)


def test_chunked_logits_match_whole():
    lrs = {"connector": 1e-3, "language_model": 1e-3, "vision_tower": 1e-4}
    whole, *_ = run(3, lrs)
    chunked, *_ = run(3, lrs, logits_chunk=7)  # 24 positions: chunks of 7, the last padded
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)


def test_eight_devices_match_one():
    if jax.device_count() < 8:
        pytest.skip("needs 8 (simulated) devices")
    lrs = {"connector": 1e-3, "language_model": 1e-3, "vision_tower": 1e-4}
    single, *_ = run(3, lrs)
    mesh = sharding.make_mesh(2, 2, 2)
    sharded, *_ = run(3, lrs, mesh=mesh)
    np.testing.assert_allclose(sharded, single, rtol=1e-3)
    np.testing.assert_allclose(sharded, single, rtol=1e-5)  # in practice far tighter


@pytest.mark.slow  # the two tests above, combined
def test_chunked_logits_on_eight_devices_match_one():
    if jax.device_count() < 8:
        pytest.skip("needs 8 (simulated) devices")
    lrs = {"connector": 1e-3, "language_model": 1e-3, "vision_tower": 1e-4}
    single, *_ = run(3, lrs)
    chunked, *_ = run(3, lrs, mesh=sharding.make_mesh(2, 2, 2), logits_chunk=8)
    np.testing.assert_allclose(chunked, single, rtol=1e-5)
