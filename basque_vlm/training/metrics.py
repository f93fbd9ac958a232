"""What a run reports: ``WORKDIR/metrics.jsonl``, TensorBoard scalars (``WORKDIR/tensorboard/``),
a progress line, throughput and estimated MFU.

One JSON object per logged step (process 0 only)::

    {"step", "loss", "grad_norm", "lr", "lr/<part>", "supervised_tokens", "tokens",
     "tokens_per_s", "step_time_s", "flops_per_s", "mfu", "data_wait_fraction", "elapsed_s"}

and one per scheduled evaluation (``config.eval``; `basque_vlm.training.evaluation`)::

    {"step", "eval/<task>": score, ..., "eval_time_s", "elapsed_s"}

The same numbers go to TensorBoard under the same names (``loss``, ``lr``, ``eval/<task>``, ...).

``tokens`` counts the real (unpadded) tokens of the global batch, image tokens included;
``tokens_per_s``, ``step_time_s`` and ``data_wait_fraction`` are averaged over the steps since the
previous log line (the first step, which compiles, is left out). ``mfu`` is the model FLOPs
(`step_flops`) per second over the devices' peak (`peak_flops`): null where the peak is unknown
(CPU) unless ``train.peak_flops_per_device`` gives it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from etils import epath

from basque_vlm.model.vlm import VLMConfig
from basque_vlm.runtime import paths
from basque_vlm.training import tensorboard as tb

METRICS_FILE = "metrics.jsonl"
# Dense bf16 peak per chip, FLOP/s, by a substring of ``jax.Device.device_kind``.
PEAK_FLOPS = (("TPU v6", 918e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12),
              ("TPU v5", 459e12), ("TPU v4", 275e12), ("H200", 989e12), ("H100", 989e12),
              ("A100", 312e12))


def peak_flops(device_kind: str) -> float | None:
    return next((peak for kind, peak in PEAK_FLOPS if kind in device_kind), None)


def step_flops(cfg: VLMConfig, trainable: Sequence[str], rows: int, length: int,
               images: int) -> float:
    """Model FLOPs of one optimizer step on ``rows × length`` tokens and ``images`` image slots:
    2 per multiply-add (counted below) forward, as much again for the activation gradients of a
    part with something trainable upstream (or itself), and again for the weight gradients of a
    trained part. Attention scores over the full (padded) length; embedding lookups are free."""
    t, v = cfg.text, cfg.vision
    n = v.num_layers
    vision_layers = max(layer % (n + 1) for layer in cfg.feature_layers)
    attn = t.hidden_size * (2 * t.num_heads + 2 * t.num_kv_heads) * t.head_dim
    llm = t.num_layers * (attn + 3 * t.hidden_size * t.intermediate_size) \
        + t.hidden_size * t.vocab_size
    llm_attention = t.num_layers * 2 * length * t.num_heads * t.head_dim
    patches = v.num_patches + int(v.has_class_token)
    vit = vision_layers * (4 * v.hidden_size ** 2 + 2 * v.hidden_size * v.intermediate_size) \
        + v.num_channels * v.patch_size ** 2 * v.hidden_size
    vit_attention = vision_layers * 2 * patches * v.hidden_size
    features = v.hidden_size * len(cfg.feature_layers)
    conn = features * t.hidden_size + (t.hidden_size ** 2 if cfg.connector != "linear" else 0)

    def passes(part: str, upstream: Sequence[str]) -> int:
        grads_in = any(p in trainable for p in (part, *upstream))
        return 2 * (1 + int(grads_in) + int(part in trainable))

    tokens = rows * length
    image_tokens = images * cfg.tokens_per_image
    return (passes("language_model", ("connector", "vision_tower"))
            * tokens * (llm + llm_attention)
            + passes("connector", ("vision_tower",)) * image_tokens * conn
            + passes("vision_tower", ()) * images * patches * (vit + vit_attention))


class Interval:
    """Wall time, time waiting for data, steps and tokens since the last `reset`."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.waited = 0.0
        self.steps = 0
        self.tokens = 0
        self.flops = 0.0

    @contextmanager
    def waiting(self) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.waited += time.perf_counter() - t0

    def add(self, tokens: int, flops: float) -> None:
        self.steps += 1
        self.tokens += tokens
        self.flops += flops

    def rates(self, peak: float | None) -> dict[str, float | None]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        flops_per_s = self.flops / elapsed
        return {"tokens_per_s": self.tokens / elapsed,
                "step_time_s": elapsed / max(self.steps, 1),
                "flops_per_s": flops_per_s,
                "mfu": flops_per_s / peak if peak else None,
                "data_wait_fraction": min(self.waited / elapsed, 1.0)}


