"""AdamW with one learning rate per part of the model, and frozen parts.

The parts are the top-level entries of the parameter tree: ``vision_tower``, ``connector``,
``language_model``. A part whose learning rate is None or 0 is frozen: it is split off before the
gradient is taken, so it has no gradient and no optimizer state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax

PARTS = ("vision_tower", "connector", "language_model")


def trainable_parts(learning_rates: Mapping[str, float | None]) -> tuple[str, ...]:
    unknown = set(learning_rates) - set(PARTS)
    if unknown:
        raise ValueError(f"optim.learning_rates: unknown part(s) {sorted(unknown)}; "
                         f"the parts are {PARTS}")
    parts = tuple(p for p in PARTS if learning_rates.get(p))
    if not parts:
        raise ValueError("optim.learning_rates: every part is frozen; nothing to train")
    return parts


def schedule(peak: float, num_steps: int, warmup_steps: int) -> optax.Schedule:
    """Linear warmup from 0, then cosine decay to 0 at ``num_steps`` (LLaVA-1.5's schedule)."""
    warmup_steps = min(warmup_steps, max(num_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, max(num_steps, 1), 0.0)


def make_optimizer(learning_rates: Mapping[str, float | None], num_steps: int, *,
                   warmup_ratio: float = 0.03, weight_decay: float = 0.0,
                   grad_clip: float | None = 1.0, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8) -> tuple[optax.GradientTransformation,
                                               dict[str, optax.Schedule]]:
    """The transformation over the trainable parts' tree ``{part: params}``, and the schedules.

    Clipping is by the global norm over all trainable parts together.
    """
    warmup = round(warmup_ratio * num_steps)
    schedules = {p: schedule(learning_rates[p], num_steps, warmup)
                 for p in trainable_parts(learning_rates)}
    per_part = {p: optax.adamw(s, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
                for p, s in schedules.items()}
    tx = optax.multi_transform(per_part, part_labels)
    if grad_clip:
        tx = optax.chain(optax.clip_by_global_norm(grad_clip), tx)
    return tx, schedules


def part_labels(params: Mapping[str, Any]) -> dict[str, Any]:
    """Each leaf labelled with its part's name (``optax.multi_transform``'s labels)."""
    return {part: jax.tree.map(lambda _, p=part: p, subtree) for part, subtree in params.items()}
