"""Project checkpoints built from Hugging Face folders for the tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import tiny_models
from safetensors.numpy import load_file, save_file

from basque_vlm import checkpoint
from basque_vlm.hf import importer


def from_llava(hf_dir: Path, out: Path) -> Path:
    """A checkpoint of a LLaVA folder (e.g. `tiny_models.save_llava`), with its processor files."""
    cfg, params = importer.import_llava(hf_dir, None)
    checkpoint.save(out, cfg, params)
    importer.copy_assets(hf_dir, out)
    return out


def assembled(llm_dir: Path, out: Path, vision_kind: str = "clip",
              projector: str = "linear") -> Path:
    """A checkpoint of ``llm_dir`` assembled with a tiny random vision tower."""
    vision_dir = out.parent / f"{out.name}.vision"
    tiny_models.save_vision(vision_dir, vision_kind)
    _prefix_vision_weights(vision_dir)
    cfg, params, processor = importer.assemble(llm_dir, vision_dir, projector, None)
    checkpoint.save(out, cfg, params)
    processor.save_pretrained(out)
    return out


def _prefix_vision_weights(vision_dir: Path) -> None:
    # transformers 5 saves a bare CLIPVisionModel/SiglipVisionModel without the `vision_model.`
    # prefix, which the importer does not look for yet.
    path = vision_dir / "model.safetensors"
    tensors = load_file(path)
    if not any(k.startswith("vision_model.") for k in tensors):
        save_file({f"vision_model.{k}": v for k, v in tensors.items()}, path,
                  metadata={"format": "pt"})
