"""The `generate` CLI end to end, and greedy answers of the real SmolLM2 weights."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, LlamaForCausalLM

from basque_vlm.infer import decode
from basque_vlm.infer.prompts import chat_inputs
from basque_vlm.store import checkpoint
from basque_vlm.testing import checkpoints, tiny_models

NEW = 8


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "basque_vlm.generate", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    torch_model, processor = tiny_models.save_llava(root / "hf", "clip", "default")
    return torch_model, processor, checkpoints.from_llava(root / "hf", root / "ckpt")


def transformers_greedy(torch_model, inputs: dict, eos_ids) -> list[int]:
    pt = {k: torch.from_numpy(v) for k, v in inputs.items()}
    with torch.no_grad():
        out = torch_model.generate(**pt, do_sample=False, max_new_tokens=NEW)
    return decode.trim(out[:, inputs["input_ids"].shape[1]:].numpy(), eos_ids)[0]


def test_cli_with_image_matches_transformers(llava, tmp_path):
    torch_model, processor, ckpt = llava
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 45, 3), np.uint8))
    image.save(tmp_path / "cat.png")
    out = tmp_path / "out.json"
    proc = run_cli(f"--checkpoint={ckpt}", "--prompt=Zer dago irudian?",
                   f"--image={tmp_path / 'cat.png'}", f"--max_new_tokens={NEW}",
                   f"--output_json={out}")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    inputs = chat_inputs(processor, ["Zer dago irudian?"], [Image.open(tmp_path / "cat.png")])
    eos = checkpoint.load_config(ckpt).eos_token_ids
    assert result["token_ids"] == transformers_greedy(torch_model, inputs, eos)
    text = processor.tokenizer.decode(result["token_ids"], skip_special_tokens=True)
    assert result["text"] == text
    assert proc.stdout.rstrip("\n").endswith(text)


def test_cli_text_only_matches_transformers(llava, tmp_path):
    torch_model, processor, ckpt = llava
    out = tmp_path / "out.json"
    proc = run_cli(f"--checkpoint={ckpt}", "--prompt=What is the capital of France?",
                   f"--max_new_tokens={NEW}", f"--output_json={out}")
    assert proc.returncode == 0, proc.stderr
    inputs = chat_inputs(processor.tokenizer, ["What is the capital of France?"])
    eos = checkpoint.load_config(ckpt).eos_token_ids
    assert json.loads(out.read_text())["token_ids"] == transformers_greedy(torch_model, inputs,
                                                                           eos)


@pytest.mark.parametrize("case", ["no_checkpoint", "no_image", "bad_image"])
def test_cli_bad_input_is_one_line(llava, tmp_path, case):
    ckpt = llava[2]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    args = {"no_checkpoint": [f"--checkpoint={tmp_path / 'nothing'}"],
            "no_image": [f"--checkpoint={ckpt}", f"--image={tmp_path / 'missing.png'}"],
            "bad_image": [f"--checkpoint={ckpt}", f"--image={tmp_path / 'bad.png'}"]}[case]
    proc = run_cli(*args, "--prompt=hi")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("generate: "), proc.stderr


SMOLLM2_PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.",
                   "What is 12 times 7?"]


def test_smollm2_assembled_answers_like_transformers(smollm2_dir, tmp_path):
    ckpt = checkpoints.assembled(smollm2_dir, tmp_path / "ckpt")
    cfg, model = checkpoint.load_model(ckpt, scan_layers=False)
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    inputs = chat_inputs(tokenizer, SMOLLM2_PROMPTS)  # one left-padded batch
    ours = decode.trim(decode.generate(model, inputs["input_ids"], inputs["attention_mask"],
                                       max_new_tokens=32), cfg.eos_token_ids)

    llm = LlamaForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    original = AutoTokenizer.from_pretrained(smollm2_dir)
    for row, prompt, answer in zip(inputs["input_ids"], SMOLLM2_PROMPTS, ours):
        ids = chat_inputs(original, [prompt])["input_ids"]
        np.testing.assert_array_equal(row[-ids.shape[1]:], ids[0])  # same rendering
        with torch.no_grad():
            out = llm.generate(torch.from_numpy(ids), do_sample=False, max_new_tokens=32)
        assert answer == out[0, ids.shape[1]:].tolist(), prompt
    assert tokenizer.decode(ours[0], skip_special_tokens=True) == "The capital of France is Paris."
