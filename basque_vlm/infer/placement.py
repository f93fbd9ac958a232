"""Which devices decode a model, and how they split it: a ``data × fsdp × tensor`` mesh over every
device of every process.

By default a model that fits one device is copied to every device (all on ``data``: each device
decodes its own rows); a larger one is split over the smallest ``tensor`` (heads, KV heads, MLP,
vocabulary) that fits, and the rest of the devices go to ``data``. ``--mesh_data``,
``--mesh_fsdp`` and ``--mesh_tensor`` choose it instead (an axis left out: 1 for ``fsdp`` and
``tensor``, the remaining devices for ``data``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import flags
from flax import nnx
from jax.sharding import Mesh

from basque_vlm.model import sharding
from basque_vlm.model.vlm import VLMConfig
from basque_vlm.store import checkpoint

# Of a device's memory, what the weights may take by default; the rest is for the KV cache and
# the activations.
WEIGHTS_SHARE = 0.6


def define_flags() -> None:
    """``--mesh_data``, ``--mesh_fsdp``, ``--mesh_tensor`` (for the CLIs that decode)."""
    flags.DEFINE_integer("mesh_data", None, "Devices over which the prompts' rows are split "
                         "(default: the devices left by fsdp and tensor).", lower_bound=1)
    flags.DEFINE_integer("mesh_fsdp", None, "Devices over which the weights' embedding axis is "
                         "split (default 1).", lower_bound=1)
    flags.DEFINE_integer("mesh_tensor", None, "Devices over which heads, KV heads, MLP and "
                         "vocabulary are split (default: 1 when the model fits one device, "
                         "else the smallest split that fits).", lower_bound=1)


def from_flags(cfg: VLMConfig, weight_bytes: int) -> Mesh:
    """The mesh the ``--mesh_*`` flags ask for (see `decode_mesh`)."""
    values = flags.FLAGS
    return decode_mesh(cfg, weight_bytes, data=values.mesh_data, fsdp=values.mesh_fsdp,
                       tensor=values.mesh_tensor)


def decode_mesh(cfg: VLMConfig, weight_bytes: int, *, data: int | None = None,
                fsdp: int | None = None, tensor: int | None = None,
                devices: Sequence[jax.Device] | None = None, memory: float | None = None
                ) -> Mesh:
    """The ``data × fsdp × tensor`` mesh over ``devices`` (default: all) that decodes the model
    ``cfg`` whose weights take ``weight_bytes`` (each device holding ``memory`` bytes; default:
    what the device says); an axis that does not divide the devices or the model is a
    ValueError naming it."""
    devices = list(devices if devices is not None else jax.devices())
    if data is None and fsdp is None and tensor is None:
        tensor = smallest_tensor(cfg, weight_bytes, devices, memory)
    mesh = _mesh(devices, data, fsdp or 1, tensor or 1)
    sharding.check_divisible(abstract_params(cfg), mesh)
    return mesh


def scans_layers(mesh: Mesh) -> bool:
    """Whether a model decoding on ``mesh`` runs its layers with ``lax.scan`` by default: on
    TPU, where one compiled layer keeps an 80-layer compile short. Elsewhere the layers run
    unrolled, each with its own KV cache updated in place: a scan slices its layer's keys and
    values out of the stacked cache and writes them back at every token, which on CPU made
    16 × 576-token decode steps half as fast again."""
    return mesh.devices.flat[0].platform == "tpu"


def _mesh(devices: list[jax.Device], data: int | None, fsdp: int, tensor: int) -> Mesh:
    fixed = fsdp * tensor * (data or 1)
    if len(devices) % fixed or (data is not None and fixed != len(devices)):
        raise ValueError(f"--mesh_data × --mesh_fsdp × --mesh_tensor = {data or '?'} × {fsdp} × "
                         f"{tensor} does not use the {len(devices)} devices "
                         f"({jax.process_count()} process(es)); leave --mesh_data out to use "
                         "the rest")
    return sharding.make_mesh(data or -1, fsdp, tensor, devices)


def smallest_tensor(cfg: VLMConfig, weight_bytes: int, devices: Sequence[jax.Device],
                    memory: float | None = None) -> int:
    """1 when the weights fit one device (or its memory is unknown, as on CPU), else the
    smallest ``tensor`` that divides the devices and the model and fits the weights."""
    if memory is None:
        mine = next(d for d in devices if d.process_index == jax.process_index())
        memory = device_memory(mine)
    splits = [t for t in range(1, len(devices) + 1) if len(devices) % t == 0 and
              _divides(cfg, t)]
    for t in splits:
        if memory is None or weight_bytes / t <= WEIGHTS_SHARE * memory:
            return t
    raise ValueError(f"the weights ({weight_bytes / 2 ** 30:.1f} GiB) do not fit "
                     f"{len(devices)} device(s) of {memory / 2 ** 30:.1f} GiB even split "
                     f"{splits[-1]} ways; use more devices or --param_dtype=bfloat16")


def device_memory(device: jax.Device) -> int | None:
    """The device's memory in bytes, or None where JAX does not say (CPU)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return (stats or {}).get("bytes_limit")


def _divides(cfg: VLMConfig, tensor: int) -> bool:
    t = cfg.text
    return all(size % tensor == 0 for size in (t.num_heads, t.num_kv_heads,
                                               t.intermediate_size, t.vocab_size))


def abstract_params(cfg: VLMConfig) -> Any:
    """The model's parameters as shapes (an ``nnx.State``), for checks that read no weights."""
    return nnx.state(checkpoint.abstract_model(cfg), nnx.Param)


def weight_bytes(cfg: VLMConfig, dtype: Any) -> int:
    """The parameters' size in ``dtype``."""
    shapes = jax.tree.leaves(abstract_params(cfg).to_pure_dict())
    return sum(math.prod(s.shape) for s in shapes) * np.dtype(dtype).itemsize
