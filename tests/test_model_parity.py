"""Our logits agree with transformers' (float32, max |Δ| ≤ 1e-4) on tiny random models."""

from __future__ import annotations

import jax
import numpy as np
import parity
import pytest
from safetensors.numpy import load_file, save_file

from basque_vlm.hf import importer
from basque_vlm.store import checkpoint
from basque_vlm.testing import tiny_models

LLAMA_CASES = {
    "llama3-gqa-untied": {},
    "llama3-gqa-tied": {"tie_word_embeddings": True},
    "linear-attention_bias": {"rope_parameters": {"rope_type": "linear", "factor": 2.0,
                                                  "rope_theta": 10000.0},
                              "attention_bias": True},
    "default-mlp_bias-mha": {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
                             "mlp_bias": True, "num_key_value_heads": 4},
}
TEXTS = ["Zer dago irudian? Katu bat dago mahai gainean.", "Hi"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip")
    tiny_models.save_vision(out, "clip")
    return out


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("llava")
    tiny_models.save_llava(out, "clip", "default")
    return out


def left_padded(processor_or_tokenizer, **kw):
    """A left-padded batch and the position ids our model derives from its mask."""
    batch = processor_or_tokenizer(padding=True, padding_side="left", return_tensors="pt", **kw)
    mask = batch["attention_mask"]
    return batch, (mask.cumsum(-1) - 1).clamp(min=0)


@pytest.mark.parametrize("case", LLAMA_CASES)
def test_llama_text_logits(case, tmp_path, clip_dir):
    hf, tok = tiny_models.save_llama(tmp_path, **LLAMA_CASES[case])
    cfg, params, _ = importer.assemble(tmp_path, clip_dir, "linear", None)
    batch, positions = left_padded(tok, text=TEXTS)
    ref = parity.hf_logits(hf, position_ids=positions, **batch)
    ours = parity.our_logits(checkpoint.build_model(cfg, params), batch["input_ids"],
                             batch["attention_mask"])
    parity.assert_close(ours, ref, batch["attention_mask"])


def _imported(hf_dir):
    cfg, params = importer.import_llava(hf_dir, None)
    return cfg, checkpoint.build_model(cfg, params)


@pytest.mark.parametrize("kind,strategy,layer", [("clip", "default", -2), ("siglip", "full", -2),
                                                 ("clip", "default", [-2, -1])])
def test_llava_one_image(kind, strategy, layer, tmp_path):
    hf, processor = tiny_models.save_llava(tmp_path, kind, strategy, layer)
    cfg, model = _imported(tmp_path)
    assert cfg.vision_feature_layer == (tuple(layer) if isinstance(layer, list) else layer)
    inputs = processor(images=parity.images(1), text=parity.prompt(processor, "Zer da?", 1),
                       return_tensors="pt")
    assert int((inputs["input_ids"] == cfg.image_token_id).sum()) == cfg.tokens_per_image
    parity.assert_close(parity.our_logits(model, inputs["input_ids"],
                                          pixel_values=inputs["pixel_values"]),
                        parity.hf_logits(hf, **inputs))


def test_llava_several_images_and_a_batch(tmp_path):
    """Two images in one prompt, and a left-padded batch of two prompts holding three images."""
    hf, processor = tiny_models.save_llava(tmp_path, "clip", "default")
    _, model = _imported(tmp_path)
    texts = [parity.prompt(processor, "Compare them.", 2), parity.prompt(processor, "Zer?", 1)]
    for rows in ([0], [0, 1]):
        n = 2 if rows == [0] else 3
        batch, positions = left_padded(processor, images=parity.images(n),
                                       text=[texts[r] for r in rows])
        ref = parity.hf_logits(hf, position_ids=positions, **batch)
        ours = parity.our_logits(model, batch["input_ids"], batch["attention_mask"],
                                 batch["pixel_values"])
        parity.assert_close(ours, ref, batch["attention_mask"])


def test_placeholder_feature_mismatch_names_both_counts(llava_dir):
    cfg, model = _imported(llava_dir)
    processor = importer.load_processor(llava_dir)
    inputs = processor(images=parity.images(1), text=parity.prompt(processor, "Zer?", 1),
                       return_tensors="np")
    two_images = np.concatenate([inputs["pixel_values"]] * 2)
    n = cfg.tokens_per_image
    with pytest.raises(ValueError, match=f"has {n} image tokens but 2 image.* {2 * n} features"):
        parity.our_logits(model, inputs["input_ids"], pixel_values=two_images)


LAYOUTS = {  # where transformers v5 and v4 (and the llava-hf checkpoints) put each part
    "v5": {"llm": "model.language_model.", "head": "lm_head.",
           "vision": "model.vision_tower.vision_model.",
           "projector": "model.multi_modal_projector."},
    "v4": {"llm": "language_model.model.", "head": "language_model.lm_head.",
           "vision": "vision_tower.vision_model.", "projector": "multi_modal_projector."},
}
LAYOUTS["v5_no_vision_model"] = {**LAYOUTS["v5"], "vision": "model.vision_tower."}
LAYOUTS["v4_no_vision_model"] = {**LAYOUTS["v4"], "vision": "vision_tower."}


def _relayout(name: str, layout: dict[str, str]) -> str:
    prefixes = sorted({(p, part) for lay in LAYOUTS.values() for part, p in lay.items()},
                      key=lambda c: -len(c[0]))
    for prefix, part in prefixes:
        if name.startswith(prefix):
            return layout[part] + name[len(prefix):]
    raise AssertionError(name)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_key_layouts_import_the_same_parameters(layout, llava_dir, tmp_path):
    tensors = load_file(llava_dir / "model.safetensors")
    renamed = {_relayout(k, LAYOUTS[layout]): v for k, v in tensors.items()}
    assert all(k.startswith(tuple(LAYOUTS[layout].values())) for k in renamed)
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((llava_dir / "config.json").read_text())
    _, expected = importer.import_llava(llava_dir, None)
    _, params = importer.import_llava(tmp_path, None)
    jax.tree.map(np.testing.assert_array_equal, params, expected)
