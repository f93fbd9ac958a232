"""Checks that fail before compiling, with a sentence saying what to change."""

from __future__ import annotations

import math
from collections.abc import Mapping

from jax.sharding import Mesh

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
