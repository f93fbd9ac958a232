"""Splitting a model into its graph, trainable parts and frozen parts; the initial train state."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from basque_vlm.training.step import Params, TrainState


def split_trainable(model: nnx.Module, parts: Sequence[str]) -> tuple[nnx.GraphDef, Params,
                                                                       Params]:
    """``(graphdef, trainable, frozen)``: parameter trees keyed by part, as pure dicts."""
    graphdef, state = nnx.split(model)
    params = state.to_pure_dict()
    trainable = {p: params[p] for p in parts}
    frozen = {p: v for p, v in params.items() if p not in parts}
    return graphdef, trainable, frozen


def init_train_state(trainable: Params, tx: optax.GradientTransformation) -> TrainState:
    """Parameters as float32 master weights, fresh optimizer state, step 0."""
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), trainable)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