class Writer:
    """``metrics.jsonl``, the TensorBoard scalars and the progress line; does nothing on
    processes other than 0. The workdir may be remote (``gs://``): an object cannot be appended
    to, so there ``metrics.jsonl`` is rewritten whole at each record."""

    def __init__(self, workdir: str | Path, num_steps: int, enabled: bool, resumed_at: int = 0,
                 tensorboard: bool = True):
        self.path = paths.path(workdir) / METRICS_FILE
        self.num_steps = num_steps
        self.enabled = enabled
        self.start = time.perf_counter()
        self.scalars: tb.Scalars | None = None
        self._lines: list[str] | None = None  # a remote file's lines
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            kept = truncate(self.path, resumed_at)
            if paths.is_remote(self.path):
                self._lines = kept
            if tensorboard:
                self.scalars = tb.Scalars(paths.path(workdir) / tb.TENSORBOARD_DIR,
                                          resumed_at + 1)

    def write(self, record: Mapping[str, Any]) -> None:
        """A training step's record (`progress_line`'s fields)."""
        if not self.enabled:
            return
        record = self._log(record)
        print(progress_line(record, self.num_steps), flush=True)

    def write_eval(self, step: int, scores: Mapping[str, float], seconds: float) -> None:
        """The scores of a scheduled evaluation, ``{task: score}``."""
        if not self.enabled:
            return
        self._log({"step": step, **{f"eval/{task}": v for task, v in scores.items()},
                   "eval_time_s": round(seconds, 3)})
        if self.scalars is not None:
            self.scalars.flush()
        print(f"eval at step {step}: " + ", ".join(f"{task} {100 * v:.1f}"
                                                    for task, v in scores.items())
              + f" (×100; {format_seconds(seconds)})", flush=True)

    def _log(self, record: Mapping[str, Any]) -> dict[str, Any]:
        record = {**record, "elapsed_s": round(time.perf_counter() - self.start, 3)}
        line = json.dumps(record)
        if self._lines is None:
            with self.path.open("a") as f:
                f.write(line + "\n")
        else:
            self._lines.append(line)
            self.path.write_text("".join(f"{x}\n" for x in self._lines))
        if self.scalars is not None:
            self.scalars.add(record["step"], {k: v for k, v in record.items() if k != "step"})
        return record

    def say(self, message: str) -> None:
        if self.enabled:
            print(message, flush=True)

    def close(self) -> None:
        """Flushes and closes the TensorBoard file."""
        if self.scalars is not None:
            self.scalars.close()
            self.scalars = None


def progress_line(record: Mapping[str, Any], num_steps: int) -> str:
    step = record["step"]
    eta = (num_steps - step) * record["step_time_s"]
    return (f"step {step}/{num_steps}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
            f"{record['tokens_per_s']:.0f} tok/s  data wait {record['data_wait_fraction']:.0%}"
            f"  eta {format_seconds(eta)}")


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def truncate(path: Path | epath.Path, step: int) -> list[str]:
    """Drops records after ``step`` (logged by a run that died before its next checkpoint; the
    training and the evaluation records alike), so that a resumed run logs each step once.
    Returns the lines kept."""
    if not path.is_file():
        return []
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))
    return kept


def read(workdir: str | Path) -> list[dict[str, Any]]:
    path = paths.path(workdir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
