"""Our parameters loaded into transformers' ``LlavaForConditionalGeneration``: the reference
side of a benchmark runs the very same model."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from basque_vlm.hf.shards import write_safetensors
from basque_vlm.hf.writer import llava_config, llava_tensors
from basque_vlm.model.vlm import VLMConfig


def llava(cfg: VLMConfig, params: dict[str, Any], device: str,
          dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Written as our export writes it and read back by ``from_pretrained``, which maps the saved
    tensor names onto the installed transformers' module names."""
    from transformers import LlavaForConditionalGeneration

    with tempfile.TemporaryDirectory() as folder:
        write_safetensors(Path(folder), llava_tensors(cfg, params), max_shard_bytes=2**62)
        (Path(folder) / "config.json").write_text(json.dumps(llava_config(cfg, "float32")))
        return LlavaForConditionalGeneration.from_pretrained(
            folder, dtype=dtype, attn_implementation="sdpa").to(device)
