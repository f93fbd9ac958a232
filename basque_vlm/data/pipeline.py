"""The training input pipeline: mixture → global batches → this process's rows, rendered, padded.

Determinism. Global batch ``s`` is positions ``[s*B, (s+1)*B)`` of the mixed stream (``mixture``),
a pure function of the config and ``s``. Every process renders the text of the whole global batch
(cheap: it fixes the padded length, the same on every process) and decodes the images of its own
rows only: rows ``[p*B/P, (p+1)*B/P)`` for process ``p`` of ``P``. So the global batch at a step is
the same whatever the number of processes, devices or Grain workers, and the iterator state is just
the next step (restoring rebuilds the pipeline from there).

A batch (numpy, this process's ``b = B/P`` rows; ``M = data.max_images`` image slots per row)::

    input_ids, targets, loss_mask, attention_mask   int32 [b, L]  (``chat.collate``: same-position
                                                    labels, pads masked; L = a length bucket)
    num_images                                      int32 [b]
    pixel_values                                    float32 [b*M, C, H, W]
    image_mask                                      int32 [b*M]: 1 for a real image, 0 for padding
    language, source, dropped                       str [b]: metadata, not for the device

Image contract: the ``k``-th image span (``tokens_per_image`` consecutive image tokens) of row ``r``
is ``pixel_values[r*M + k]``; slots past ``num_images[r]`` are zeros. Slots are tied to rows, so
sharding ``pixel_values`` along its first axis like the rows keeps each row's images with it.
A row whose sample cannot be used (too long, no supervised token, more images than ``M``, an
unreadable image) is all padding (``attention_mask`` and ``loss_mask`` 0) and ``dropped`` names why.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

from basque_vlm.data import mixture
from basque_vlm.data.chat import ChatRenderer, Example, collate
from basque_vlm.data.conversation import IMAGE_PLACEHOLDER
from basque_vlm.data.errors import DataError, ErrorKind
from basque_vlm.data.image import ImageSpec, open_image, preprocess
from basque_vlm.runtime import paths

STATE_VERSION = 1
# transformers' lazy imports are not thread-safe, and a fast tokenizer's settings are shared state:
# Grain's reader threads load and use a MakeBatch's renderer under this lock.
_RENDER_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """How to turn a global batch of ``mixture.Record``s into this process's numpy batch."""

    tokenizer_dir: str
    tokens_per_image: int
    max_length: int
    buckets: tuple[int, ...]
    max_images: int
    image_spec: ImageSpec
    image_shape: tuple[int, int, int]
    process_index: int
    process_count: int


class MakeBatch:
    """``BatchSpec`` as a picklable callable; the tokenizer is loaded on first use, in the process
    (Grain worker) that uses it."""

    def __init__(self, spec: BatchSpec):
        self.spec = spec
        self._renderer: ChatRenderer | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_renderer": None}

    @property
    def renderer(self) -> ChatRenderer:
        """Call under ``_RENDER_LOCK``."""
        if self._renderer is None:
            self._renderer = load_renderer(self.spec.tokenizer_dir, self.spec.tokens_per_image,
                                           self.spec.max_length)
        return self._renderer

    def __call__(self, records: Sequence[mixture.Record]) -> dict[str, np.ndarray]:
        spec, slots = self.spec, self.spec.max_images
        with _RENDER_LOCK:
            rendered = [self._render(r) for r in records]
            pad_id = self.renderer.pad_id
        length = bucket_length([len(e.input_ids) for e in rendered if isinstance(e, Example)],
                               spec.buckets)
        rows = len(records) // spec.process_count
        local = list(zip(records, rendered))[spec.process_index * rows:][:rows]
        pixel_values = np.zeros((rows, slots, *spec.image_shape), np.float32)
        examples, dropped = [], []
        for row, (record, example) in enumerate(local):
            if isinstance(example, Example):
                example = self._load_images(record, example, pixel_values[row])
            dropped.append(example.kind.value if isinstance(example, DataError) else "")
            examples.append(_empty(record) if isinstance(example, DataError) else example)
        batch = collate(examples, length, pad_id)
        used = np.arange(slots)[None, :] < batch["num_images"][:, None]
        return batch | {
            "pixel_values": pixel_values.reshape(rows * slots, *spec.image_shape),
            "image_mask": used.reshape(-1).astype(np.int32),
            "language": np.asarray([r.conversation.lang or "" for r, _ in local], np.str_),
            "source": np.asarray([r.source for r, _ in local], np.str_),
            "dropped": np.asarray(dropped, np.str_),
        }

    def _load_images(self, record: mixture.Record, example: Example, slots: np.ndarray
                     ) -> Example | DataError:
        """Preprocesses the example's images into its row's ``slots`` (zeroed if one fails)."""
        try:
            for k, data in enumerate(record.images[:example.num_images]):
                slots[k] = preprocess(open_image(data), self.spec.image_spec)
        except Exception as e:  # PIL raises many types for corrupt data
            slots[:] = 0
            return DataError(ErrorKind.BAD_IMAGE, f"unreadable image: {type(e).__name__}: {e}",
                             record_id=record.conversation.id)
        return example

    def _render(self, record: mixture.Record) -> Example | DataError:
        conv = record.conversation
        try:
            example = self.renderer.render(conv)
        except DataError as e:
            return e
        if example.num_images > self.spec.max_images:
            return DataError(ErrorKind.IMAGE_COUNT, f"{example.num_images} images, more than "
                             f"data.max_images={self.spec.max_images}", record_id=conv.id)
        return example


