"""`python -m basque_vlm.convert`: both modes, dtypes, tokenizer kinds, sharded input, bad input."""

from __future__ import annotations

import io
import json
import shutil

import jax
import numpy as np
import pytest
import run_cli
import sentencepiece as spm
import torch
from safetensors.numpy import load_file, save_file

from basque_vlm.hf import importer
from basque_vlm.store import checkpoint
from basque_vlm.testing import tiny_models

SP_VOCAB = 400


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("llava")
    tiny_models.save_llava(out, "clip", "default")
    return out


@pytest.fixture(scope="module")
def vision_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("siglip")
    tiny_models.save_vision(out, "siglip")
    return out


def dtypes(ckpt) -> set[str]:
    return {str(a.dtype) for a in jax.tree.leaves(checkpoint.load_params(ckpt))}


def test_hf_dir_keeps_float32_and_the_processor(llava_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    result = run_cli.run("convert", f"--hf_dir={llava_dir}", f"--out={ckpt}")
    run_cli.assert_ok(result)
    assert "reading the language model" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith(f"convert: wrote {ckpt}: ")
    assert dtypes(ckpt) == {"float32"}
    cfg, params = importer.import_llava(llava_dir, None)
    assert checkpoint.load_config(ckpt) == cfg
    jax.tree.map(np.testing.assert_array_equal, checkpoint.load_params(ckpt), params)
    processor = importer.load_processor(ckpt)
    assert processor.chat_template == importer.load_processor(llava_dir).chat_template


def test_assemble_bfloat16(tmp_path, vision_dir):
    tiny_models.save_llama(tmp_path / "llm")
    ckpt = tmp_path / "ckpt"
    result = run_cli.run("convert", f"--llm_dir={tmp_path / 'llm'}", f"--vision_dir={vision_dir}",
                         "--projector=mlp2x_gelu", "--dtype=bfloat16", f"--out={ckpt}")
    run_cli.assert_ok(result)
    assert dtypes(ckpt) == {"bfloat16"}
    cfg = checkpoint.load_config(ckpt)
    assert (cfg.connector, cfg.vision.kind, cfg.vision_feature_select_strategy) == (
        "mlp2x_gelu", "siglip", "full")
    processor = importer.load_processor(ckpt)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Zer?"}]}],
        add_generation_prompt=True)
    ids = processor(images=np.zeros((28, 28, 3), np.uint8), text=text)["input_ids"][0]
    assert ids.count(cfg.image_token_id) == cfg.tokens_per_image


def save_llama2_style_llm(out) -> torch.nn.Module:
    """A Llama-2-era LLM folder: sharded safetensors with an index, and a SentencePiece
    ``tokenizer.model`` for ``LlamaTokenizer`` whose vocabulary is exactly the model's (so that
    ``<image>`` grows it)."""
    from transformers import LlamaForCausalLM

    sp_model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_models.CORPUS), model_writer=sp_model, vocab_size=SP_VOCAB,
        model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, byte_fallback=True,
        character_coverage=1.0, minloglevel=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_models.llama_config(SP_VOCAB)).eval()
    model.save_pretrained(out, max_shard_size="100KB")
    (out / "tokenizer.model").write_bytes(sp_model.getvalue())
    template = tiny_models.CHAT_TEMPLATE.replace("<|begin|>", "<s>").replace("<|end|>", "</s>")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "add_bos_token": True, "legacy": False,
        "chat_template": template}))
    return model


def test_sentencepiece_tokenizer_and_sharded_weights(tmp_path, vision_dir):
    from transformers import AutoTokenizer

    llm = tmp_path / "llm"
    model = save_llama2_style_llm(llm)
    assert len(list(llm.glob("model-*.safetensors"))) > 1
    assert (llm / "model.safetensors.index.json").is_file()
    ckpt = tmp_path / "ckpt"
    run_cli.assert_ok(run_cli.run("convert", f"--llm_dir={llm}", f"--vision_dir={vision_dir}",
                                  "--projector=linear", f"--out={ckpt}"))

    source, ours = AutoTokenizer.from_pretrained(llm), AutoTokenizer.from_pretrained(ckpt)
    for text in tiny_models.CORPUS[:4] + ["Ñandú €5 — zer?\nBai."]:
        assert ours(text)["input_ids"] == source(text)["input_ids"]
    cfg = checkpoint.load_config(ckpt)
    assert cfg.image_token_id == SP_VOCAB == ours.convert_tokens_to_ids("<image>")
    assert cfg.text.vocab_size == 448  # grown to a multiple of 64

    expected = {k: v.numpy() for k, v in model.state_dict().items()}
    params = checkpoint.load_params(ckpt)["language_model"]
    embed = params["embed_tokens"]
    np.testing.assert_array_equal(embed[:SP_VOCAB], expected["model.embed_tokens.weight"])
    np.testing.assert_allclose(embed[SP_VOCAB:], np.broadcast_to(
        embed[:SP_VOCAB].mean(0), (448 - SP_VOCAB, embed.shape[1])), rtol=1e-6)
    np.testing.assert_array_equal(params["layers"]["mlp"]["down_proj"]["kernel"][2],
                                  expected["model.layers.2.mlp.down_proj.weight"].T)


def _break(llava_dir, out, how: str) -> str:
    """A copy of ``llava_dir`` broken in one way; returns what the error must name."""
    shutil.copytree(llava_dir, out)
    weights = out / "model.safetensors"
    tensors = load_file(weights)
    name = next(k for k in tensors if k.endswith("layers.1.mlp.up_proj.weight"))
    if how == "missing_tensor":
        del tensors[name]
    elif how == "wrong_shape":
        tensors[name] = tensors[name][:, :-1].copy()
    elif how == "pickle_only":
        weights.unlink()
        (out / "pytorch_model.bin").write_bytes(b"never unpickled")
        return "pytorch_model.bin"
    elif how == "unknown_model_type":
        config = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**config, "model_type": "qwen2_vl"}))
        return "qwen2_vl"
    save_file(tensors, weights, metadata={"format": "pt"})
    return name


BROKEN = ["missing_tensor", "wrong_shape", "pickle_only", "unknown_model_type"]


def test_bad_checkpoints_fail_in_one_line(llava_dir, tmp_path):
    needles = [_break(llava_dir, tmp_path / how, how) for how in BROKEN]
    results = run_cli.run_all("convert", [[f"--hf_dir={tmp_path / how}",
                                           f"--out={tmp_path / how}.ckpt"] for how in BROKEN])
    for how, needle, result in zip(BROKEN, needles, results):
        line = run_cli.assert_one_line_error(result, "convert", needle)
        assert not (tmp_path / f"{how}.ckpt").exists(), line
    assert "shape" in results[1].stderr and "missing tensor" in results[0].stderr


def test_bad_flags_fail_in_one_line(llava_dir, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    cases = {
        "cannot be combined": [f"--hf_dir={llava_dir}", "--llm_dir=x", f"--out={tmp_path}/a"],
        "also needs --projector": ["--llm_dir=x", "--vision_dir=y", f"--out={tmp_path}/a"],
        "--dtype must be one of": [f"--hf_dir={llava_dir}", "--dtype=float16",
                                   f"--out={tmp_path}/a"],
        "already exists and is not empty": [f"--hf_dir={llava_dir}", f"--out={tmp_path}/full"],
        "not a directory": [f"--hf_dir={tmp_path}/nowhere", f"--out={tmp_path}/a"],
    }
    for needle, result in zip(cases, run_cli.run_all("convert", list(cases.values()))):
        run_cli.assert_one_line_error(result, "convert", needle)
