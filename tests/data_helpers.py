"""Shared by the data tests: the demo config pointed at a data folder, and batches drawn from it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections
import numpy as np

REPO = Path(__file__).resolve().parent.parent


def demo_config(root: Path, **data: object) -> ml_collections.ConfigDict:
    """``configs/demo.py`` with ``data.root = root`` and the given ``data`` overrides (global
    batches of 16 unless overridden: the data tests' expectations are written for 16)."""
    data = {"global_batch_size": 16, **data}
    config = load_config("demo.py")
    config.data.root = str(root)
    config.data.update(data)
    return config


def load_config(file: str, *args: object) -> ml_collections.ConfigDict:
    """``get_config(*args)`` of ``configs/FILE``."""
    spec = importlib.util.spec_from_file_location(Path(file).stem, REPO / "configs" / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)


def draw(stream, steps: int) -> list[dict[str, np.ndarray]]:
    return [next(stream) for _ in range(steps)]


def assert_batches_equal(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> None:
    assert len(a) == len(b)
    for step, (x, y) in enumerate(zip(a, b)):
        assert x.keys() == y.keys(), step
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=f"step {step}, {key}")


def save_batches(path: Path, batches: list[dict[str, np.ndarray]]) -> None:
    np.savez(path, **{f"{i}/{k}": v for i, b in enumerate(batches) for k, v in b.items()})


def load_batches(path: Path) -> list[dict[str, np.ndarray]]:
    with np.load(path) as data:
        out: dict[int, dict[str, np.ndarray]] = {}
        for name in data.files:
            step, key = name.split("/", 1)
            out.setdefault(int(step), {})[key] = data[name]
    return [out[i] for i in sorted(out)]
