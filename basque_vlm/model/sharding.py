"""Logical axis names → mesh axes: the one table, and the helpers that apply it.

Parameters carry logical names in their ``out_sharding`` metadata; activations are constrained at
layer boundaries with `constrain`, which does nothing unless a mesh is active (`use_mesh`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
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

# (part, logical axis) → the model setting that sizes it.
_SETTINGS = {
    ("language_model", "heads"): "text.num_heads",
    ("language_model", "kv_heads"): "text.num_kv_heads",
    ("language_model", "mlp"): "text.intermediate_size",
    ("language_model", "vocab"): "text.vocab_size",
    ("language_model", "embed"): "text.hidden_size",
    ("vision_tower", "heads"): "vision.num_heads",
    ("vision_tower", "mlp"): "vision.intermediate_size",
    ("vision_tower", "embed"): "vision.hidden_size",
    ("connector", "embed"): "text.hidden_size",
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


def row_shards(mesh: Mesh) -> int:
    """How many ways `batch_sharding` splits the rows: a batch's size must be a multiple."""
    return math.prod(mesh.shape[a] for a in (LOGICAL_RULES["batch"] or ()) if a in mesh.shape)


def shard_rows(mesh: Mesh, shape: Sequence[int], fetch: Callable[[slice], np.ndarray]
               ) -> jax.Array:
    """A global array of ``shape``, rows split as `batch_sharding` says, that every process
    builds from only the rows its own devices hold: ``fetch(rows)`` returns those rows whole
    (so a process decodes only its own rows' images)."""
    return jax.make_array_from_callback(tuple(shape), batch_sharding(mesh),
                                        lambda index: fetch(index[0])[(slice(None),
                                                                       *index[1:])])


def check_divisible(abstract_state: Any, mesh: Mesh) -> None:
    """Every parameter dimension of an ``nnx.State`` divides over the mesh axes its logical name
    maps to; else a ValueError naming the model setting and the mesh axes."""
    from flax import nnx

    specs = nnx.get_partition_spec(abstract_state).to_pure_dict()
    shapes = abstract_state.to_pure_dict()
    flat_specs = jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, PartitionSpec))[0]
    for (path, names), shape in zip(flat_specs, jax.tree.leaves(shapes)):
        for size, name in zip(shape.shape, names):
            axes = logical_to_spec((name,), mesh)[0] if name else None
            axes = (axes,) if isinstance(axes, str) else (axes or ())
            ways = math.prod(mesh.shape[a] for a in axes)
            if size % ways:
                part = path[0].key
                setting = _SETTINGS.get((part, name), f"the {name} size")
                where = "/".join(str(k.key) for k in path)
                mesh_axes = " × ".join(f"mesh.{a}={mesh.shape[a]}" for a in axes)
                raise ValueError(
                    f"the model does not divide over the mesh: model.{setting}={size} ({name} "
                    f"of {where}) is not a multiple of {mesh_axes}; choose a mesh size that "
                    f"divides {size}")
