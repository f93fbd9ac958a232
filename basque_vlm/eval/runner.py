"""Running a task: greedy answers to its samples, on every process in sample order, then scored.

A checkpoint's `Generator` decodes on a mesh over every process's devices (`infer.engine`:
in-flight batching by default), so every process gives it all the samples. A model that answers
on its own in each process (an API model) gets this process's share instead (process ``i`` of
``P`` takes samples ``i, i+P, ...``), and the records are gathered. A row's answer does not
depend on the rest of its batch, so the scores do not depend on the number of processes, the
mesh, the batch size or the batching.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import jax
import numpy as np
from jax.sharding import Mesh
from PIL import Image

from basque_vlm.eval.taskdata import decode_image
from basque_vlm.eval.tasks import Sample, Task
from basque_vlm.infer import decode, placement
from basque_vlm.infer.engine import BATCHING, Engine, Request
from basque_vlm.infer.prompts import chat_inputs
from basque_vlm.model.vlm import VLM
from basque_vlm.store import checkpoint

# What answers a task's prompts: (prompts, image loaders (None: text only), max_new_tokens,
# progress) → one answer each. `Generator` (a checkpoint) or `api_model.ApiGenerator`.
Answerer = Callable[[Sequence[str], Sequence[Callable[[], Image.Image] | None], int,
                     Callable[[int], None] | None], list[str]]


class Generator:
    """Greedy answers of a checkpoint (or a training workdir: its latest step; either may be on
    ``gs://``), or of a model in memory (`from_model`: the trainer's scheduled evaluation),
    decoded on a device mesh over every process (`infer.engine`): every process answers every
    prompt together (``spans_processes``)."""

    spans_processes = True

    def __init__(self, ckpt: str | Path, batch_size: int, param_dtype: str | None = None, *,
                 mesh: Mesh | None = None, batching: str = "inflight", **overrides: Any):
        """``batch_size`` rows decode at once (the engine's slots); ``param_dtype`` casts the
        weights; ``mesh`` (default: `infer.placement.decode_mesh`'s choice) places them;
        ``batching`` is ``inflight`` or ``static``; ``overrides`` change how the model computes
        (``dtype``, ``scan_layers``: by default `infer.placement.scans_layers`)."""
        cfg = checkpoint.load_config(ckpt, **overrides)  # a clear error before the slow loads
        processor = checkpoint.load_processor(ckpt)
        if mesh is None:
            mesh = placement.decode_mesh(cfg, checkpoint.stored_bytes(ckpt, param_dtype))
        overrides = {"scan_layers": placement.scans_layers(mesh), **overrides}
        cfg, model = checkpoint.load_model(ckpt, param_dtype, mesh, **overrides)
        self._set(model, processor, batch_size, mesh, batching)

    @classmethod
    def from_model(cls, model: VLM, processor: Any, batch_size: int, mesh: Mesh,
                   batching: str = "inflight") -> Generator:
        """Answers of ``model`` (placed on ``mesh``), prompted with ``processor``."""
        generator = cls.__new__(cls)
        generator._set(model, processor, batch_size, mesh, batching)
        return generator

    def _set(self, model: VLM, processor: Any, batch_size: int, mesh: Mesh,
             batching: str) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.cfg, self.batching = model.cfg, batching
        self.model = decode.for_decoding(model, fuse=mesh.shape["tensor"] == 1)
        self.engine = Engine(self.model, mesh, slots=batch_size)

    def __call__(self, prompts: Sequence[str], images: Sequence[Callable[[], Image.Image] | None],
                 max_new_tokens: int, progress: Callable[[int], None] | None = None
                 ) -> list[str]:
        """One answer per prompt. ``images[i]`` loads prompt ``i``'s image (None: text only),
        when its turn comes. ``progress`` gets the count done so far."""
        requests = [self._request(p, image, max_new_tokens) for p, image in zip(prompts, images)]
        rows = self.engine.generate(requests, self.batching, progress)
        return [self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows]

    def _request(self, prompt: str, image: Callable[[], Image.Image] | None,
                 max_new_tokens: int) -> Request:
        if image is None:
            ids = chat_inputs(self.processor, [prompt])["input_ids"][0]
            return Request(ids, max_new_tokens)
        # The placeholder's expansion depends on the processor, not on the image: the ids now,
        # the pixels when the prompt's turn comes.
        ids = chat_inputs(self.processor, [prompt], [_STAND_IN])["input_ids"][0]

        def pixels() -> np.ndarray:
            return np.asarray(self.processor.image_processor(image(), return_tensors="np")
                              ["pixel_values"])

        return Request(ids, max_new_tokens, pixels, images=1)


# Any image: what a prompt's token ids are made with before its own image is decoded.
_STAND_IN = Image.new("RGB", (8, 8))


class Unanswered(str):
    """The empty answer a generator gives for a prompt it could not answer (an API model's
    request that failed after its retries): scored as a wrong answer, and counted in the results
    by ``kind`` (``http 500``, ``timeout``, ...)."""

    kind: str
    detail: str

    def __new__(cls, kind: str, detail: str) -> Self:
        answer = super().__new__(cls, "")
        answer.kind, answer.detail = kind, detail
        return answer


class Progress:
    """``task: done/total samples (rate, ETA)`` lines on stdout, at most every ``seconds``;
    only process 0 prints, extrapolating its own share to all processes unless every process
    works on all samples together (``spans_processes``)."""

    def __init__(self, name: str, total: int, seconds: float = 10.0,
                 spans_processes: bool = False):
        self.name, self.total, self.seconds = name, total, seconds
        self.start = self.last = time.monotonic()
        self.scale = 1 if spans_processes else jax.process_count()
        self.quiet = jax.process_index() != 0

    def __call__(self, local_done: int) -> None:
        now = time.monotonic()
        done = min(self.total, local_done * self.scale)
        if self.quiet or (now - self.last < self.seconds and done < self.total):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate else math.inf
        print(f"{self.name}: {done}/{self.total} samples ({rate:.2f} samples/s, "
              f"ETA {eta:.0f} s)", flush=True)


def load_samples(task: Task, data_dir: Path, limit: int | None) -> tuple[list[Sample], int]:
    """The task's samples (the first ``limit`` it keeps; its data in ``data_dir/<name>`` unless
    it has its own) and how many rows it skipped."""
    samples, skipped = [], 0
    for sample in task.load(task, task.folder(data_dir)):
        if sample is None:
            skipped += 1
            continue
        samples.append(sample)
        if len(samples) == limit:
            break
    if not samples:
        raise ValueError(f"{task.name}: no samples to evaluate"
                         + (f" ({skipped} rows skipped)" if skipped else ""))
    return samples, skipped


def answer(task: Task, samples: Sequence[Sample], generator: Answerer, prompt_lang: str,
           max_new_tokens: int | None = None) -> list[dict[str, Any]]:
    """This process's share of ``samples`` (`share`) answered and scored: one record per
    sample, with its ``index`` in ``samples``."""
    index = share(len(samples), generator)
    mine = [samples[i] for i in index]
    prompts = [task.prompt(s, prompt_lang) for s in mine]
    images = [None if s.image is None else (lambda s=s: decode_image(s.image, s.where))
              for s in mine]
    predictions = generator(prompts, images, max_new_tokens or task.max_new_tokens,
                            Progress(task.name, len(samples),
                                     spans_processes=spans_processes(generator)))
    records = []
    for i, sample, prompt, prediction in zip(index, mine, prompts, predictions):
        record = {"task": task.name, "index": i, "id": sample.id, "prompt": prompt,
                  "prediction": prediction, "references": task.references(sample),
                  "score": None}
        if isinstance(prediction, Unanswered):
            record.update(failed=prediction.kind, failure=prediction.detail)
        if task.score is not None:
            record["score"], extra = task.score(prediction, sample)
            record.update(extra)
        records.append(record)
    return records


def spans_processes(worker: Any) -> bool:
    """Whether ``worker`` (a generator or a judge) runs on every process's devices at once, so
    that every process must give it the same work."""
    return bool(getattr(worker, "spans_processes", False))


def share(count: int, worker: Any = None) -> list[int]:
    """The sample indices this process gives ``worker``: all of them when it spans the
    processes, else every ``process_count``-th from the process's index."""
    if spans_processes(worker):
        return list(range(count))
    return list(range(jax.process_index(), count, jax.process_count()))


def gather(records: list[dict[str, Any]], worker: Any = None) -> list[dict[str, Any]]:
    """Every process's records (those of its `share`), on every process, in ``index`` order."""
    if jax.process_count() > 1 and not spans_processes(worker):
        from jax.experimental import multihost_utils

        data = np.frombuffer(json.dumps(records).encode(), np.uint8)
        sizes = multihost_utils.process_allgather(np.array([data.size], np.int64)).reshape(-1)
        padded = np.zeros(int(sizes.max()), np.uint8)
        padded[:data.size] = data
        every = multihost_utils.process_allgather(padded)
        records = [r for row, size in zip(every, sizes)
                   for r in json.loads(bytes(row[:size]).decode())]
    return sorted(records, key=lambda r: r["index"])


def summarize(task: Task, records: Sequence[dict[str, Any]], skipped: int, prompt_lang: str
              ) -> dict[str, Any]:
    """``{metric: value, "n": count, "prompt": lang}`` (+ ``skipped``, ``unparsed``, and
    ``failed`` with the ``failures`` by kind)."""
    result: dict[str, Any] = {}
    if task.score is not None:
        result[task.metric] = math.fsum(r["score"] for r in records) / len(records)
    result.update(n=len(records), prompt=prompt_lang)
    if skipped:
        result["skipped"] = skipped
    for field in ("choice", "parsed"):  # answers the scorer could not read
        if records and field in records[0]:
            result["unparsed"] = sum(r[field] is None for r in records)
    failed = Counter(r["failed"] for r in records if "failed" in r)
    if failed:
        result.update(failed=sum(failed.values()), failures=dict(sorted(failed.items())))
    return result

