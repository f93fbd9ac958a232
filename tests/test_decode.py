"""Batched prefill + KV-cache decoding against transformers' generate and our own full forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import run_cli
import torch
from flax import nnx
from PIL import Image
from transformers import AutoProcessor, TopPLogitsWarper

from basque_vlm.infer import decode, sampling
from basque_vlm.infer.prompts import chat_inputs
from basque_vlm.model.layers import Linear
from basque_vlm.store import checkpoint
from basque_vlm.testing import checkpoints, tiny_models

PROMPTS = ["What is in the image?", "Zer dago irudian?", "Bai",
           "The capital of France is Paris. Euskal Herriko hiriburua ez da Paris.",
           "one two three", "Katu bat dago mahai gainean.", "yes, no", "seven eight nine ten"]
NEW = 10


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (40 + 5 * i, 50, 3), dtype=np.uint8))
            for i in range(n)]


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    """(torch model, processor, checkpoint dir) per (vision kind, strategy)."""
    cache = {}

    def get(kind: str, strategy: str):
        if (kind, strategy) not in cache:
            root = tmp_path_factory.mktemp(f"{kind}_{strategy}")
            torch_model, processor = tiny_models.save_llava(root / "hf", kind, strategy)
            cache[kind, strategy] = (torch_model, processor,
                                     checkpoints.from_llava(root / "hf", root / "ckpt"))
        return cache[kind, strategy]

    return get


def reference(torch_model, inputs: dict, new_tokens: int, eos_ids) -> list[list[int]]:
    """transformers' greedy new tokens per row, up to the end of turn (no pads)."""
    pt = {k: torch.from_numpy(v) for k, v in inputs.items()}
    with torch.no_grad():
        out = torch_model.generate(**pt, do_sample=False, max_new_tokens=new_tokens)
    new = out[:, inputs["input_ids"].shape[1]:].numpy()
    return decode.trim(new, eos_ids)


def ours(model, inputs: dict, new_tokens: int, **kw) -> np.ndarray:
    return decode.generate(model, inputs["input_ids"], inputs["attention_mask"],
                           inputs.get("pixel_values"), max_new_tokens=new_tokens, **kw)


@pytest.mark.parametrize("kind,strategy,scan", [("clip", "default", True),
                                                ("siglip", "full", False)])
def test_greedy_with_images_matches_transformers(llava, kind, strategy, scan):
    torch_model, processor, ckpt = llava(kind, strategy)
    cfg, model = checkpoint.load_model(ckpt, scan_layers=scan)
    inputs = chat_inputs(processor, PROMPTS[:2], images(2))
    assert (inputs["input_ids"] == cfg.image_token_id).sum() == 2 * cfg.tokens_per_image
    assert inputs["attention_mask"][:, 0].min() == 0  # the batch is really left-padded
    assert decode.trim(ours(model, inputs, NEW), cfg.eos_token_ids) == reference(
        torch_model, inputs, NEW, cfg.eos_token_ids)


def test_for_decoding_fuses_per_layer_projections_and_keeps_every_token(llava):
    torch_model, processor, ckpt = llava("siglip", "full")
    cfg, model = checkpoint.load_model(ckpt, scan_layers=False)
    ready = decode.for_decoding(model)
    layers = ready.language_model.layers
    assert isinstance(layers, nnx.List) and len(layers) == cfg.text.num_layers
    assert layers[0].self_attn.q_proj is None and layers[0].self_attn.qkv_proj is not None
    assert layers[0].mlp.gate_proj is None and layers[0].mlp.gate_up_proj is not None
    assert not isinstance(model.language_model.layers, nnx.List)  # the original is untouched
    inputs = chat_inputs(processor, PROMPTS[:2], images(2))
    np.testing.assert_array_equal(ours(ready, inputs, NEW), ours(model, inputs, NEW))
    assert decode.trim(ours(ready, inputs, NEW), cfg.eos_token_ids) == reference(
        torch_model, inputs, NEW, cfg.eos_token_ids)
    _, scanned = checkpoint.load_model(ckpt, scan_layers=True)  # decodes scanned: as it was
    assert not isinstance(decode.for_decoding(scanned).language_model.layers, nnx.List)


