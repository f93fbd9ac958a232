"""Model shapes the speed benchmarks share, with the batch each is timed on.

``demo`` is configs/demo.py's model; ``100m`` a ~110M-parameter LLaVA (a GPT-2-small-sized Llama
and a small CLIP); ``1b`` a ~1.3B one (Llama-3.2-1B's shapes and a CLIP ViT-B/16), for GPUs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

from basque_vlm.model.vlm import VLMConfig

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Preset:
    model: dict[str, Any]
    rows: int     # batch rows of a training step, one image each
    length: int   # tokens per row, the image's placeholders included


def _demo_model() -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("demo_config", ROOT / "configs" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config().model.to_dict()


def _llava(text: dict[str, Any], vision: dict[str, Any]) -> dict[str, Any]:
    return dict(text=text, vision=dict(kind="clip", **vision), connector="mlp2x_gelu",
                vision_feature_layer=-2, vision_feature_select_strategy="default",
                image_token_id=3, pad_token_id=0, eos_token_ids=(2,))


def get(name: str) -> Preset:
    if name == "demo":
        return Preset(_demo_model(), rows=64, length=50)  # its batch and longest bucket
    if name == "100m":
        return Preset(_llava(
            dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_layers=12,
                 num_heads=12, num_kv_heads=4, head_dim=64, tie_word_embeddings=False),
            dict(hidden_size=384, intermediate_size=1536, num_layers=6, num_heads=6,
                 image_size=112, patch_size=14)), rows=8, length=256)
    if name == "1b":
        return Preset(_llava(
            dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16,
                 num_heads=32, num_kv_heads=8, head_dim=64, rope_theta=500000.0,
                 tie_word_embeddings=True),
            dict(hidden_size=768, intermediate_size=3072, num_layers=12, num_heads=12,
                 image_size=224, patch_size=16)), rows=4, length=2048)
    raise ValueError(f"unknown preset {name!r}: demo, 100m or 1b")


def config(preset: Preset, **compute: Any) -> VLMConfig:
    """The preset's model with ``compute`` overrides (dtype, scan_layers, remat, ...)."""
    return VLMConfig.from_dict(preset.model, **compute)
