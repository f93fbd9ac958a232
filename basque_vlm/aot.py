"""Will it fit? Compile the train step and the decode step for a TPU slice on this (CPU) machine.

    python -m basque_vlm.aot --config=configs/llama31_8b.py:instruct --topology=v5p-8 [--search]
    python -m basque_vlm.aot --architecture=latxa31_70b --notrain --topology=v5p-8 \\
        --mesh_tensor=4 --decode_batch=32 --decode_prompt_length=1024 --decode_new_tokens=1024

The train step is built and jitted exactly as ``train`` does (`loop.plan_step`), with abstract
parameters only (no weights are read or made), over libtpu's compile-only devices of the slice;
the decode step is ``evaluate``'s and ``translate``'s (prefill + KV-cache loop), sharded over a
``data × fsdp × tensor`` mesh of the slice (``--mesh_*``; by default the smallest ``tensor`` that
fits the weights), the weights in the compute dtype (bfloat16 for a named architecture). Prints
the per-chip memory (arguments, outputs, temporaries, peak) against the chip's HBM, the model
FLOPs of a train step (counted analytically) and whether each fits; ``--search`` tries per-chip
micro-batch sizes × remat policies for training, and decode batches, and reports the largest
that fits. ``--notrain`` compiles only the decode step. The last stdout line is JSON (its
``decode`` object holds ``fits``, ``per_chip_peak_gib``, ``mesh``). Needs libtpu (``pip install
libtpu==0.0.42.1``).

When ``init_checkpoint`` is not on this machine, the paper configs (configs/llama31_8b.py,
configs/latxa31_8b.py) plan their known architecture (``basque_vlm.model.architectures``);
``--architecture`` names one explicitly: the 8B VLMs, or the 70B language models
(``latxa31_70b``, the paper's translator, and ``llama31_70b``), which need no config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
from absl import flags
from ml_collections import config_flags

from basque_vlm.infer import placement
from basque_vlm.runtime import cli

config_flags.DEFINE_config_file("config", None, "Experiment config, as for train (not needed "
                                "with --notrain --architecture=NAME).")
flags.DEFINE_string("topology", None, "TPU slice: v4-8, v5e-8, v5e-16, v5p-8, v6e-8, ... or a "
                    "JAX topology string (v5e:2x4).")
flags.DEFINE_bool("search", False, "Try per-chip batch sizes × remat policies (train) and "
                  "decode batches; report the largest that fits.")
flags.DEFINE_list("remat_policies", None, "Policies --search tries (default: full, "
                  "save_qkv_attention, dots_saveable, none).")
flags.DEFINE_string("architecture", None, "Plan this architecture (llama31_8b, latxa31_8b, "
                    "llama31_70b, latxa31_70b) instead of init_checkpoint's.")
flags.DEFINE_bool("train", True, "Compile the train step (--notrain: only the decode step).")
flags.DEFINE_bool("decode", True, "Compile the decode step.")
flags.DEFINE_integer("decode_batch", 16, "Decode: prompts decoded together (evaluate's "
                     "--batch_size).", lower_bound=1)
flags.DEFINE_integer("decode_prompt_length", 640, "Decode: prompt tokens (image ones included).")
flags.DEFINE_integer("decode_new_tokens", 1024, "Decode: generated tokens (WildVision's).")
placement.define_flags()
FLAGS = flags.FLAGS


def _architecture(config: Any):
    """The stored model to plan, or None for the config's own (`setup.model_configs`)."""
    from basque_vlm.model import architectures

    if FLAGS.architecture:
        if FLAGS.architecture not in architectures.KNOWN:
            raise ValueError(f"--architecture={FLAGS.architecture}: not one of "
                             f"{', '.join(architectures.KNOWN)}")
        return architectures.architecture(FLAGS.architecture)
    ckpt = config.get("init_checkpoint")
    if not ckpt or Path(ckpt).exists():
        return None
    name = Path(config_flags.get_config_filename(FLAGS["config"])).stem
    if name not in architectures.PAPER:
        raise ValueError(f"init_checkpoint {ckpt} is not on this machine: name the model with "
                         f"--architecture ({', '.join(architectures.PAPER)}) or point "
                         "--config.init_checkpoint at a converted checkpoint")
    print(f"init_checkpoint {ckpt} is not here: planning {name}'s architecture (Llama-3.1-8B + "
          "CLIP ViT-L/14-336 + linear connector)", flush=True)
    return architectures.paper_vlm(name)


def _line(what: str, fit) -> str:
    if fit.memory is None:
        return f"  {what}: the compiler ran out of memory ({fit.error}) [{fit.compile_s:.0f} s]"
    g = fit.memory.gib()
    verdict = "fits" if fit.fits else "does NOT fit"
    return (f"  {what}: arguments {g['arguments']:.2f} GiB, outputs {g['outputs']:.2f} "
            f"({g['aliased']:.2f} donated), temporaries {g['temporaries']:.2f}, peak "
            f"{g['peak']:.2f} of {fit.hbm_bytes / 2 ** 30:g} GiB: {verdict} "
            f"[compile {fit.compile_s:.0f} s]")


def _train_what(facts: dict[str, Any]) -> str:
    b = facts["batch"]
    return (f"train, {b['per_chip']} rows/chip × {b['microbatches']} micro-batch(es) (global "
            f"{b['global']}) × {b['length']} tokens, remat {facts['remat']}")


