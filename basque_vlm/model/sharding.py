"""Logical axis names → mesh axes: the one table, and the helpers that apply it.

Parameters carry logical names in their ``out_sharding`` metadata; activations are constrained at
layer boundaries with `constrain`, which does nothing unless a mesh is active (`use_mesh`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# logical axis -> mesh axes (None = replicated). Order matters only for readability.
LOGICAL_RULES: dict[str, tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "length": None,
    "layers": None,
    "embed": ("fsdp",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": None,
    "mlp": ("tensor",),
    "vocab": ("tensor",),
    "patch": None,
    "patch_pixels": None,
}

_active: list[Mesh] = []


@contextlib.contextmanager
def use_mesh(mesh: Mesh) -> Iterator[Mesh]:
    """Activates ``mesh`` for `constrain` (and jax's own mesh context)."""
    _active.append(mesh)
    try:
        with jax.set_mesh(mesh):
            yield mesh
    finally:
        _active.pop()


def logical_to_spec(names: Sequence[str | None], mesh: Mesh,
                    rules: dict[str, tuple[str, ...] | None] = LOGICAL_RULES) -> PartitionSpec:
    """PartitionSpec for logical ``names``; mesh axes of size 1 or already used are dropped."""
    used: set[str] = set()
    spec = []
    for name in names:
        axes = tuple(a for a in (rules.get(name) or ()) if a in mesh.shape and mesh.shape[a] > 1
                     and a not in used) if name else ()
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else (axes or None))
    return PartitionSpec(*spec)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    if not _active:
        return x
    mesh = _active[-1]
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(names, mesh)))