def load_renderer(tokenizer_dir: str, tokens_per_image: int, max_length: int) -> ChatRenderer:
    """A ``ChatRenderer`` for the tokenizer (and its chat template) saved in ``tokenizer_dir``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    return ChatRenderer(tokenizer, image_token_id, tokens_per_image, max_length)


def bucket_length(lengths: Sequence[int], buckets: Sequence[int]) -> int:
    """The smallest bucket that holds the longest sequence (the smallest for an empty batch)."""
    longest = max(lengths, default=0)
    return next(b for b in buckets if b >= longest)


def _empty(record: mixture.Record) -> Example:
    none = np.zeros(0, np.int32)
    return Example(none, none, none, 0, record.conversation.lang)


class Pipeline:
    """An iterator of this process's batches, with a JSON-serialisable state.

    ``get_state()`` → ``{"next_step": s, ...}``; ``set_state`` restarts so that the next batch is
    global batch ``s``. Background work: ``num_workers`` Grain worker processes (0: none), each
    with ``num_threads`` threads and a buffer of ``prefetch`` batches.
    """

    def __init__(self, batches: grain.MapDataset, *, seed: int, global_batch_size: int,
                 num_workers: int, num_threads: int, prefetch: int,
                 source_kinds: Mapping[str, str]):
        self._batches = batches
        self.seed = seed
        self.global_batch_size = global_batch_size
        self.num_workers, self.num_threads, self.prefetch = num_workers, num_threads, prefetch
        self.source_kinds = dict(source_kinds)
        self._step = 0
        self._iterator = None

    def __iter__(self) -> Pipeline:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = iter(self._dataset(self._step))
        batch = next(self._iterator)
        self._step += 1
        return batch

    def get_state(self) -> dict[str, int]:
        return {"version": STATE_VERSION, "next_step": self._step, "seed": self.seed,
                "global_batch_size": self.global_batch_size}

    def set_state(self, state: Mapping[str, Any]) -> None:
        for key in ("seed", "global_batch_size"):
            if state.get(key) != getattr(self, key):
                raise ValueError(f"the data iterator state was saved with {key}="
                                 f"{state.get(key)}, but data.{key} is {getattr(self, key)}")
        self.close()
        self._step = int(state["next_step"])

    def close(self) -> None:
        if self._iterator is not None and hasattr(self._iterator, "close"):
            self._iterator.close()
        self._iterator = None

    def _dataset(self, start: int) -> grain.IterDataset:
        options = grain.ReadOptions(num_threads=self.num_threads,
                                    prefetch_buffer_size=self.prefetch)
        ds = self._batches[start:].to_iter_dataset(options)
        if self.num_workers > 0:
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self.num_workers, per_worker_buffer_size=self.prefetch))
        return ds


def build(data: Mapping[str, Any], process_index: int = 0, process_count: int = 1) -> Pipeline:
    """The pipeline of ``data`` (the config's ``data`` section) for one process of
    ``process_count``, after ``data.builder`` has made the data (`make_data`)."""
    make_data(data)
    global_batch = int(data["global_batch_size"])
    if not 0 <= process_index < process_count or global_batch % process_count:
        raise ValueError(f"data.global_batch_size={global_batch} must divide over "
                         f"{process_count} processes (process index {process_index})")
    plan = mixture.plan(data)
    seed = int(data.get("seed", 0))
    spec = batch_spec(data, process_index, process_count)
    batches = mixture.dataset(plan, seed).batch(global_batch, batch_fn=list).map(MakeBatch(spec))
    return Pipeline(batches, seed=seed, global_batch_size=global_batch,
                    num_workers=int(data.get("num_workers", 0)),
                    num_threads=int(data.get("num_threads", 1)),
                    prefetch=int(data.get("prefetch", 2)), source_kinds=plan.source_kinds)


def make_data(data: Mapping[str, Any]) -> None:
    """Calls ``data.builder``, when set: ``"module:function"``, a function of the data root that
    writes the datasets (and tokenizer) under it when they are not there yet — a dataset that
    builds itself on first use, as ``tfds.load`` does (``configs/demo.py`` generates the demo
    data so). Every process calls it: it must be idempotent and safe when processes race."""
    builder = data.get("builder")
    if not builder:
        return
    module, _, function = str(builder).partition(":")
    try:
        make = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"data.builder={builder!r}: not an importable module:function ({e})"
                         ) from None
    make(data["root"])


def images_per_row(data: Mapping[str, Any]) -> int:
    """``data.max_images``: the image slots of a row (default 1)."""
    return int(data.get("max_images", 1))


def batch_spec(data: Mapping[str, Any], process_index: int = 0, process_count: int = 1
               ) -> BatchSpec:
    max_length = int(data["max_length"])
    buckets = tuple(sorted({int(b) for b in data.get("length_buckets") or ()
                            if int(b) < max_length} | {max_length}))
    # A local folder (from_pretrained reads no gs://): a remote one is copied to a temporary one.
    tokenizer_dir = paths.local_copy(mixture.resolve(data, data["tokenizer"]))
    image_spec = ImageSpec.from_folder(tokenizer_dir, data.get("pad_to_square"))
    size = image_spec.crop or image_spec.resize_to
    if size is None:
        raise ValueError(f"data.tokenizer: the image processor in {tokenizer_dir} does not give "
                         "a fixed image size (no centre crop and no fixed height × width)")
    return BatchSpec(tokenizer_dir=str(tokenizer_dir),
                     tokens_per_image=int(data["tokens_per_image"]), max_length=max_length,
                     buckets=buckets, max_images=images_per_row(data),
                     image_spec=image_spec, image_shape=(3, *size),
                     process_index=process_index, process_count=process_count)