def test_joined_projection_is_its_parts_side_by_side():
    rngs = nnx.Rngs(0)
    parts = [Linear((8,), (heads, 2), ("embed", "heads", "head_dim"), use_bias=True, rngs=rngs)
             for heads in (4, 2, 2)]
    for p in parts:
        p.bias[...] = jax.random.normal(rngs.params(), p.bias.shape)
    x = jax.random.normal(jax.random.key(1), (3, 5, 8))
    joined = Linear.joined(parts)
    assert joined.kernel.shape == (8, 8, 2)
    assert joined.kernel.get_metadata()["out_sharding"] == ("embed", "heads", "head_dim")
    np.testing.assert_allclose(joined(x), jnp.concatenate([p(x) for p in parts], axis=-2),
                               rtol=1e-6, atol=1e-6)


def test_text_only_assembled_matches_llama(tmp_path):
    torch_model, tokenizer = tiny_models.save_llama(tmp_path / "llm")
    ckpt = checkpoints.assembled(tmp_path / "llm", tmp_path / "ckpt")
    cfg, model = checkpoint.load_model(ckpt, scan_layers=False)
    inputs = chat_inputs(AutoProcessor.from_pretrained(ckpt), PROMPTS[:3])
    np.testing.assert_array_equal(inputs["input_ids"],
                                  chat_inputs(tokenizer, PROMPTS[:3])["input_ids"])
    assert decode.trim(ours(model, inputs, NEW), cfg.eos_token_ids) == reference(
        torch_model, inputs, NEW, cfg.eos_token_ids)


def test_a_language_model_alone_matches_llama(tmp_path):
    """``convert --llm_dir`` alone: a text-only checkpoint (no vision tower, no connector)."""
    torch_model, tokenizer = tiny_models.save_llama(tmp_path / "llm")
    run_cli.assert_ok(run_cli.run("convert", f"--llm_dir={tmp_path / 'llm'}",
                                  f"--out={tmp_path / 'ckpt'}"))
    cfg, model = checkpoint.load_model(tmp_path / "ckpt", scan_layers=False)
    assert cfg.vision is None and set(nnx.state(model, nnx.Param).to_pure_dict()) == {
        "language_model"}
    inputs = chat_inputs(checkpoint.load_processor(tmp_path / "ckpt"), PROMPTS[:3])
    np.testing.assert_array_equal(inputs["input_ids"],
                                  chat_inputs(tokenizer, PROMPTS[:3])["input_ids"])
    assert decode.trim(ours(model, inputs, NEW), cfg.eos_token_ids) == reference(
        torch_model, inputs, NEW, cfg.eos_token_ids)
    export = run_cli.run("export", f"--checkpoint={tmp_path / 'ckpt'}",
                         f"--out={tmp_path / 'hf'}")
    run_cli.assert_one_line_error(export, "export", "text-only checkpoint")


@pytest.mark.parametrize("scan", [True, False])
def test_batch_of_eight_equals_one_by_one(llava, scan):
    _, processor, ckpt = llava("clip", "default")
    _, model = checkpoint.load_model(ckpt, scan_layers=scan)
    batch = ours(model, chat_inputs(processor, PROMPTS), NEW)
    single = np.concatenate([ours(model, chat_inputs(processor, [p]), NEW) for p in PROMPTS])
    np.testing.assert_array_equal(batch, single)


def test_stops_each_row_at_its_end_of_turn_and_pads(llava):
    _, processor, ckpt = llava("clip", "default")
    _, model = checkpoint.load_model(ckpt, scan_layers=False)
    inputs = chat_inputs(processor, PROMPTS[:3])
    free = ours(model, inputs, NEW, eos_ids=())
    stop = int(free[0, 3])  # row 0 ends at step 3 (or earlier, if it made that token before)
    stopped = ours(model, inputs, NEW, eos_ids=(stop,), pad_id=7)
    for row_free, row in zip(free, stopped):
        end = list(row_free).index(stop) + 1 if stop in row_free else NEW
        np.testing.assert_array_equal(row[:end], row_free[:end])
        assert (row[end:] == 7).all()
    assert list(stopped[0]).index(stop) <= 3


