"""Splitting a model into its graph, trainable parts and frozen parts; the initial train state."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Sharding

from basque_vlm.model.vlm import Params
from basque_vlm.training.step import TrainState


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


def state_shardings(abstract_state: TrainState, params: Params, replicated: Sharding
                    ) -> TrainState:
    """Shardings for a ``TrainState``: parameters as ``params`` (their shardings); optimizer
    leaves that mirror a parameter (Adam's moments) like it, the rest (counts) ``replicated``.

    A moment is recognised by its tree path ending with the parameter's path, and its shape.
    """
    flat_params = jax.tree_util.tree_flatten_with_path(abstract_state.params)[0]
    by_path = {_keys(path): (sharding, leaf.shape) for (path, leaf), sharding in zip(
        flat_params, jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, Sharding)))}

    def like_param(path, leaf):
        keys = _keys(path)
        for start in range(len(keys)):
            sharding, shape = by_path.get(keys[start:], (None, None))
            if sharding is not None and shape == leaf.shape:
                return sharding
        return replicated

    opt = jax.tree_util.tree_map_with_path(like_param, abstract_state.opt_state)
    return TrainState(step=replicated, params=params, opt_state=opt)


def _keys(path: tuple) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)
