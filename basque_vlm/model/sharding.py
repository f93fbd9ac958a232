"""Logical axis names → mesh axes: the one table, and the helpers that apply it.

Parameters carry logical names in their ``out_sharding`` metadata; activations are constrained at
layer boundaries with `constrain`, which does nothing unless a mesh is active (`use_mesh`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

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


def active_mesh() -> Mesh | None:
    """The mesh of the innermost `use_mesh`, or None."""
    return _active[-1] if _active else None


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


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``data × fsdp × tensor`` mesh over ``devices`` (all by default); one size may be −1
    to take the remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    fill = [k for k, v in sizes.items() if v == -1]
    if len(fill) > 1:
        raise ValueError(f"mesh: only one of mesh.data/fsdp/tensor may be -1, got {sizes}")
    fixed = 1
    for k, v in sizes.items():
        if v != -1:
            if v < 1:
                raise ValueError(f"mesh.{k} must be a positive size or -1, got {v}")
            fixed *= v
    if fill:
        if len(devices) % fixed:
            raise ValueError(f"mesh: {len(devices)} devices do not divide by the fixed axes "
                             f"{sizes}; change mesh.data/fsdp/tensor")
        sizes[fill[0]] = len(devices) // fixed
    if sizes["data"] * sizes["fsdp"] * sizes["tensor"] != len(devices):
        raise ValueError(f"mesh: data×fsdp×tensor = {sizes} does not use exactly the "
                         f"{len(devices)} devices; set one axis to -1 to fill")
    shape = (sizes["data"], sizes["fsdp"], sizes["tensor"])
    return Mesh(np.asarray(devices).reshape(shape), ("data", "fsdp", "tensor"),
                axis_types=(AxisType.Auto,) * 3)


def param_shardings(abstract_state: Any, mesh: Mesh) -> Any:
    """NamedShardings for an ``nnx.State`` (of a module or `nnx.eval_shape` of one), by the
    logical names in each parameter's metadata; returned as a pure dict."""
    from flax import nnx

    specs = nnx.get_partition_spec(abstract_state).to_pure_dict()
    return jax.tree.map(lambda spec: NamedSharding(mesh, logical_to_spec(tuple(spec), mesh)),
                        specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows over ``data × fsdp``; everything else replicated."""
    return NamedSharding(mesh, logical_to_spec(("batch",), mesh))