def _aot() -> None:
    if not FLAGS.topology:
        raise ValueError("--topology is required")
    if FLAGS.config is None and (FLAGS.train or not FLAGS.architecture):
        raise ValueError("--config is required (or --notrain --architecture=NAME)")
    if not (FLAGS.train or FLAGS.decode):
        raise ValueError("--notrain --nodecode: nothing to compile")
    jax.config.update("jax_platforms", "cpu")  # only compiles: never claim a local accelerator
    cli.quiet_libraries()
    from basque_vlm.tpu import fit, topologies

    tpu = topologies.parse(FLAGS.topology)
    devices = topologies.devices(tpu)
    hbm = tpu.generation.hbm_gib * fit.GIB
    stored = _architecture(FLAGS.config)
    print(f"{tpu.name}: {tpu.topology}, {tpu.chips} chips ({devices[0].device_kind}), "
          f"{tpu.generation.hbm_gib:g} GiB HBM per chip (usable)", flush=True)
    result = {"topology": tpu.name, "jax_topology": tpu.topology, "chips": tpu.chips,
              "hbm_gib": tpu.generation.hbm_gib}
    if FLAGS.train:
        result.update(_train(FLAGS.config, stored, tpu, devices, hbm))
    if FLAGS.decode:
        result.update(_decode(_decode_config(stored), devices, hbm))
    print(json.dumps(result), flush=True)


def _train(config: Any, stored: Any, tpu: Any, devices: list, hbm: float) -> dict[str, Any]:
    """The train step's fit (or ``--search``'s), printed; its JSON keys."""
    from basque_vlm.tpu import fit
    from basque_vlm.training import metrics

    peak_flops = metrics.peak_flops(devices[0].device_kind)
    if FLAGS.search:
        policies = FLAGS.remat_policies or fit.SEARCH_REMAT
        tried = fit.search(config, devices, hbm, stored, policies,
                           report=lambda f: print(_line(_train_what(f.facts), f), flush=True))
        chosen = fit.best(tried) or min(tried, key=lambda f: f.memory.peak if f.memory else 1e30)
        print(f"largest that fits: {_train_what(chosen.facts)}" if chosen.fits else
              "nothing fits", flush=True)
    else:
        chosen = fit.train_fit(config, devices, hbm, stored)
        print(_line(_train_what(chosen.facts), chosen), flush=True)
        tried = [chosen]
    facts = chosen.facts
    tflops = facts["model_tflops_per_step"]
    ideal = tflops * 1e12 / (peak_flops * tpu.chips) if peak_flops else None
    kernels = facts["attention"]
    print(f"  model FLOPs per step: {tflops:.4g} TFLOP; attention {kernels['setting']}: "
          f"{kernels['text']} (text), {kernels['vision']} (vision)"
          + (f"; at 100% MFU ({peak_flops / 1e12:.0f} TFLOP/s per chip) a step takes "
             f"{ideal:.3g} s" if ideal else ""), flush=True)
    result = {**chosen.summary(), "ideal_step_s": None if ideal is None else round(ideal, 3)}
    if FLAGS.search:
        result["search"] = [f.summary() for f in tried]
        result["total_compile_s"] = round(sum(f.compile_s for f in tried), 1)
    return result


def _decode_config(stored: Any) -> Any:
    """The model the decode step computes: the config's (with its ``compute`` settings), or a
    named architecture's in bfloat16."""
    from basque_vlm.model.vlm import VLMConfig
    from basque_vlm.training import setup

    if FLAGS.config is not None:
        return setup.model_configs(FLAGS.config, stored)[1]
    return VLMConfig.from_dict(stored.to_dict(), dtype="bfloat16")


def _decode(cfg: Any, devices: list, hbm: float) -> dict[str, Any]:
    """The decode step's fit on its mesh (and with ``--search``, the largest batch that fits),
    printed; its JSON keys."""
    from basque_vlm.model import sharding
    from basque_vlm.tpu import fit

    weights = placement.weight_bytes(cfg, cfg.text.dtype)
    mesh = placement.decode_mesh(cfg, weights, data=FLAGS.mesh_data, fsdp=FLAGS.mesh_fsdp,
                                 tensor=FLAGS.mesh_tensor, devices=devices, memory=hbm)
    axes = " × ".join(f"{k}={v}" for k, v in mesh.shape.items())
    lengths = (FLAGS.decode_prompt_length, FLAGS.decode_new_tokens)

    def what(batch: int) -> str:
        return (f"decode on {axes}, {cfg.text.dtype} weights ({weights / 2 ** 30:.1f} GiB), "
                f"{batch} × ({lengths[0]} + {lengths[1]}) tokens")

    shards = sharding.row_shards(mesh)  # as evaluate does, the batch is whole row shards
    batch = -(-FLAGS.decode_batch // shards) * shards
    result = {}
    dec = fit.decode_fit(cfg, mesh, hbm, batch=batch, prompt_length=lengths[0],
                         new_tokens=lengths[1])
    print(_line(what(batch), dec), flush=True)
    result["decode"] = dec.summary()
    if FLAGS.search:
        tried = fit.decode_search(cfg, mesh, hbm, prompt_length=lengths[0], new_tokens=lengths[1],
                                  report=lambda f: print(_line(what(f.facts["batch"]), f),
                                                         flush=True))
        best = max((f for f in tried if f.fits), key=lambda f: f.facts["batch"], default=None)
        print(f"largest decode batch that fits: {best.facts['batch'] if best else 'none'}",
              flush=True)
        result["decode_search"] = [f.summary() for f in tried]
        result["decode"]["largest_batch"] = best.facts["batch"] if best else None
    return result


if __name__ == "__main__":
    cli.start("aot", _aot)