def full_forward_logits(model, inputs: dict, generated: np.ndarray) -> np.ndarray:
    """Logits at the positions that predict each generated token, without a cache."""
    ids = np.concatenate([inputs["input_ids"], generated], axis=1)
    mask = np.concatenate([inputs["attention_mask"], np.ones_like(generated)], axis=1)
    pixels = inputs.get("pixel_values")
    logits = nnx.jit(lambda m, *args: m(*args))(
        model, jnp.asarray(ids), None if pixels is None else jnp.asarray(pixels), jnp.asarray(mask))
    start = inputs["input_ids"].shape[1] - 1
    return np.asarray(logits[:, start:start + generated.shape[1]])


@pytest.mark.parametrize("scan", [True, False])
def test_cached_decoding_equals_full_forward(llava, scan):
    _, processor, ckpt = llava("siglip", "full")
    _, model = checkpoint.load_model(ckpt, scan_layers=scan)
    inputs = chat_inputs(processor, PROMPTS[2:5], images(3, seed=1))
    generated = ours(model, inputs, NEW, eos_ids=())
    np.testing.assert_array_equal(full_forward_logits(model, inputs, generated).argmax(-1),
                                  generated)


def test_sampling_is_reproducible_and_stays_in_the_nucleus(llava):
    _, processor, ckpt = llava("clip", "default")
    _, model = checkpoint.load_model(ckpt, scan_layers=False)
    inputs = chat_inputs(processor, PROMPTS[:4])
    kw = dict(temperature=0.7, top_p=0.3, eos_ids=())
    a = ours(model, inputs, NEW, rng=jax.random.key(1), **kw)
    np.testing.assert_array_equal(a, ours(model, inputs, NEW, rng=jax.random.key(1), **kw))
    assert not np.array_equal(a, ours(model, inputs, NEW, rng=jax.random.key(2), **kw))
    logits = full_forward_logits(model, inputs, a) / kw["temperature"]
    allowed = np.asarray(sampling.top_p_mask(jnp.asarray(logits), kw["top_p"]))
    assert np.take_along_axis(allowed, a[..., None], -1).all()
    assert allowed.sum(-1).max() < logits.shape[-1]  # the nucleus really excludes tokens
    with pytest.raises(ValueError, match="rng"):
        ours(model, inputs, NEW, temperature=0.7)


def test_top_p_mask_matches_transformers():
    logits = np.random.default_rng(0).normal(size=(4, 50)).astype(np.float32) * 3
    for top_p in (0.1, 0.5, 0.9, 1.0):
        theirs = TopPLogitsWarper(top_p)(None, torch.from_numpy(logits)).numpy() > -np.inf
        np.testing.assert_array_equal(sampling.top_p_mask(jnp.asarray(logits), top_p), theirs)


def test_greedy_picks_what_argmax_and_torch_pick():
    logits = np.random.default_rng(0).normal(size=(5, 49152)).astype(np.float32)
    logits[1, [7, 30000]] = 50.0  # a tie: the first wins
    logits[2, 11] = np.nan  # NaN wins, as in argmax
    logits[3] = 0.0
    logits[4, 100] = np.inf
    got = np.asarray(sampling.greedy(jnp.asarray(logits)))
    np.testing.assert_array_equal(got, np.asarray(jnp.argmax(jnp.asarray(logits), axis=-1)))
    np.testing.assert_array_equal(got[[0, 1, 3, 4]], torch.from_numpy(logits[[0, 1, 3, 4]])
                                  .argmax(-1).numpy())
    assert got.dtype == np.int32 and got[1] == 7 and got[2] == 11


def test_compiles_once_per_length_bucket(llava):
    _, processor, ckpt = llava("clip", "default")
    _, model = checkpoint.load_model(ckpt)
    first = chat_inputs(processor, PROMPTS[:2])
    ours(model, first, 4)
    size = decode._generate._cache_size()
    for prompts in (PROMPTS[2:4], PROMPTS[4:6]):  # other prompt lengths, the same 64-token bucket
        inputs = chat_inputs(processor, prompts)
        assert inputs["input_ids"].shape != first["input_ids"].shape
        ours(model, inputs, 4)
    assert decode._generate._cache_size() == size
