"""One optimizer step: next-token cross-entropy over supervised tokens, micro-batches, AdamW.

The loss is the sum of per-token cross-entropies (float32) over supervised tokens divided by their
count in the whole global batch — not per device or per micro-batch — so gradient accumulation and
the mesh shape do not change it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from basque_vlm.model.vlm import Params
from basque_vlm.training.loss import chunked_cross_entropy_sum

Batch = Mapping[str, jax.Array]
MODEL_INPUTS = ("input_ids", "targets", "loss_mask", "attention_mask", "pixel_values")


@flax.struct.dataclass
class TrainState:
    """What a training step updates: the step count (a scalar int32 array), the float32 master
    weights of the trained parts and their AdamW state, all sharded on the training mesh."""

    step: jax.Array
    params: Params          # the trainable parts only: {part: parameter tree}
    opt_state: optax.OptState


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, *,
                    microbatches: int = 1, images_per_row: int = 1, logits_chunk: int = 0,
                    schedules: Mapping[str, optax.Schedule] | None = None
                    ) -> Callable[[TrainState, Params, Batch], tuple[TrainState, dict]]:
    """``step(state, frozen_params, batch) -> (state, metrics)``, not yet jitted.

    ``batch`` follows the pipeline's contract (``basque_vlm.data.pipeline``): ``[B, L]`` token
    arrays and ``pixel_values [B * images_per_row, C, H, W]``; ``B`` divides by ``microbatches``.
    ``logits_chunk`` > 0 computes the loss that many positions of each row at a time
    (``loss.chunked_cross_entropy_sum``).
    """

    def loss_sum(trainable: Params, frozen: Params, mb: Batch) -> jax.Array:
        model = nnx.merge(graphdef, {**trainable, **frozen})
        hidden = model.hidden_states(mb["input_ids"], mb.get("pixel_values"),
                                     mb["attention_mask"], images_per_row=images_per_row)
        return chunked_cross_entropy_sum(hidden, model.language_model.output_embedding(),
                                         mb["targets"], mb["loss_mask"], logits_chunk)

    grad_fn = jax.value_and_grad(loss_sum)

    def step(state: TrainState, frozen: Params, batch: Batch) -> tuple[TrainState, dict]:
        batch = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        tokens = jnp.sum(batch["loss_mask"])
        if microbatches == 1:
            total, grads = grad_fn(state.params, frozen, batch)
        else:
            split = jax.tree.map(functools.partial(
                strided_split, rows=batch["input_ids"].shape[0], parts=microbatches), batch)

            def accumulate(carry, mb):
                total, grads = carry
                loss, g = grad_fn(state.params, frozen, mb)
                return (total + loss, jax.tree.map(jnp.add, grads, g)), None

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            (total, grads), _ = jax.lax.scan(accumulate, (jnp.zeros((), jnp.float32), zeros),
                                             split)
        scale = 1.0 / jnp.maximum(tokens, 1).astype(jnp.float32)
        grads = jax.tree.map(lambda g: g * scale, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": total * scale, "grad_norm": optax.tree.norm(grads),
                   "supervised_tokens": tokens, "tokens": jnp.sum(batch["attention_mask"])}
        for part, sched in (schedules or {}).items():
            metrics[f"lr/{part}"] = sched(state.step)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def strided_split(a: jax.Array, *, rows: int, parts: int) -> jax.Array:
    """``[rows * k, ...]`` (``k`` entries per row, e.g. image slots) → ``[parts, rows/parts * k,
    ...]`` where part ``i`` holds rows ``i, i + parts, ...``: with rows sharded in contiguous
    blocks, every part stays spread over all the shards."""
    per_row = a.shape[0] // rows
    a = a.reshape(rows // parts, parts, per_row, *a.shape[1:]).swapaxes(0, 1)
    return a.reshape(parts, -1, *a.shape[3:])
