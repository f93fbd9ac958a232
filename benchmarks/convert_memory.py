"""Peak memory of `convert` assembling a VLM from a synthetic multi-GB Llama checkpoint.

Writes (tensor by tensor, so this script stays small) a random Llama-architecture LLM of at least
``--size_gb`` as sharded safetensors with an index, with a 32000-word tokenizer (so that adding
``<image>`` grows the vocabulary, as with Llama-3), plus a tiny CLIP folder; runs
``python -m basque_vlm.convert --llm_dir ... --vision_dir ... --projector linear`` and samples the
peak resident memory of that process. Target: peak RSS ≤ 1.3 × the checkpoint size; the overhead
beyond the weights themselves is mostly fixed (the interpreter with JAX, transformers and, where it
is installed, the torch that transformers imports). The generated files are deleted at the end. The
last stdout line is JSON.

    python benchmarks/convert_memory.py [--size_gb=2] [--dtype=float32] [--workdir=DIR]
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import psutil
from absl import app, flags

from basque_vlm.hf.shards import LazyTensor, write_safetensors

ROOT = Path(__file__).resolve().parent.parent

flags.DEFINE_float("size_gb", 2.0, "least size of the synthetic LLM's weights, in GB (1e9 bytes)")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "dtype of the synthetic weights")
flags.DEFINE_string("workdir", None, "where to make the (deleted) scratch folder; default /tmp")
flags.DEFINE_float("target", 1.3, "peak RSS / checkpoint size to meet")
FLAGS = flags.FLAGS

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, VOCAB = 2048, 5632, 16, 4, 32000
SPECIALS = ["<unk>", "<s>", "</s>"]
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<s>' + m['role'] + ' ' + m['content'] + '</s>' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<s>assistant ' }}{% endif %}")


def layer_shapes() -> dict[str, tuple[int, ...]]:
    head_dim = HIDDEN // HEADS
    return {"self_attn.q_proj.weight": (HEADS * head_dim, HIDDEN),
            "self_attn.k_proj.weight": (KV_HEADS * head_dim, HIDDEN),
            "self_attn.v_proj.weight": (KV_HEADS * head_dim, HIDDEN),
            "self_attn.o_proj.weight": (HIDDEN, HEADS * head_dim),
            "mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN),
            "mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
            "mlp.down_proj.weight": (HIDDEN, INTERMEDIATE),
            "input_layernorm.weight": (HIDDEN,), "post_attention_layernorm.weight": (HIDDEN,)}


def write_llm(folder: Path, size_bytes: float, dtype: np.dtype) -> int:
    """A random Llama with enough layers to reach ``size_bytes``; returns its weight bytes."""
    item = dtype.itemsize
    per_layer = sum(math.prod(s) for s in layer_shapes().values()) * item
    outer = (2 * VOCAB * HIDDEN + HIDDEN) * item
    layers = max(1, math.ceil((size_bytes - outer) / per_layer))
    rng = np.random.default_rng(0)

    def random(shape: tuple[int, ...]):
        return lambda: (0.02 * rng.standard_normal(shape, np.float32)).astype(dtype)

    shapes = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,),
              "lm_head.weight": (VOCAB, HIDDEN)}
    for i in range(layers):
        shapes.update({f"model.layers.{i}.{k}": s for k, s in layer_shapes().items()})
    tensors = [LazyTensor(name, shape, dtype, random(shape)) for name, shape in shapes.items()]
    folder.mkdir(parents=True)
    write_safetensors(folder, tensors, max_shard_bytes=10**9)
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": VOCAB,
              "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
              "num_hidden_layers": layers, "num_attention_heads": HEADS,
              "num_key_value_heads": KV_HEADS, "rms_norm_eps": 1e-5,
              "max_position_embeddings": 4096, "tie_word_embeddings": False,
              "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 1024},
              "bos_token_id": 1, "eos_token_id": 2, "dtype": str(dtype)}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(folder)
    return sum(t.nbytes for t in tensors)


def write_tokenizer(folder: Path) -> None:
    """A word-level tokenizer with exactly ``VOCAB`` entries."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), VOCAB)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)


def run_sampled(cmd: list[str]) -> tuple[int, int, float, str]:
    """Runs ``cmd``: (exit code, peak RSS sampled over its process tree, seconds, output)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    peak = 0
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [ps] + ps.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.01)
    reader.join()
    return proc.returncode, peak, time.perf_counter() - start, "".join(output)


def main(argv: list[str]) -> None:
    del argv
    from basque_vlm.testing import tiny_models
    dtype = np.dtype(np.float32 if FLAGS.dtype == "float32" else ml_dtypes.bfloat16)
    work = Path(tempfile.mkdtemp(prefix="convert_memory.", dir=FLAGS.workdir))
    try:
        t = time.perf_counter()
        llm_bytes = write_llm(work / "llm", FLAGS.size_gb * 1e9, dtype)
        tiny_models.save_vision(work / "vision", "clip")
        vision_bytes = (work / "vision" / "model.safetensors").stat().st_size
        print(f"generated {llm_bytes / 1e9:.2f} GB of {dtype} weights in "
              f"{time.perf_counter() - t:.0f} s")
        code, sampled, seconds, output = run_sampled(
            [sys.executable, "-m", "basque_vlm.convert", f"--llm_dir={work / 'llm'}",
             f"--vision_dir={work / 'vision'}", "--projector=linear", f"--out={work / 'ckpt'}"])
        print(output, end="")
        if code != 0:
            raise SystemExit(f"convert failed with exit code {code}")
        # Linux: kilobytes; the largest resident set of any waited-for child process.
        peak = max(sampled, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
        size = llm_bytes + vision_bytes
        ratio = peak / size
        print(json.dumps({"checkpoint_bytes": size, "dtype": str(dtype),
                          "peak_rss_bytes": peak, "sampled_peak_rss_bytes": sampled,
                          "overhead_bytes": peak - size,
                          "ratio": round(ratio, 3), "target": FLAGS.target,
                          "meets_target": ratio <= FLAGS.target, "seconds": round(seconds, 1)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
