"""Checks that fail before compiling, with a sentence saying what to change."""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
from flax import nnx
from jax.sharding import Mesh, PartitionSpec

from basque_vlm.model import sharding

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


class NonFiniteError(ValueError):
    """A non-finite loss or gradient norm: the run stops without saving."""

    def __init__(self, step: int, metrics: Mapping[str, float]):
        self.step = step
        super().__init__(f"non-finite loss or gradient at step {step} (loss {metrics['loss']}, "
                         f"grad_norm {metrics['grad_norm']}); stopped without saving, the last "
                         "good checkpoint is kept")


def check_finite(step: int, metrics: Mapping[str, float]) -> None:
    if not (math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])):
        raise NonFiniteError(step, metrics)


def check_batch(global_batch: int, microbatches: int, mesh: Mesh, process_count: int) -> None:
    """The global batch splits into micro-batches that each divide over ``data × fsdp``."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if microbatches < 1 or global_batch % microbatches:
        raise ValueError(f"data.global_batch_size={global_batch} does not split into "
                         f"train.microbatches={microbatches}; make it a multiple of it")
    per_micro = global_batch // microbatches
    if per_micro % shards:
        raise ValueError(
            f"the batch does not divide over the mesh: {per_micro} rows per micro-batch "
            f"(data.global_batch_size={global_batch} / train.microbatches={microbatches}) over "
            f"data×fsdp = {mesh.shape['data']}×{mesh.shape['fsdp']} = {shards} shards; make "
            f"data.global_batch_size a multiple of {shards * microbatches} or change "
            "mesh.data/mesh.fsdp")
    if global_batch % process_count:
        raise ValueError(f"data.global_batch_size={global_batch} does not divide over "
                         f"{process_count} processes; make it a multiple of {process_count}")


def check_model(abstract_state: nnx.State, mesh: Mesh) -> None:
    """Every parameter dimension divides over the mesh axes its logical name maps to."""
    specs = nnx.get_partition_spec(abstract_state).to_pure_dict()
    shapes = abstract_state.to_pure_dict()
    flat_specs = jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, PartitionSpec))[0]
    for (path, names), shape in zip(flat_specs, jax.tree.leaves(shapes)):
        for size, name in zip(shape.shape, names):
            axes = sharding.logical_to_spec((name,), mesh)[0] if name else None
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
