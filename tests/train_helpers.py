"""Shared by the training tests: a tiny version of the demo config, as a ConfigDict and as CLI
flags, and stand-in data iterators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from data_helpers import REPO, demo_config

# configs/demo.py shrunk: a step takes milliseconds, compiling a few seconds.
TINY = {
    "model.text.hidden_size": 32, "model.text.intermediate_size": 64,
    "model.text.num_heads": 4, "model.text.num_kv_heads": 2, "model.text.head_dim": 8,
    "model.vision.hidden_size": 16, "model.vision.intermediate_size": 32,
    "model.vision.num_heads": 2,
    "data.global_batch_size": 8, "data.num_threads": 1, "data.prefetch": 1,
    "train.log_every": 1,
    "eval.tasks": "",  # no scheduled evaluation (tests/test_train_eval.py turns it on)
}


def tiny_config(root: Path, **overrides: Any) -> ml_collections.ConfigDict:
    """``configs/demo.py`` made tiny, on the demo data at ``root``; ``overrides`` use dotted
    keys with ``__`` for dots (``train__num_steps=4``)."""
    config = demo_config(root)
    for key, value in {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}}.items():
        *path, last = key.split(".")
        node = config
        for name in path:
            node = node[name]
        node[last] = value
    return config


def pipeline_batches(root: Path, count: int) -> list[dict[str, np.ndarray]]:
    """The first ``count`` global batches of the tiny config's real input pipeline."""
    from basque_vlm.data import pipeline

    stream = pipeline.build(tiny_config(root).data)
    try:
        return [next(stream) for _ in range(count)]
    finally:
        stream.close()


def tiny_flags(root: Path, **overrides: Any) -> list[str]:
    """The same as ``train`` CLI flags."""
    values = {**TINY, "data.root": str(root),
              **{k.replace("__", "."): v for k, v in overrides.items()}}
    return [f"--config={REPO}/configs/demo.py"] + [f"--config.{k}={v}" for k, v in values.items()]


def train_cli(workdir: Path, flags: list[str], devices: int = 8, extra_env: Mapping[str, str] = {}
              ) -> subprocess.Popen:
    """``python -m basque_vlm.train`` on ``devices`` simulated CPU devices."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           **extra_env}
    return subprocess.Popen([sys.executable, "-m", "basque_vlm.train", f"--workdir={workdir}",
                             *flags], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def train_to_end(workdir: Path, flags: list[str], timeout: float = 300) -> str:
    """`train_cli` until it ends: its stdout (a failed run fails the test with its stderr)."""
    proc = train_cli(workdir, flags)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


def losses(workdir: Path) -> dict[int, float]:
    """``metrics.jsonl``'s loss by step (training records; not the evaluations'); a step logged
    twice fails."""
    records = [r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
               if "loss" in r]
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return {r["step"]: r["loss"] for r in records}


class ListData:
    """Batches from a list (then the data runs out), with the pipeline's state interface;
    ``change(step, batch)`` may alter the batch of a step."""

    def __init__(self, batches: list[dict[str, np.ndarray]],
                 change: Callable[[int, dict[str, np.ndarray]], dict] | None = None,
                 repeat: bool = False):
        self.batches, self.change, self.repeat = batches, change, repeat
        self.step = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.step >= len(self.batches) and not self.repeat:
            raise StopIteration
        batch = dict(self.batches[self.step % len(self.batches)])
        self.step += 1
        return self.change(self.step, batch) if self.change else batch

    def get_state(self) -> dict[str, int]:
        return {"next_step": self.step}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["next_step"])

    def close(self) -> None:
        pass
