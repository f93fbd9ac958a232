"""Logical axis names on every parameter, and a forward pass sharded over a 2x2x2 mesh."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding

from basque_vlm.model import sharding
from basque_vlm.model.llama import LlamaConfig
from basque_vlm.model.vision import VisionConfig
from basque_vlm.model.vlm import VLM, VLMConfig


def tiny_config(**text_kw) -> VLMConfig:
    text = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2,
                       num_heads=4, num_kv_heads=2, head_dim=8, **text_kw)
    vision = VisionConfig(kind="clip", hidden_size=16, intermediate_size=32, num_layers=2,
                          num_heads=2, image_size=28, patch_size=14)
    return VLMConfig(text=text, vision=vision, connector="mlp2x_gelu", image_token_id=127)


def test_every_parameter_has_logical_names():
    model = nnx.eval_shape(lambda: VLM(tiny_config(), nnx.Rngs(0)))
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param):
            names = var.get_metadata()["out_sharding"]
            assert len(names) == var.shape.__len__(), (path, names, var.shape)
            assert all(n in sharding.LOGICAL_RULES for n in names), (path, names)


def test_logical_to_spec_drops_trivial_and_reused_axes():
    mesh = jax.make_mesh((2, 1, 4), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    spec = sharding.logical_to_spec(("batch", "length", "heads", "mlp"), mesh)
    assert tuple(spec) == ("data", None, "tensor", None)


@pytest.mark.parametrize("scan", [True, False])
def test_sharded_forward_matches_single_device(scan):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (simulated) devices")
    cfg = tiny_config(scan_layers=scan)
    model = VLM(cfg, nnx.Rngs(0))
    ids = jax.random.randint(jax.random.key(1), (4, 16), 0, 120)
    expected = model(ids)

    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    graphdef, state = nnx.split(model)
    specs = nnx.get_partition_spec(state)

    def place(value, spec):
        names = tuple(spec) if spec is not None else ()
        return jax.device_put(value, NamedSharding(mesh, sharding.logical_to_spec(names, mesh)))

    state = jax.tree.map(place, state, specs)
    kernel = state["language_model"]["layers"]["mlp"]["up_proj"]["kernel"][...]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    with sharding.use_mesh(mesh):
        logits = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, ids)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), atol=1e-5, rtol=1e-5)
