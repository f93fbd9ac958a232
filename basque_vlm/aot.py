"""Will it fit? Compile the train step and the decode step for a TPU slice on this (CPU) machine.

    python -m basque_vlm.aot --config=configs/llama31_8b.py:instruct --topology=v5p-8 [--search]

The train step is built and jitted exactly as ``train`` does (`loop.plan_step`), with abstract
parameters only (no weights are read or made), over libtpu's compile-only devices of the slice;
the decode step is ``evaluate``'s, on one chip with the weights in the compute dtype. Prints the
per-chip memory (arguments, outputs, temporaries, peak) against the chip's HBM, the model FLOPs
of a step (counted analytically) and whether it fits; ``--search`` tries per-chip micro-batch
sizes (the global batch kept, ``train.microbatches`` adjusted) × remat policies and reports the
largest that fits. The last stdout line is JSON. Needs libtpu (``pip install libtpu==0.0.42.1``).

When ``init_checkpoint`` is not on this machine, the paper configs (configs/llama31_8b.py,
configs/latxa31_8b.py) plan their known architecture (``basque_vlm.model.architectures``);
``--architecture`` names one explicitly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
from absl import app, flags
from ml_collections import config_flags

from basque_vlm.runtime import cli

config_flags.DEFINE_config_file("config", None, "Experiment config, as for train.")
flags.DEFINE_string("topology", None, "TPU slice: v4-8, v5e-8, v5e-16, v5p-8, v6e-8, ... or a "
                    "JAX topology string (v5e:2x4).")
flags.DEFINE_bool("search", False, "Try per-chip batch sizes × remat policies; report the "
                  "largest that fits.")
flags.DEFINE_list("remat_policies", None, "Policies --search tries (default: full, "
                  "save_qkv_attention, dots_saveable, none).")
flags.DEFINE_string("architecture", None, "Plan this architecture (llama31_8b, latxa31_8b) "
                    "instead of init_checkpoint's.")
flags.DEFINE_bool("decode", True, "Also compile the decode step (one chip).")
flags.DEFINE_integer("decode_batch", 16, "Decode: prompts per batch (evaluate's --batch_size).")
flags.DEFINE_integer("decode_prompt_length", 640, "Decode: prompt tokens (image ones included).")
flags.DEFINE_integer("decode_new_tokens", 1024, "Decode: generated tokens (WildVision's).")
FLAGS = flags.FLAGS


def _architecture(config: Any):
    """The stored model to plan, or None for the config's own (`setup.model_configs`)."""
    from basque_vlm.model import architectures

    if FLAGS.architecture:
        return architectures.paper_vlm(FLAGS.architecture)
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
    if FLAGS.config is None or not FLAGS.topology:
        raise ValueError("--config and --topology are required")
    jax.config.update("jax_platforms", "cpu")  # only compiles: never claim a local accelerator
    cli.quiet_libraries()
    from basque_vlm.tpu import fit, topologies
    from basque_vlm.training import metrics, setup

    tpu = topologies.parse(FLAGS.topology)
    devices = topologies.devices(tpu)
    hbm = tpu.generation.hbm_gib * fit.GIB
    config, stored = FLAGS.config, _architecture(FLAGS.config)
    peak_flops = metrics.peak_flops(devices[0].device_kind)
    print(f"{tpu.name}: {tpu.topology}, {tpu.chips} chips ({devices[0].device_kind}), "
          f"{tpu.generation.hbm_gib:g} GiB HBM per chip (usable)", flush=True)

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
    result = {"topology": tpu.name, "jax_topology": tpu.topology, "chips": tpu.chips,
              "hbm_gib": tpu.generation.hbm_gib, **chosen.summary(),
              "ideal_step_s": None if ideal is None else round(ideal, 3)}
    if FLAGS.search:
        result["search"] = [f.summary() for f in tried]
        result["total_compile_s"] = round(sum(f.compile_s for f in tried), 1)
    if FLAGS.decode:
        _, cfg = setup.model_configs(config, stored)
        dec = fit.decode_fit(cfg, devices[0], hbm, batch=FLAGS.decode_batch,
                             prompt_length=FLAGS.decode_prompt_length,
                             new_tokens=FLAGS.decode_new_tokens)
        print(_line(f"decode on one chip, {cfg.text.dtype} weights, {FLAGS.decode_batch} × "
                    f"({FLAGS.decode_prompt_length} + {FLAGS.decode_new_tokens}) tokens", dec),
              flush=True)
        result["decode"] = dec.summary()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    app.run(cli.main("aot", _aot), flags_parser=cli.flags_parser("aot"))
