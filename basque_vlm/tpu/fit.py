"""Does it fit? The train step and the decode step compiled ahead of time for some devices (a TPU
slice's compile-only devices: `basque_vlm.tpu.topologies`), with abstract parameters only, and
the compiler's per-device memory.

The train step is `loop.plan_step`'s, exactly as `loop.train` runs it; the decode step is
`decode.lower_greedy`'s, sharded over a decode mesh with the weights in the compute dtype, as
``evaluate --param_dtype=bfloat16`` and ``translate`` run it.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, Sharding

from basque_vlm.data import pipeline
from basque_vlm.infer import decode
from basque_vlm.model import attention, sharding
from basque_vlm.model.vlm import VLMConfig
from basque_vlm.store import checkpoint
from basque_vlm.training import configs, loop, metrics
from basque_vlm.training.step import MODEL_INPUTS

GIB = 2 ** 30
# The remat policies a search tries, from the least memory to the least recomputation.
SEARCH_REMAT = ("full", "save_qkv_attention", "dots_saveable", "none")
SEARCH_BATCHES = (1, 2, 4, 8, 16, 32, 64)


@dataclasses.dataclass(frozen=True)
class Memory:
    """Per-device bytes of a compiled program (XLA's ``memory_analysis``)."""

    arguments: int
    outputs: int
    aliased: int       # outputs written into donated arguments
    temporaries: int
    code: int

    @property
    def peak(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.code

    @classmethod
    def of(cls, compiled: Any) -> Memory:
        m = compiled.memory_analysis()
        return cls(m.argument_size_in_bytes, m.output_size_in_bytes, m.alias_size_in_bytes,
                   m.temp_size_in_bytes, m.generated_code_size_in_bytes)

    def gib(self) -> dict[str, float]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: round(v / GIB, 3) for k, v in {**fields, "peak": self.peak}.items()}


@dataclasses.dataclass(frozen=True)
class Fit:
    """One compilation: its memory, or the compiler's out-of-memory message."""

    memory: Memory | None
    error: str | None
    compile_s: float
    hbm_bytes: float
    facts: dict[str, Any]  # what was compiled: batch, remat, ...

    @property
    def fits(self) -> bool:
        return self.memory is not None and self.memory.peak <= self.hbm_bytes

    def summary(self) -> dict[str, Any]:
        return {**self.facts, "fits": self.fits,
                "per_chip_peak_gib": None if self.memory is None else
                round(self.memory.peak / GIB, 3),
                "memory_gib": None if self.memory is None else self.memory.gib(),
                "compile_s": round(self.compile_s, 1),
                **({"error": self.error} if self.error else {})}


def compile_fit(lower: Callable[[], Any], hbm_bytes: float, facts: dict[str, Any]) -> Fit:
    """Lowers and compiles; the compiler's refusal to place the program in HBM is a result
    (it does not fit), any other error is raised."""
    start = time.perf_counter()
    try:
        compiled = lower().compile()
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        message = next((line for line in str(e).splitlines() if "memory" in line.lower()),
                       str(e).splitlines()[0])
        return Fit(None, " ".join(message.split())[:300], time.perf_counter() - start,
                   hbm_bytes, facts)
    return Fit(Memory.of(compiled), None, time.perf_counter() - start, hbm_bytes, facts)


def abstract_batch(config: Any, cfg: VLMConfig, batch_sharding: Sharding
                   ) -> dict[str, jax.ShapeDtypeStruct]:
    """The pipeline's global batch at its longest (``data.max_length``), as `loop` places it."""
    rows, length = int(config.data.global_batch_size), int(config.data.max_length)
    v = cfg.vision
    images = rows * pipeline.images_per_row(config.data)
    shapes = {name: ((rows, length), jnp.int32) for name in MODEL_INPUTS}
    shapes["pixel_values"] = ((images, v.num_channels, v.image_size, v.image_size), jnp.float32)
    return {name: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
            for name, (shape, dtype) in shapes.items()}


def train_fit(config: Any, devices: Sequence[jax.Device], hbm_bytes: float,
              stored: VLMConfig | None = None) -> Fit:
    """The train step of ``config`` on ``devices``."""
    plan = loop.plan_step(config, devices, stored)
    layout = plan.layout
    batch = abstract_batch(config, plan.cfg, layout.batch)
    shards = layout.mesh.shape["data"] * layout.mesh.shape["fsdp"]
    microbatches = configs.train_setting(config, "microbatches")
    rows, length = int(config.data.global_batch_size), int(config.data.max_length)
    platform = layout.mesh.devices.flat[0].platform
    # Counted, not XLA's cost analysis: that counts a scanned layer once.
    flops = metrics.step_flops(plan.cfg, plan.parts, rows, length,
                               rows * pipeline.images_per_row(config.data))
    facts = {"batch": {"global": rows, "per_chip": rows // (microbatches * shards),
                       "microbatches": microbatches, "length": length},
             "remat": plan.cfg.text.remat,
             "attention": {"setting": plan.cfg.text.attention,
                           **attention_choices(plan.cfg, platform, length)},
             "model_tflops_per_step": round(flops / 1e12, 3)}

    def lower():
        with sharding.use_mesh(layout.mesh):
            return plan.step_fn.lower(layout.state, layout.frozen, batch)

    return compile_fit(lower, hbm_bytes, facts)


def attention_choices(cfg: VLMConfig, platform: str, length: int) -> dict[str, str]:
    """The implementation each tower's self-attention gets (`attention.choose`)."""
    t, v = cfg.text, cfg.vision
    patches = v.num_patches + int(v.has_class_token)
    return {"text": attention.choose(t.attention, platform, length=length, kv_length=length,
                                     head_dim=t.head_dim, dtype=t.dtype, causal=True),
            "vision": attention.choose(v.attention, platform, length=patches, kv_length=patches,
                                       head_dim=v.hidden_size // v.num_heads, dtype=v.dtype,
                                       causal=False)}


def with_batch(config: Any, per_chip: int, remat: str, shards: int) -> Any:
    """``config`` with micro-batches of ``per_chip`` rows per data shard and ``remat``, the
    global batch kept."""
    config = copy.deepcopy(config)
    config.train.microbatches = int(config.data.global_batch_size) // (per_chip * shards)
    config.compute.remat = remat
    return config


def search(config: Any, devices: Sequence[jax.Device], hbm_bytes: float,
           stored: VLMConfig | None = None, policies: Sequence[str] = SEARCH_REMAT,
           report: Callable[[Fit], None] = lambda fit: None) -> list[Fit]:
    """The largest per-chip micro-batch that fits for each remat policy: a binary search over
    the sizes that divide the global batch. The policies of `SEARCH_REMAT` go from the one that
    saves least, and each bounds the next (saving more cannot fit more rows). Every compilation
    is returned (and ``report``-ed) in order."""
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    global_batch = int(config.data.global_batch_size)
    candidates = [b for b in SEARCH_BATCHES if global_batch % (b * shards) == 0]
    known = {p: i for i, p in enumerate(SEARCH_REMAT)}
    tried: list[Fit] = []
    bound = len(candidates)
    for policy in sorted(policies, key=lambda p: known.get(p, len(known))):
        # candidates[:low] fit, candidates[high:] do not
        low, high = 0, bound if policy in known else len(candidates)
        while low < high:
            mid = (low + high) // 2
            fit = train_fit(with_batch(config, candidates[mid], policy, shards), devices,
                            hbm_bytes, stored)
            tried.append(fit)
            report(fit)
            low, high = (mid + 1, high) if fit.fits else (low, mid)
        if policy in known:
            bound = low
    return tried


def best(fits: Sequence[Fit]) -> Fit | None:
    """The most rows per chip; among those, the remat policy that recomputes least."""
    order = {p: i for i, p in enumerate(SEARCH_REMAT)}
    ok = [f for f in fits if f.fits]
    return max(ok, key=lambda f: (f.facts["batch"]["per_chip"], order.get(f.facts["remat"], -1)),
               default=None)


def decode_fit(cfg: VLMConfig, mesh: Mesh, hbm_bytes: float, *, batch: int,
               prompt_length: int, new_tokens: int) -> Fit:
    """Prefill + KV-cache decoding of ``batch`` prompts of ``prompt_length`` tokens (one image
    each, for a VLM) for ``new_tokens`` tokens, sharded over ``mesh`` as ``evaluate`` and
    ``translate`` decode (`decode.generate`), the weights in the compute dtype."""
    abstract = nnx.state(checkpoint.abstract_model(cfg), nnx.Param)
    sharding.check_divisible(abstract, mesh)
    shards = sharding.row_shards(mesh)
    if batch % shards:
        raise ValueError(f"--decode_batch={batch} does not divide over the mesh's "
                         f"{shards} row shards (data × fsdp)")
    graphdef, _ = nnx.split(checkpoint.abstract_model(cfg))
    params = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, jnp.dtype(cfg.text.dtype), sharding=sh),
        abstract.to_pure_dict(), sharding.param_shardings(abstract, mesh))
    rows = sharding.batch_sharding(mesh)
    tokens = jax.ShapeDtypeStruct((batch, prompt_length), jnp.int32, sharding=rows)
    pixels = None
    if cfg.vision is not None:
        v = cfg.vision
        pixels = jax.ShapeDtypeStruct((batch, v.num_channels, v.image_size, v.image_size),
                                      jnp.float32, sharding=rows)
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    facts = {"batch": batch, "prompt_length": prompt_length, "new_tokens": new_tokens,
             "weights": cfg.text.dtype, "mesh": dict(mesh.shape)}

    def lower():
        with sharding.use_mesh(mesh):
            return decode.lower_greedy(graphdef, params, tokens, tokens, pixels,
                                       max_new_tokens=new_tokens, eos_ids=cfg.eos_token_ids,
                                       pad_id=pad)

    return compile_fit(lower, hbm_bytes, facts)


def decode_search(cfg: VLMConfig, mesh: Mesh, hbm_bytes: float, *, prompt_length: int,
                  new_tokens: int, report: Callable[[Fit], None] = lambda fit: None
                  ) -> list[Fit]:
    """The largest decode batch that fits: a binary search over the row shards times powers of
    two (up to 2,048 rows). Every compilation is returned (and ``report``-ed) in order."""
    shards = sharding.row_shards(mesh)
    candidates = [shards * 2 ** k for k in range(12) if shards * 2 ** k <= 2048]
    tried: list[Fit] = []
    low, high = 0, len(candidates)  # candidates[:low] fit, candidates[high:] do not
    while low < high:
        mid = (low + high) // 2
        fit = decode_fit(cfg, mesh, hbm_bytes, batch=candidates[mid],
                         prompt_length=prompt_length, new_tokens=new_tokens)
        tried.append(fit)
        report(fit)
        low, high = (mid + 1, high) if fit.fits else (low, mid)
    return tried
