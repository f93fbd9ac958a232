"""Chat prompts → left-padded model inputs, rendered with the checkpoint's own chat template."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def chat_inputs(processor: Any, prompts: Sequence[str],
                images: Sequence[Any] | None = None) -> dict[str, np.ndarray]:
    """One user message per prompt, with the generation prompt added, left-padded.

    ``processor`` is a transformers processor (needed with ``images``: one PIL image per prompt,
    placed before the text and expanded to the image's feature count by the processor) or a
    tokenizer. Returns ``input_ids``, ``attention_mask`` (and ``pixel_values``) as numpy arrays.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    rows, pixels = [], []
    if images is None:
        for prompt in prompts:
            rows.append(tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True,
                tokenize=True, return_dict=True)["input_ids"])
    else:
        if len(images) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} images")
        for prompt, image in zip(prompts, images):
            content = [{"type": "image"}, {"type": "text", "text": prompt}]
            out = processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True,
                tokenize=True, return_dict=True, return_tensors="np",
                processor_kwargs={"images": [image]})
            rows.append(out["input_ids"][0].tolist())
            pixels.append(out["pixel_values"])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (
        tokenizer.eos_token_id)
    input_ids, attention_mask = left_padded(rows, pad_id)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if images is not None:
        inputs["pixel_values"] = np.concatenate(pixels)
    return inputs


def left_padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token rows as ``input_ids`` and ``attention_mask`` ``[B, T]``, padded on the left."""
    length = max(len(r) for r in rows)
    input_ids = np.full((len(rows), length), pad_id, np.int64)
    attention_mask = np.zeros((len(rows), length), np.int64)
    for i, row in enumerate(rows):
        input_ids[i, length - len(row):] = row
        attention_mask[i, length - len(row):] = 1
    return input_ids, attention_mask


def conversation_inputs(processor: Any, messages: Sequence[dict],
                        images: Sequence[Any] = ()) -> dict[str, np.ndarray]:
    """One multi-turn conversation with the generation prompt added, as a batch of one.

    ``messages`` are chat-template messages (``{"role", "content"}``; content a string, or a list
    of ``{"type": "text", "text": ...}`` and ``{"type": "image"}`` items); ``images`` are the PIL
    images of the image items, in order, and need a processor (each placeholder is expanded to
    the image's feature count). Returns ``input_ids``, ``attention_mask`` (and ``pixel_values``).
    """
    items = sum(1 for m in messages if not isinstance(m["content"], str)
                for c in m["content"] if c.get("type") == "image")
    if items != len(images):
        raise ValueError(f"the messages have {items} image items but {len(images)} images")
    if images:
        out = processor.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=True, return_dict=True,
            return_tensors="np", processor_kwargs={"images": list(images)})
        ids = np.asarray(out["input_ids"], np.int64)
        return {"input_ids": ids, "attention_mask": np.ones_like(ids),
                "pixel_values": out["pixel_values"]}
    tokenizer = getattr(processor, "tokenizer", processor)
    row = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True,
                                        tokenize=True, return_dict=True)["input_ids"]
    ids = np.asarray([row], np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}
