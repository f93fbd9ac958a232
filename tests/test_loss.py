"""The chunked cross-entropy equals the whole-batch one, in value and in gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from basque_vlm.training.loss import chunked_cross_entropy_sum, cross_entropy_sum


def problem(rows=3, length=10, width=16, vocab=50, seed=0):
    rng = np.random.default_rng(seed)
    hidden = jnp.asarray(rng.normal(size=(rows, length, width)), jnp.float32)
    weight = jnp.asarray(rng.normal(size=(width, vocab)) * 0.3, jnp.float32)
    targets = jnp.asarray(rng.integers(0, vocab, (rows, length)), jnp.int32)
    mask = jnp.asarray(rng.random((rows, length)) < 0.6, jnp.float32)
    return hidden, weight, targets, mask


def whole(hidden, weight, targets, mask):
    return cross_entropy_sum(hidden @ weight, targets, mask)


def test_cross_entropy_is_the_negative_log_likelihood():
    logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))
    total = cross_entropy_sum(logits, jnp.array([[0, 2]]), jnp.array([[1.0, 0.0]]))
    np.testing.assert_allclose(total, -np.log(0.5), rtol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 5, 10, 0, 64])  # 10 positions: padded, exact, whole
def test_chunks_give_the_same_loss_and_gradients(chunk):
    hidden, weight, targets, mask = problem()
    chunked = lambda h, w: chunked_cross_entropy_sum(h, w, targets, mask, chunk)  # noqa: E731
    reference = lambda h, w: whole(h, w, targets, mask)  # noqa: E731
    value, grads = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1)))(hidden, weight)
    expected, expected_grads = jax.value_and_grad(reference, argnums=(0, 1))(hidden, weight)
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    for g, e in zip(grads, expected_grads):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_chunks_hold_only_a_chunk_of_logits():
    hidden, weight, targets, mask = problem(rows=4, length=512, width=8, vocab=4096)
    grad = jax.jit(jax.grad(lambda h, w: chunked_cross_entropy_sum(h, w, targets, mask, 64),
                            argnums=(0, 1)))
    whole_grad = jax.jit(jax.grad(lambda h, w: whole(h, w, targets, mask), argnums=(0, 1)))
    logits_bytes, chunk_bytes = 4 * 512 * 4096 * 4, 4 * 64 * 4096 * 4
    chunked = grad.lower(hidden, weight).compile().memory_analysis().temp_size_in_bytes
    full = whole_grad.lower(hidden, weight).compile().memory_analysis().temp_size_in_bytes
    assert full >= logits_bytes and chunked <= 3 * chunk_bytes, (full, chunked)
