"""Cloud TPU slices by name (``v5p-8``, ``v5e-16``, ...): chips, HBM, compile-only devices.

A slice name counts TensorCores on v4 and v5p (two per chip, one JAX device per chip: megacore)
and chips on v5e and v6e. `devices` gives fake devices of the slice's topology (libtpu's
compile-only client): enough to compile a program for it on a CPU machine, never to run one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import jax


@dataclasses.dataclass(frozen=True)
class Generation:
    prefix: str            # JAX's topology prefix
    name_counts_cores: bool  # v4-8 and v5p-8 are 4 chips
    megacore: bool
    hbm_gib: float         # usable per chip
    accelerator: str       # the GCE accelerator type's prefix (v5litepod-8)
    dims: int              # 2-D (v5e, v6e) or 3-D (v4, v5p) slices


# HBM: what libtpu 0.0.42.1's compiler says is available per chip ("exceeds available HBM"),
# a little under the datasheet's 32, 16, 95 and 32 GiB.
GENERATIONS = {
    "v4": Generation("v4", True, True, 30.75, "v4", 3),
    "v5e": Generation("v5e", False, False, 15.75, "v5litepod", 2),
    "v5p": Generation("v5p", True, True, 95.74, "v5p", 3),
    "v6e": Generation("v6e", False, False, 31.25, "v6e", 2),
}
# chips -> slice shape, as Cloud TPU lays out these slices
SHAPES = {
    2: {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16),
        256: (16, 16)},
    3: {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8),
        256: (4, 8, 8), 512: (8, 8, 8)},
}
LIBTPU_HINT = "pip install libtpu==0.0.42.1 (the libtpu of jax 0.10.2; `pip install -e .[tpu]`)"


@dataclasses.dataclass(frozen=True)
class Slice:
    name: str
    generation: Generation
    shape: tuple[int, ...]

    @property
    def chips(self) -> int:
        return math.prod(self.shape)

    @property
    def topology(self) -> str:
        """JAX's topology string, e.g. ``v5p:2x2x1``."""
        return f"{self.generation.prefix}:{'x'.join(map(str, self.shape))}"

    @property
    def accelerator_type(self) -> str:
        """The GCE accelerator type, e.g. ``v5litepod-8``."""
        per_chip = 2 if self.generation.name_counts_cores else 1
        return f"{self.generation.accelerator}-{self.chips * per_chip}"

    @property
    def chips_per_host(self) -> tuple[int, int, int]:
        if self.generation.dims == 2:
            # single-host slices up to 8 chips (v5litepod-8, v6e-8), else hosts of 2x2
            return (*self.shape, 1) if self.chips <= 8 else (2, 2, 1)
        return tuple(min(n, b) for n, b in zip(self.shape, (2, 2, 1)))

    @property
    def wrap(self) -> tuple[bool, bool, bool]:
        """ICI wrap-around links: a full torus on 3-D slices from 4x4x4, rings of 16 on 2-D."""
        if self.generation.dims == 3:
            return (min(self.shape) >= 4,) * 3
        return (*(n == 16 for n in self.shape), False)


def names() -> list[str]:
    out = []
    for gen_name, gen in GENERATIONS.items():
        per_chip = 2 if gen.name_counts_cores else 1
        out += [f"{gen_name}-{chips * per_chip}" for chips in SHAPES[gen.dims]]
    return out


def parse(name: str) -> Slice:
    """``v5p-8`` (a Cloud TPU name) or ``v5p:2x2x1`` (JAX's topology string)."""
    named = re.fullmatch(r"(v\d+[a-z]?)-(\d+)", name)
    shaped = re.fullmatch(r"(v\d+[a-z]?):(\d+(?:x\d+)+)", name)
    if named and named.group(1) in GENERATIONS:
        gen = GENERATIONS[named.group(1)]
        count = int(named.group(2))
        chips = count // 2 if gen.name_counts_cores else count
        if chips in SHAPES[gen.dims] and (count % 2 == 0 or not gen.name_counts_cores):
            return Slice(name, gen, SHAPES[gen.dims][chips])
    if shaped and shaped.group(1) in GENERATIONS:
        gen = GENERATIONS[shaped.group(1)]
        shape = tuple(int(n) for n in shaped.group(2).split("x"))
        if len(shape) == gen.dims:
            return Slice(name, gen, shape)
    raise ValueError(f"unknown TPU topology {name!r}; use a slice name ({', '.join(names())}) "
                     "or JAX's topology string (v5e:2x4, v5p:2x2x1, v4:2x2x2, ...)")


def devices(tpu: Slice) -> list[jax.Device]:
    """Compile-only devices of ``tpu``, one per chip. Needs libtpu; touches no TPU."""
    # libtpu otherwise asks the GCE metadata server about the host it runs on, and warns.
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", tpu.accelerator_type)
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    # A compile-only client holds no chip: other processes may load libtpu at the same time.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    try:
        import libtpu  # noqa: F401
    except ImportError:
        raise ValueError(f"compiling for TPU needs libtpu: {LIBTPU_HINT}") from None
    try:
        desc = topologies.get_topology_desc(
            tpu.topology, "tpu",
            chip_config_name="megacore" if tpu.generation.megacore else "default",
            chips_per_host_bounds=tpu.chips_per_host, num_slices=1, wrap=tpu.wrap)
    except (RuntimeError, jax.errors.JaxRuntimeError) as e:
        raise ValueError(f"libtpu could not describe {tpu.name} ({tpu.topology}): {e}") from None
    found = list(desc.devices)
    if len(found) != tpu.chips:
        raise ValueError(f"{tpu.name}: libtpu gave {len(found)} devices for {tpu.chips} chips")
    return found
