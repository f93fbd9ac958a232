"""Running a task: batched greedy answers on this process's share of the samples, gathered on
every process in sample order, then scored.

Samples are split across processes by index (process ``i`` of ``P`` takes samples ``i, i+P,
...``). Within a process they are sorted by prompt length and answered in batches of a fixed
size (the last one padded with copies of its first row, so that every batch has the same shape
and compiles once per prompt-length bucket); prompts are left-padded by ``chat_inputs``. A row's
answer does not depend on the rest of its batch, so the scores do not depend on the number of
processes or the batch size.
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
from PIL import Image

from basque_vlm.eval.taskdata import decode_image
from basque_vlm.eval.tasks import Sample, Task
from basque_vlm.infer import decode
from basque_vlm.infer.prompts import chat_inputs
from basque_vlm.store import checkpoint

# What answers a task's prompts: (prompts, image loaders (None: text only), max_new_tokens,
# progress) → one answer each. `Generator` (a checkpoint) or `api_model.ApiGenerator`.
Answerer = Callable[[Sequence[str], Sequence[Callable[[], Image.Image] | None], int,
                     Callable[[int], None] | None], list[str]]


class Generator:
    """Greedy answers of a checkpoint (or a training workdir: its latest step; either may be on
    ``gs://``), or of a model in memory (`from_model`: the trainer's scheduled evaluation)."""

    def __init__(self, ckpt: str | Path, batch_size: int, param_dtype: str | None = None,
                 **overrides: Any):
        """``param_dtype`` casts the weights; ``overrides`` change how the model computes
        (``dtype``, ``scan_layers``)."""
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        checkpoint.load_config(ckpt)  # a clear error before the slow loads
        processor = checkpoint.load_processor(ckpt)
        cfg, model = checkpoint.load_model(ckpt, param_dtype, **overrides)
        self._set(cfg, model, processor, batch_size)

    @classmethod
    def from_model(cls, cfg: Any, model: Any, processor: Any, batch_size: int) -> Generator:
        """Answers of ``model`` (a ``VLM`` of config ``cfg``), prompted with ``processor``."""
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        generator = cls.__new__(cls)
        generator._set(cfg, model, processor, batch_size)
        return generator

    def _set(self, cfg: Any, model: Any, processor: Any, batch_size: int) -> None:
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.cfg, self.model = cfg, decode.for_decoding(model)
        self.batch_size = batch_size

    def __call__(self, prompts: Sequence[str], images: Sequence[Callable[[], Image.Image] | None],
                 max_new_tokens: int, progress: Callable[[int], None] | None = None
                 ) -> list[str]:
        """One answer per prompt. ``images[i]`` loads prompt ``i``'s image (None: text only);
        images are decoded one batch at a time. ``progress`` gets the count done so far."""
        lengths = [len(self.tokenizer(p)["input_ids"]) for p in prompts]
        # Text-only and image prompts never share a batch (chat_inputs takes all or none).
        order = sorted(range(len(prompts)), key=lambda i: (images[i] is None, lengths[i]))
        answers: list[str] = [""] * len(prompts)
        done = 0
        start = 0
        while start < len(order):
            with_image = images[order[start]] is not None
            batch = [i for i in order[start:start + self.batch_size]
                     if (images[i] is not None) == with_image]
            start += len(batch)
            texts = self._answer([prompts[i] for i in batch],
                                 [images[i]() for i in batch] if with_image else None,
                                 max_new_tokens)
            for i, text in zip(batch, texts):
                answers[i] = text
            done += len(batch)
            if progress is not None:
                progress(done)
        return answers

    def _answer(self, prompts: list[str], images: list[Image.Image] | None,
                max_new_tokens: int) -> list[str]:
        inputs = chat_inputs(self.processor, prompts, images)
        extra = self.batch_size - len(prompts)
        if extra:  # same shape for every batch: copies of the first row, dropped below
            inputs = {k: np.concatenate([v, np.repeat(v[:1], extra, axis=0)])
                      for k, v in inputs.items()}
        tokens = decode.generate(self.model, inputs["input_ids"], inputs["attention_mask"],
                                 inputs.get("pixel_values"), max_new_tokens=max_new_tokens)
        rows = decode.trim(tokens[:len(prompts)], self.cfg.eos_token_ids)
        return [self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows]


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
    only process 0 prints, extrapolating its own share to all processes."""

    def __init__(self, name: str, total: int, seconds: float = 10.0):
        self.name, self.total, self.seconds = name, total, seconds
        self.start = self.last = time.monotonic()
        self.scale = jax.process_count()
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
    """This process's share of ``samples`` answered and scored: one record per sample, with
    its ``index`` in ``samples``."""
    index = share(len(samples))
    mine = [samples[i] for i in index]
    prompts = [task.prompt(s, prompt_lang) for s in mine]
    images = [None if s.image is None else (lambda s=s: decode_image(s.image, s.where))
              for s in mine]
    predictions = generator(prompts, images, max_new_tokens or task.max_new_tokens,
                            Progress(task.name, len(samples)))
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


def share(count: int) -> list[int]:
    """The sample indices this process takes: every ``process_count``-th from its index."""
    return list(range(jax.process_index(), count, jax.process_count()))


def gather(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every process's records, on every process, in ``index`` order."""
    if jax.process_count() > 1:
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

