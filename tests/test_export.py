"""`export`: checkpoint → a Hugging Face LLaVA folder that transformers loads, same logits."""

from __future__ import annotations

import json

import jax
import numpy as np
import parity
import pytest
import run_cli
import torch
from safetensors.numpy import load_file

from basque_vlm.hf import importer, writer
from basque_vlm.store import checkpoint
from basque_vlm.testing import checkpoints, tiny_models


def load_hf(folder):
    """transformers' model and processor of ``folder``; every weight must match a parameter."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model, info = LlavaForConditionalGeneration.from_pretrained(
        folder, dtype=torch.float32, output_loading_info=True)
    assert not any(info.values()), info
    return model.eval(), AutoProcessor.from_pretrained(folder)


def image_inputs(processor, n: int = 1):
    return processor(images=parity.images(n), text=parity.prompt(processor, "Zer da hau?", n),
                     return_tensors="pt")


@pytest.mark.parametrize("kind,strategy", [("clip", "default"), ("siglip", "full")])
def test_hf_checkpoint_hf_round_trip(kind, strategy, tmp_path):
    source, source_processor = tiny_models.save_llava(tmp_path / "hf", kind, strategy)
    ckpt = checkpoints.from_llava(tmp_path / "hf", tmp_path / "ckpt")
    writer.export_checkpoint(ckpt, tmp_path / "out", max_shard_bytes=10**9)
    exported, processor = load_hf(tmp_path / "out")

    inputs = image_inputs(processor, 2)
    expected = image_inputs(source_processor, 2)
    for key in ("input_ids", "pixel_values"):
        torch.testing.assert_close(inputs[key], expected[key], rtol=0, atol=0)
    parity.assert_close(parity.hf_logits(exported, **inputs), parity.hf_logits(source, **inputs))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["projector_hidden_act"] == "gelu"
    assert config["vision_feature_select_strategy"] == strategy


def test_linear_connector_export_and_reimport(tmp_path):
    """A tied-embedding LLM assembled with a linear connector: exported through the CLI (sharded),
    transformers gives our logits, and converting the export back gives a linear connector."""
    tiny_models.save_llama(tmp_path / "llm", tie_word_embeddings=True)
    ckpt = checkpoints.assembled(tmp_path / "llm", tmp_path / "ckpt", "clip", "linear")
    out = tmp_path / "out"
    result = run_cli.run("export", f"--checkpoint={ckpt}", f"--out={out}",
                         "--max_shard_size=100KB")
    run_cli.assert_ok(result)
    assert "identity" in result.stdout and "linear_2" in result.stdout
    assert (out / "model.safetensors.index.json").is_file()

    exported, processor = load_hf(out)
    inputs = image_inputs(processor)
    _, ours = checkpoint.load_model(ckpt)
    parity.assert_close(parity.our_logits(ours, inputs["input_ids"],
                                          pixel_values=inputs["pixel_values"]),
                        parity.hf_logits(exported, **inputs))

    weights = {}
    for shard in out.glob("model-*.safetensors"):
        weights.update(load_file(shard))
    np.testing.assert_array_equal(weights["multi_modal_projector.linear_2.weight"],
                                  np.eye(exported.config.text_config.hidden_size))
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tiny_models.tokenizer().eos_token_id
    cfg, params = importer.import_llava(out, None)
    assert cfg.connector == "linear"
    assert cfg == checkpoint.load_config(ckpt)
    jax.tree.map(np.testing.assert_array_equal, params, checkpoint.load_params(ckpt))


def test_export_refuses_a_non_empty_out(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    results = run_cli.run_all("export", [[f"--checkpoint={tmp_path}", f"--out={tmp_path}/o"],
                                         [f"--checkpoint={tmp_path}", f"--out={tmp_path}/out"]])
    run_cli.assert_one_line_error(results[0], "export", "not a basque_vlm checkpoint")
    run_cli.assert_one_line_error(results[1], "export", "already exists")


@pytest.mark.slow
def test_smollm2_assembled_export_matches_our_logits(smollm2_dir, tmp_path):
    """The real SmolLM2-135M-Instruct (tied embeddings, its own tokenizer and chat template, a
    vocabulary grown for ``<image>``) with a tiny CLIP tower."""
    ckpt = checkpoints.assembled(smollm2_dir, tmp_path / "ckpt", "clip", "mlp2x_gelu")
    writer.export_checkpoint(ckpt, tmp_path / "out", max_shard_bytes=10**9)
    exported, processor = load_hf(tmp_path / "out")
    inputs = image_inputs(processor)
    _, ours = checkpoint.load_model(ckpt)
    # 30 float32 layers: logits of magnitude ~40 agree to ~1e-5 relative (as text-only SmolLM2).
    parity.assert_close(parity.our_logits(ours, inputs["input_ids"],
                                          pixel_values=inputs["pixel_values"]),
                        parity.hf_logits(exported, **inputs), atol=5e-4)
