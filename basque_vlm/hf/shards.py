"""Writing safetensors files one tensor at a time, sharded with an index as transformers does.

A tensor is described up front (name, shape, dtype) and produced only when its turn comes, so a
writer never holds more than one output tensor in memory.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from basque_vlm.hf.reader import DTYPES

CODES = {np.dtype(v): k for k, v in DTYPES.items()}
INDEX_FILE = "model.safetensors.index.json"


@dataclasses.dataclass(frozen=True)
class LazyTensor:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    make: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def parse_size(text: str) -> int:
    """``"5GB"``, ``"500MB"``, ``"64KB"`` or a byte count, as transformers' ``max_shard_size``."""
    units = {"GB": 10**9, "MB": 10**6, "KB": 10**3, "B": 1}
    for unit, scale in units.items():
        if text.upper().endswith(unit):
            return int(float(text[:-len(unit)]) * scale)
    return int(text)


def _shards(tensors: Sequence[LazyTensor], max_bytes: int) -> list[list[LazyTensor]]:
    shards: list[list[LazyTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def _write_file(path: Path, tensors: Sequence[LazyTensor]) -> None:
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        header[t.name] = {"dtype": CODES[np.dtype(t.dtype)], "shape": list(t.shape),
                          "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as the safetensors library writes
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for t in tensors:
            array = t.make()
            if array.shape != tuple(t.shape) or array.dtype != t.dtype:
                raise ValueError(f"tensor {t.name!r}: made {array.dtype}{list(array.shape)}, "
                                 f"declared {np.dtype(t.dtype)}{list(t.shape)}")
            np.ascontiguousarray(array).tofile(f)


def write_safetensors(folder: str | Path, tensors: Sequence[LazyTensor],
                      max_shard_bytes: int) -> list[Path]:
    """``model.safetensors``, or ``model-0000k-of-0000n.safetensors`` shards plus
    ``model.safetensors.index.json`` when the tensors exceed ``max_shard_bytes``."""
    folder = Path(folder)
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ValueError("duplicate tensor names")
    shards = _shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        paths = [folder / "model.safetensors"]
    else:
        paths = [folder / f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
                 for k in range(len(shards))]
    for path, shard in zip(paths, shards):
        _write_file(path, shard)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)},
                 "weight_map": {t.name: p.name for p, s in zip(paths, shards) for t in s}}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return paths
