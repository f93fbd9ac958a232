"""Reading an Orbax checkpoint straight into device shards, one tensor at a time.

Orbax's restore reads each shard of a tensor on its own. A tensor written as one chunk, as
`convert` writes them, is then fetched and decoded once per shard, and Orbax's bound on the bytes
in flight counts whole chunks: bounded to one tensor, loading a 2 GB checkpoint onto 8 devices took
11.8 s; bounded to two, the host held 1.55-2.1 times the largest tensor beyond the weights.

Here every tensor gets a TensorStore chunk cache of its own size. One read of its first element
decodes the first chunk (a whole-tensor chunk: all of it) into that cache; each shard is then
copied from the cache into a buffer of its own, which becomes the device's buffer, and the cache
is dropped with the tensor. The host holds one tensor and one shard at most; on CPU, where the
device adopts the shard's buffer, one tensor: 1.13 times the largest tensor beyond the weights
on that 2 GB checkpoint, in 3.3–3.9 s (`benchmarks/load_memory.py`).

A tensor stored in chunks of its shards (a training checkpoint) reads the same way; each shard
then reads its own chunks, and only the first chunk passes through the cache.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from etils import epath

from basque_vlm.runtime import host_memory

CACHE_SLACK = 2 ** 20  # the cache's own bookkeeping beside the chunk it holds


def read_placed(path: epath.Path, metadata: Any, target: Any) -> Any:
    """The Orbax PyTree checkpoint at ``path`` (its ``metadata``, as Orbax's
    ``PyTreeCheckpointHandler`` reads it), placed as ``target`` (a tree of
    ``jax.ShapeDtypeStruct`` with shardings, shaped as stored). Only this process's shards are
    read."""
    use_ocdbt = ocp.type_handlers.is_ocdbt_checkpoint(path)
    context = ocp.serialization.get_ts_context(use_ocdbt=use_ocdbt)

    def read(stored: Any, want: jax.ShapeDtypeStruct) -> jax.Array:
        if tuple(stored.shape) != tuple(want.shape):
            raise ValueError(f"{path}: {stored.name} is stored as {tuple(stored.shape)}, "
                             f"not {tuple(want.shape)} as the model expects")
        info = ocp.type_handlers.ParamInfo(name=stored.name, parent_dir=epath.Path(
            stored.directory), use_zarr3=metadata.use_zarr3, ts_context=context)
        spec = ocp.type_handlers.get_json_tspec_read(info, use_ocdbt=use_ocdbt)
        return read_tensor(spec, np.dtype(stored.dtype), want, context)

    with host_memory.returned_on_free():
        return jax.tree.map(read, metadata.tree, target)


def read_tensor(spec: dict[str, Any], stored_dtype: np.dtype, want: jax.ShapeDtypeStruct,
                parent: ts.Context) -> jax.Array:
    """One stored tensor (a TensorStore ``spec``) as the array ``want`` describes."""
    cache = math.prod(want.shape) * stored_dtype.itemsize + CACHE_SLACK
    context = ts.Context(ts.Context.Spec({"cache_pool": {"total_bytes_limit": cache}}), parent)
    store = ts.open(spec, open=True, context=context).result()
    if np.dtype(want.dtype) != stored_dtype:
        store = ts.cast(store, ts.dtype(np.dtype(want.dtype)))
    if math.prod(want.shape):
        store[(0,) * len(want.shape)].read().result()  # fills the cache with the first chunk
    devices: dict[tuple[tuple[int, int], ...], list[jax.Device]] = {}
    for device, index in want.sharding.addressable_devices_indices_map(want.shape).items():
        bounds = tuple(part.indices(size)[:2] for part, size in zip(index, want.shape))
        devices.setdefault(bounds, []).append(device)
    shards = []
    for bounds, on in devices.items():
        host = host_buffer([stop - start for start, stop in bounds], np.dtype(want.dtype))
        ts.array(host).write(store[tuple(slice(*b) for b in bounds)]).result()
        first = jax.device_put(host, on[0])
        # Other devices with the same shard get copies: a buffer donated on one device must not
        # be another's.
        shards += [first, *(jax.device_put(first, device) for device in on[1:])]
    return jax.make_array_from_single_device_arrays(want.shape, want.sharding, shards)


def host_buffer(shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    """An uninitialized C-ordered array in an anonymous mapping of its own: page-aligned, so that
    XLA's CPU client adopts it without a copy, and faulted in by 4 KiB pages. (numpy asks the
    kernel to back large arrays with huge pages, and a kernel that compacts memory for them when
    they are first touched stalls: a 2 GB checkpoint took 6.2 s to load instead of 2.7 s.)"""
    count = math.prod(shape)
    return np.frombuffer(mmap.mmap(-1, max(count * dtype.itemsize, 1)), dtype,
                         count).reshape(shape)
