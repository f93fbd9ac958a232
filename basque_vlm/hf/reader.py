"""Reading Hugging Face model folders: safetensors one tensor at a time, configs, prefixes.

Nothing here unpickles: a folder with only ``.bin``/``.pt`` weights is refused.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from basque_vlm.hf import mapping
from basque_vlm.hf.mapping import Tensor

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class CheckpointError(ValueError):
    """A model folder that cannot be imported; the message names the file or tensor."""


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


class SafetensorsFolder:
    """The tensors of every ``*.safetensors`` file in a folder, read one at a time on demand."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise CheckpointError(f"{folder}: not a directory")
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            pickles = [p.name for p in self.folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
            if pickles:
                raise CheckpointError(
                    f"{folder}: only pickle weights ({', '.join(sorted(pickles))}); refusing to "
                    "unpickle them. Convert the folder to safetensors with transformers first "
                    "(model.save_pretrained(out, safe_serialization=True)) in a trusted environment")
            raise CheckpointError(f"{folder}: no *.safetensors weights")
        self.entries: dict[str, tuple[Path, str, tuple[int, ...], int, int]] = {}
        for path in files:
            with open(path, "rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                try:
                    header = json.loads(f.read(header_len))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise CheckpointError(f"{path}: corrupt safetensors header") from None
            start = 8 + header_len
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                begin, end = info["data_offsets"]
                self.entries[name] = (path, info["dtype"], tuple(info["shape"]), start + begin,
                                      end - begin)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def names(self) -> Iterable[str]:
        return self.entries.keys()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][2]

    def get(self, name: str) -> np.ndarray:
        if name not in self.entries:
            raise CheckpointError(f"{self.folder}: missing tensor {name!r}")
        path, dtype, shape, offset, nbytes = self.entries[name]
        if dtype not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        data = np.fromfile(path, dtype=np.uint8, count=nbytes, offset=offset)
        if data.size != nbytes:
            raise CheckpointError(f"{path}: truncated file (tensor {name!r})")
        return data.view(DTYPES[dtype]).reshape(shape)

    def find_prefix(self, candidates: Iterable[str], probe: str, what: str) -> str:
        for prefix in candidates:
            if prefix + probe in self:
                return prefix
        tried = ", ".join(repr(p + probe) for p in candidates)
        raise CheckpointError(f"{self.folder}: no {what} weights found (looked for {tried})")


def _cast(array: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    return array if dtype is None or array.dtype == dtype else array.astype(dtype)


def read_part(folder: SafetensorsFolder, prefix: str, tensors: list[Tensor],
              shapes: dict[tuple[str, ...], tuple[int, ...]], dtype: np.dtype | None = None,
              root_prefix: str = "") -> dict[tuple[str, ...], np.ndarray]:
    """Our arrays for ``tensors`` (stacked over layers where the name has ``{i}``).

    ``shapes`` gives each path's shape in our layout; ``dtype`` None keeps the source dtype. Only one
    source tensor is in memory at a time besides the result.
    """
    out = {}
    for t in tensors:
        shape = shapes[t.path]
        full = (root_prefix + t.hf_name[1:]) if t.hf_name.startswith("^") else prefix + t.hf_name
        if not t.stacked:
            out[t.path] = _cast(_read_one(folder, full, t, shape), dtype)
            continue
        result = None
        for i in range(shape[0]):
            layer = _cast(_read_one(folder, full.format(i=i), t, shape[1:]), dtype)
            if result is None:
                result = np.empty(shape, layer.dtype)
            result[i] = layer
        out[t.path] = result
    return out


def _read_one(folder: SafetensorsFolder, name: str, t: Tensor, shape: tuple[int, ...]) -> np.ndarray:
    hf = folder.get(name)
    if t.kind == "conv":  # [out, C, p, p] against our [C*p*p, out]
        ok = hf.ndim == 4 and hf.shape[0] == shape[-1] and hf.size == int(np.prod(shape))
        expected = f"[{shape[-1]}, C, p, p] with C*p*p = {shape[0]}"
    else:
        expected = expected_hf_shape(t, shape)
        ok = list(hf.shape) == expected
    if not ok:
        raise CheckpointError(f"{folder.folder}: tensor {name!r} has shape {list(hf.shape)}, "
                              f"expected {expected}")
    return mapping.to_project(t, hf, shape)


def expected_hf_shape(t: Tensor, shape: tuple[int, ...]) -> list[int]:
    if t.kind == "dense":
        return [int(np.prod(shape[t.in_dims:])), int(np.prod(shape[:t.in_dims]))]
    if t.kind == "flat":
        return [int(np.prod(shape))]
    return list(shape)
