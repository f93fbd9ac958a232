"""``python -m basque_vlm.aot``: the demo's train and decode steps compiled for a TPU slice."""

from __future__ import annotations

import json

import libtpu  # noqa: F401  (make setup installs it: a missing libtpu fails, it is not skipped)
import pytest
import run_cli
from data_helpers import REPO, demo_config

from basque_vlm.model.vlm import VLMConfig
from basque_vlm.tpu import topologies
from basque_vlm.training import metrics


@pytest.fixture(scope="module")
def result():
    # head_dim 128 and length 128 make the demo's text attention eligible for splash (the TPU
    # kernel).
    return run_cli.run("aot", "--config=configs/demo.py", "--topology=v5e-8",
                       "--config.model.text.head_dim=128", "--config.data.max_length=128",
                       "--config.data.length_buckets=(64,128)", "--config.compute.scan_layers=true",
                       "--decode_batch=2", "--decode_prompt_length=128",
                       "--decode_new_tokens=8")


def test_demo_fits_a_v5e_8(result):
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["topology"] == "v5e-8" and report["jax_topology"] == "v5e:2x4"
    assert report["chips"] == 8 and report["hbm_gib"] == 15.75
    assert report["fits"] is True and report["decode"]["fits"] is True
    memory = report["memory_gib"]
    assert 0 < report["per_chip_peak_gib"] == memory["peak"] < report["hbm_gib"]
    assert memory["peak"] == pytest.approx(memory["arguments"] + memory["outputs"]
                                           - memory["aliased"] + memory["temporaries"]
                                           + memory["code"], abs=0.004)
    assert memory["aliased"] > 0  # the state is donated
    assert report["batch"] == {"global": 64, "per_chip": 8, "microbatches": 1, "length": 128}
    assert report["remat"] == "none" and report["compile_s"] > 0
    assert report["attention"] == {"setting": "auto", "text": "splash", "vision": "xla"}

    model = demo_config(REPO).model.to_dict()
    model["text"]["head_dim"] = 128
    cfg = VLMConfig.from_dict(model)
    flops = metrics.step_flops(cfg, ["vision_tower", "connector", "language_model"], 64, 128, 64)
    assert report["model_tflops_per_step"] == pytest.approx(flops / 1e12, abs=1e-3)


def test_the_decode_step_is_sharded_over_the_slice(result):
    """By default the tiny demo fits one chip: every chip on ``data``, the batch rounded up to
    whole row shards."""
    decode = json.loads(result.stdout.strip().splitlines()[-1])["decode"]
    assert decode["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1} and decode["batch"] == 8


@pytest.mark.slow  # a decode compilation for a tensor split
def test_decode_only_on_a_tensor_split():
    result = run_cli.run("aot", "--config=configs/demo.py", "--topology=v5e-8", "--notrain",
                         "--mesh_tensor=2", "--decode_batch=8", "--decode_prompt_length=64",
                         "--decode_new_tokens=8", "--search")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "batch" not in report and "memory_gib" not in report  # no train step compiled
    decode = report["decode"]
    assert decode["mesh"] == {"data": 4, "fsdp": 1, "tensor": 2} and decode["fits"] is True
    assert decode["largest_batch"] == max(f["batch"] for f in report["decode_search"]
                                          if f["fits"])
    bad = run_cli.run("aot", "--config=configs/demo.py", "--topology=v5e-8", "--notrain",
                      "--mesh_tensor=3")
    run_cli.assert_one_line_error(bad, "aot", "does not use the 8 devices")


@pytest.mark.slow  # one 80-layer compilation: ~1 min
def test_the_70b_translator_fits_a_v6e_8_at_batch_32():
    result = run_cli.run("aot", "--architecture=latxa31_70b", "--notrain", "--topology=v6e-8",
                         "--mesh_tensor=8", "--decode_batch=32", "--decode_prompt_length=1024",
                         "--decode_new_tokens=1024")
    assert result.returncode == 0, result.stderr
    decode = json.loads(result.stdout.strip().splitlines()[-1])["decode"]
    assert decode["fits"] is True and decode["mesh"] == {"data": 1, "fsdp": 1, "tensor": 8}
    assert decode["per_chip_peak_gib"] < 31.25


def test_bad_topology_is_one_line():
    result = run_cli.run("aot", "--config=configs/demo.py", "--topology=v9-8")
    run_cli.assert_one_line_error(result, "aot", "unknown TPU topology", "v5p-8")


def test_topology_names():
    assert [topologies.parse(n).topology for n in ("v4-8", "v5e-8", "v5e-16", "v5p-8",
                                                       "v5p-16", "v6e-8")] == [
        "v4:2x2x1", "v5e:2x4", "v5e:4x4", "v5p:2x2x1", "v5p:2x2x2", "v6e:2x4"]
    assert topologies.parse("v5p-8").chips == 4  # v4/v5p names count TensorCores
    assert topologies.parse("v6e:4x4").chips == 16


def available_hbm_gib(device) -> float:
    """What the compiler says one chip has: compile a program far too large and read its
    refusal."""
    import re

    import jax
    import jax.numpy as jnp
    from jax.sharding import SingleDeviceSharding

    place = SingleDeviceSharding(device)
    huge = jax.jit(lambda x: (jnp.outer(x, x) @ jnp.outer(x, x))[0], out_shardings=place)
    with pytest.raises(jax.errors.JaxRuntimeError) as refused:
        huge.lower(jax.ShapeDtypeStruct((2 ** 18,), jnp.float32, sharding=place)).compile()
    return float(re.search(r"exceeds available HBM \(([\d.]+)G\)", str(refused.value)).group(1))


@pytest.mark.parametrize("name", ["v4-8", "v5e-8", "v5p-8", "v6e-8"])
def test_hbm_table_is_the_compilers(name):
    tpu = topologies.parse(name)
    assert available_hbm_gib(topologies.devices(tpu)[0]) == tpu.generation.hbm_gib
