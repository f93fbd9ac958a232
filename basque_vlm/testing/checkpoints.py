"""Project checkpoints built from Hugging Face folders for the tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

from basque_vlm.hf import importer
from basque_vlm.store import checkpoint
from basque_vlm.testing import tiny_models


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
    cfg, params, processor = importer.assemble(llm_dir, vision_dir, projector, None)
    checkpoint.save(out, cfg, params)
    processor.save_pretrained(out)
    return out


def language_model(llm_dir: Path, out: Path) -> Path:
    """A text-only checkpoint of ``llm_dir`` (as ``convert --llm_dir`` alone makes it)."""
    cfg, params, tokenizer = importer.import_llm(llm_dir, None)
    checkpoint.save(out, cfg, params)
    tokenizer.save_pretrained(out)
    return out
