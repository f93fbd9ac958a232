"""Remat policies by name (``LlamaConfig.remat``): each gives the same gradients, and they save
what they say — nothing but layer inputs (``full``), the decoder's named attention activations
(``save_qkv_attention``), every matmul (``dots_saveable``), everything (``none``)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax._src.ad_checkpoint import saved_residuals

from basque_vlm.model.llama import Llama, LlamaConfig

BASE = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                   num_heads=4, num_kv_heads=2, head_dim=8)
POLICIES = ("full", "save_qkv_attention", "dots_saveable", "none")  # least saved first
NAMES = ("attention_out", "key_proj", "query_proj", "value_proj")


def loss_and_params(remat: str, scan: bool):
    graphdef, state = nnx.split(Llama(dataclasses.replace(BASE, remat=remat, scan_layers=scan),
                                      nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 8, BASE.hidden_size)), jnp.float32)
    positions = jnp.tile(jnp.arange(8), (2, 1))
    valid = jnp.asarray([[1] * 8, [0, 0] + [1] * 6], jnp.int32)

    def loss(params):
        hidden, _ = nnx.merge(graphdef, params)(x, positions, valid)
        return jnp.sum(hidden ** 2)

    return loss, nnx.to_pure_dict(state)


def saved_bytes(remat: str) -> int:
    loss, params = loss_and_params(remat, scan=True)
    return sum(aval.size * aval.dtype.itemsize for aval, _ in saved_residuals(loss, params))


def test_policies_give_the_same_gradients():
    loss, params = loss_and_params("none", scan=True)
    expected = jax.jit(jax.grad(loss))(params)
    for remat in POLICIES[:-1]:
        loss, params = loss_and_params(remat, scan=True)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     jax.jit(jax.grad(loss))(params), expected)


def test_policies_save_less_to_more():
    sizes = [saved_bytes(p) for p in POLICIES]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), dict(zip(POLICIES, sizes))


@pytest.mark.parametrize("remat,names", [("save_qkv_attention", NAMES), ("full", ())])
def test_named_policy_saves_the_named_activations(remat, names):
    loss, params = loss_and_params(remat, scan=False)  # unrolled: residuals keep their names
    saved = {d.split("'")[1] for _, d in saved_residuals(loss, params) if d.startswith("named")}
    assert saved == set(names)


def test_unknown_policy_is_refused():
    loss, params = loss_and_params("save_everything", scan=True)
    with pytest.raises(ValueError, match="unknown remat policy"):
        loss(params)
