"""Comparing our logits with transformers' on the same inputs."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch
from PIL import Image

ATOL = 1e-4


def images(n: int, seed: int = 0) -> list[Image.Image]:
    """Random RGB images of assorted sizes (the processor resizes them)."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (30 + 7 * i, 40 - 3 * i, 3), dtype=np.uint8))
            for i in range(n)]


def prompt(processor, question: str, num_images: int) -> str:
    content = [{"type": "image"}] * num_images + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}],
                                         add_generation_prompt=True)


def hf_logits(model, **inputs) -> np.ndarray:
    with torch.no_grad():
        return model(**inputs).logits.float().numpy()


def our_logits(model, input_ids, attention_mask=None, pixel_values=None) -> np.ndarray:
    def j(x):
        return None if x is None else jnp.asarray(np.asarray(x))
    return np.asarray(model(j(input_ids), j(pixel_values), j(attention_mask)))


def assert_close(ours: np.ndarray, ref: np.ndarray, mask=None, atol: float = ATOL) -> None:
    """``mask [B, T]`` picks the positions to compare (padding's logits are not meaningful)."""
    ours = ours[..., :ref.shape[-1]]  # a grown vocabulary adds rows that the source lacks
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    keep = np.ones(ref.shape[:-1], bool) if mask is None else np.asarray(mask).astype(bool)
    diff = np.abs(ours - ref)[keep].max()
    assert diff <= atol, f"max |Δ| = {diff:.3g} > {atol}"
