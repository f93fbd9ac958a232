"""Reading Hugging Face model folders: safetensors one tensor at a time, configs, prefixes.

Nothing here unpickles: a folder with only ``.bin``/``.pt`` weights is refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from collections.abc import Callable, Iterable
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
            size = path.stat().st_size
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                begin, end = info["data_offsets"]
                if start + end > size:
                    raise CheckpointError(f"{path}: truncated file (tensor {name!r} ends at byte "
                                          f"{start + end}, the file has {size})")
                self.entries[name] = (path, info["dtype"], tuple(info["shape"]), start + begin,
                                      end - begin)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def names(self) -> Iterable[str]:
        return self.entries.keys()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][2]

    def check(self, name: str) -> None:
        """Raises CheckpointError unless ``name`` exists with a dtype we read."""
        if name not in self.entries:
            raise CheckpointError(f"{self.folder}: missing tensor {name!r}")
        path, dtype = self.entries[name][:2]
        if dtype not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")

    def get(self, name: str) -> np.ndarray:
        self.check(name)
        path, dtype, shape, offset, nbytes = self.entries[name]
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


@dataclasses.dataclass(frozen=True)
class Part:
    """Where one part of the model (decoder, vision tower, projector) lies in a folder.

    ``shapes`` gives each path's shape in our layout; a tensor name starting with ``^`` is
    relative to ``root_prefix`` instead of ``prefix``.
    """
    folder: SafetensorsFolder
    prefix: str
    tensors: list[Tensor]
    shapes: dict[tuple[str, ...], tuple[int, ...]]
    root_prefix: str = ""

    def pieces(self, t: Tensor) -> list[tuple[int | None, str, tuple[int, ...]]]:
        """``(layer or None, name in the file, our shape)`` of each file tensor behind ``t``."""
        shape = self.shapes[t.path]
        name = (self.root_prefix + t.hf_name[1:] if t.hf_name.startswith("^")
                else self.prefix + t.hf_name)
        if not t.stacked:
            return [(None, name, shape)]
        return [(i, name.format(i=i), shape[1:]) for i in range(shape[0])]

    def select(self, keep: Callable[[Tensor], bool]) -> Part:
        return dataclasses.replace(self, tensors=[t for t in self.tensors if keep(t)])


def check_part(part: Part) -> None:
    """Every tensor present with the expected shape, from the file headers alone: a bad
    checkpoint fails before any weight is read."""
    for t in part.tensors:
        for _, name, shape in part.pieces(t):
            part.folder.check(name)
            found = part.folder.shape(name)
            if t.kind == "conv":  # [out, C, p, p] against our [C*p*p, out]
                ok = (len(found) == 4 and found[0] == shape[-1]
                      and math.prod(found) == math.prod(shape))
                expected = f"[{shape[-1]}, C, p, p] with C*p*p = {shape[0]}"
            else:
                expected = mapping.hf_shape(t, shape)
                ok = list(found) == expected
            if not ok:
                raise CheckpointError(f"{part.folder.folder}: tensor {name!r} has shape "
                                      f"{list(found)}, expected {expected}")


def read_part(part: Part, dtype: np.dtype | None = None) -> dict[tuple[str, ...], np.ndarray]:
    """Our arrays for the part's tensors (stacked over layers where the name has ``{i}``).

    ``dtype`` None keeps the source dtype. Each source tensor is copied (and cast) straight into
    its place in the result, so only one is in memory at a time besides the result.
    """
    check_part(part)
    out = {}
    for t in part.tensors:
        result = None
        for i, name, shape in part.pieces(t):
            ours = mapping.to_project(t, part.folder.get(name), shape)
            if result is None:
                result = np.empty(part.shapes[t.path], dtype or ours.dtype)
            result[... if i is None else i] = ours
        out[t.path] = result
    return out
