"""Decoding on a device mesh: the same greedy tokens on one device, on ``data × tensor`` and on
``data × fsdp`` meshes, in static batches and in flight, with images and text only, with a
prompt prefix they all share prefilled once; weights read straight into their shards; a mesh
that does not divide is one clear error."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from PIL import Image

from basque_vlm.infer import decode, placement
from basque_vlm.infer.engine import Engine, Request, shared_prefix
from basque_vlm.infer.prompts import chat_inputs
from basque_vlm.store import checkpoint
from basque_vlm.testing import checkpoints, tiny_models

PROMPTS = ["Zer dago irudian?", "What is in the image? Describe every object in it.", "Hi",
           "Kaixo, zer moduz zaude gaur goizean?", "Count the red squares.", "Bai ala ez?"]
BUDGETS = [5, 12, 3, 9, 1, 7]
MESHES = {"data2_tensor2": (2, 1, 2), "data4_fsdp2": (4, 2, 1)}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    tiny_models.save_llava(root / "hf")
    return checkpoints.from_llava(root / "hf", root / "ckpt")


@pytest.fixture(scope="module")
def requests(ckpt):
    """Every other prompt with an image; answer budgets from 1 to 12 tokens."""
    processor = checkpoint.load_processor(ckpt)
    rng = np.random.default_rng(0)
    out = []
    for i, (prompt, budget) in enumerate(zip(PROMPTS, BUDGETS)):
        image = Image.fromarray(rng.integers(0, 255, (30 + i, 40, 3), dtype=np.uint8))
        inputs = chat_inputs(processor, [prompt], [image] if i % 2 == 0 else None)
        pixels = inputs.get("pixel_values")
        out.append(Request(inputs["input_ids"][0], budget,
                           None if pixels is None else (lambda p=pixels: p),
                           images=0 if pixels is None else 1))
    return out


@pytest.fixture(scope="module")
def alone(ckpt, requests):
    """Each prompt decoded by itself on one device (no end-of-turn stop: full budgets)."""
    _, model = checkpoint.load_model(ckpt)
    model = decode.for_decoding(model)
    return [decode.generate(model, r.input_ids[None], np.ones((1, len(r.input_ids))),
                            r.pixel_values() if r.pixel_values else None,
                            max_new_tokens=r.max_new_tokens, eos_ids=())[0].tolist()
            for r in requests]


@pytest.fixture(scope="module")
def preambled(tmp_path_factory):
    """A text model whose tokens hang on every position (larger weights, plain RoPE), prompts
    that share a long instruction, as translation's do, and each prompt's tokens alone."""
    root = tmp_path_factory.mktemp("preambled")
    _, tokenizer = tiny_models.save_llama(root / "hf", initializer_range=0.3, rope_parameters={
        "rope_type": "default", "rope_theta": 100.0})
    ckpt = checkpoints.language_model(root / "hf", root / "ckpt")
    preamble = "Translate from English into Basque. Keep names and numbers. " * 4
    requests = [Request(chat_inputs(tokenizer, [preamble + p])["input_ids"][0], budget)
                for p, budget in zip(PROMPTS, BUDGETS)]
    _, model = checkpoint.load_model(ckpt)
    model = decode.for_decoding(model)
    alone = [decode.generate(model, r.input_ids[None], np.ones((1, len(r.input_ids))), None,
                             max_new_tokens=r.max_new_tokens, eos_ids=())[0].tolist()
             for r in requests]
    return ckpt, requests, alone


def engine_on(ckpt, data, fsdp, tensor, slots=2, **overrides):
    cfg = checkpoint.load_config(ckpt)
    mesh = placement.decode_mesh(cfg, 0, data=data, fsdp=fsdp, tensor=tensor,
                                 devices=jax.devices()[:data * fsdp * tensor])
    _, model = checkpoint.load_model(ckpt, mesh=mesh, **overrides)
    engine = Engine(decode.for_decoding(model, fuse=tensor == 1), mesh, slots=slots,
                    sync_every=4)
    engine.eos = ()
    return engine, model


@pytest.mark.parametrize("batching", ["inflight", "static"])
@pytest.mark.parametrize("mesh", ["one_device", *MESHES])
def test_every_mesh_and_batching_gives_the_tokens_of_each_prompt_alone(ckpt, requests, alone,
                                                                      mesh, batching):
    data, fsdp, tensor = MESHES.get(mesh, (1, 1, 1))
    engine, _ = engine_on(ckpt, data, fsdp, tensor)
    assert engine.generate(requests, batching) == alone


@pytest.mark.slow  # ~30 s; evaluate's tests run unrolled layers in flight by default
@pytest.mark.parametrize("mesh", ["one_device", "data2_tensor2"])
def test_unrolled_layers_give_the_tokens_of_each_prompt_alone(ckpt, requests, alone, mesh):
    """Layers unrolled, each with its own cache (as on CPU; the tests above scan stacked
    layers, as on TPU), in flight: prefills that also step the busy rows."""
    data, fsdp, tensor = MESHES.get(mesh, (1, 1, 1))
    engine, _ = engine_on(ckpt, data, fsdp, tensor, scan_layers=False)
    assert engine.generate(requests, "inflight") == alone


@pytest.mark.parametrize("mesh", ["one_device", *MESHES])
def test_a_shared_prefix_prefilled_once_gives_the_tokens_of_each_prompt_alone(preambled, mesh):
    ckpt, requests, alone = preambled
    assert shared_prefix([r.input_ids for r in requests], None, 16) >= 32
    data, fsdp, tensor = MESHES.get(mesh, (1, 1, 1))
    engine, _ = engine_on(ckpt, data, fsdp, tensor, slots=4)
    assert engine.generate(requests, "inflight") == alone


@pytest.mark.parametrize("prompts, image, expected", [
    ([[1] * 40 + [2], [1] * 40 + [3]], None, 32),  # rounded down to a multiple of 16
    ([[1] * 40 + [2], [1] * 17], None, 16),  # the shortest keeps its last token
    ([[1] * 20 + [9] + [1] * 20, [1] * 20 + [9] + [1] * 21], 9, 16),  # not past an image
    ([[1] * 10 + [9] + [1] * 30, [1] * 10 + [9] + [1] * 31], 9, 0),
    ([[1] * 40 + [2], [2] * 40], None, 0),
    ([[1] * 40], None, 0),  # one prompt: nothing to share
])
def test_the_shared_prefix(prompts, image, expected):
    assert shared_prefix([np.asarray(p) for p in prompts], image, 16) == expected


def test_weights_are_read_into_their_shards(ckpt):
    _, model = engine_on(ckpt, 2, 1, 2)
    q = model.language_model.layers.self_attn.q_proj.kernel[...]  # [layers, embed, heads, hd]
    assert isinstance(q.sharding, NamedSharding)
    assert q.sharding.spec[2] == "tensor"
    assert {s.data.shape[2] for s in q.addressable_shards} == {q.shape[2] // 2}


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_weights_read_into_their_shards_hold_the_stored_values(ckpt, dtype):
    """Split over the mesh as they are read, the weights are those read whole, cast when
    asked."""
    mesh = placement.decode_mesh(checkpoint.load_config(ckpt), 0, fsdp=4, tensor=2)
    _, placed = checkpoint.load_model(ckpt, dtype, mesh=mesh)
    _, whole = checkpoint.load_model(ckpt, dtype)
    for got, want in zip(jax.tree.leaves(nnx.state(placed)), jax.tree.leaves(nnx.state(whole))):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("stage_rows", [1, 2, None])
def test_in_flight_refills_slots_as_rows_end(ckpt, requests, alone, stage_rows):
    """One slot per row shard: six prompts through two slots, staged one, two or (None) as many
    as there are slots at a time, each slot refilled from the stage as its row ends; results
    in input order."""
    engine, _ = engine_on(ckpt, 2, 1, 1, slots=2)
    engine.stage_rows = stage_rows or engine.slots
    progress = []
    assert engine.generate(requests, "inflight", progress.append) == alone
    assert progress == list(range(1, len(requests) + 1))


def test_end_of_turn_ends_a_row(ckpt, requests, alone):
    engine, _ = engine_on(ckpt, 1, 1, 1)
    stop = alone[1][3]
    engine.eos = (stop,)
    got = engine.generate(requests, "inflight")
    for row, full in zip(got, alone):
        assert row == (full[:full.index(stop) + 1] if stop in full else full)


@pytest.mark.parametrize("axes, message", [
    ((None, None, 3), "does not use the 8 devices"),
    ((1, 1, 8), "is not a multiple of mesh.tensor=8"),
    ((3, None, None), "3 × 1 × 1 does not use the 8 devices"),
])
def test_a_mesh_that_does_not_divide_names_the_dimension(ckpt, axes, message):
    data, fsdp, tensor = axes
    with pytest.raises(ValueError, match=message):
        placement.decode_mesh(checkpoint.load_config(ckpt), 0, data=data, fsdp=fsdp,
                              tensor=tensor)


def test_the_default_mesh_puts_every_device_on_data_when_the_model_fits(ckpt):
    mesh = placement.decode_mesh(checkpoint.load_config(ckpt), 1 << 20)
    assert dict(mesh.shape) == {"data": len(jax.devices()), "fsdp": 1, "tensor": 1}
