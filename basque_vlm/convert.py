"""Hugging Face weights → a project checkpoint.

    python -m basque_vlm.convert --hf_dir=DIR --out=CKPT
    python -m basque_vlm.convert --llm_dir=DIR --vision_dir=DIR --projector=linear --out=CKPT
    python -m basque_vlm.convert --llm_dir=DIR --out=CKPT

The first imports a ``LlavaForConditionalGeneration`` folder; the second assembles a new VLM from a
Llama-family LLM and a CLIP/SigLIP vision tower with a freshly initialised connector; the third
imports the LLM alone, a text-only checkpoint (a translator for `translate`, text-only
evaluation). Weights are read one tensor at a time; ``--dtype=auto`` keeps the source dtype.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
from absl import flags

from basque_vlm.hf import importer
from basque_vlm.model.connector import CONNECTORS
from basque_vlm.runtime import cli
from basque_vlm.store import checkpoint

PROG = "convert"
DTYPES = {"auto": None, "float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}

flags.DEFINE_string("hf_dir", None, "A LlavaForConditionalGeneration folder to import.")
flags.DEFINE_string("llm_dir", None, "Assembly: a Llama-family LLM folder.")
flags.DEFINE_string("vision_dir", None, "Assembly: a CLIP or SigLIP vision model folder.")
flags.DEFINE_string("projector", None, f"Assembly: the new connector, one of {CONNECTORS}.")
flags.DEFINE_string("out", None, "The checkpoint folder to write; must not exist or be empty.")
flags.DEFINE_string("dtype", "auto", f"Stored parameter dtype, one of {list(DTYPES)}; auto keeps "
                    "the source dtype.")
flags.DEFINE_integer("seed", 0, "Assembly: the seed of the connector's initialisation.")
FLAGS = flags.FLAGS


def check_flags() -> None:
    """Raises ValueError naming the first bad flag or flag combination."""
    assembly = {"--llm_dir": FLAGS.llm_dir, "--vision_dir": FLAGS.vision_dir,
                "--projector": FLAGS.projector}
    given = [name for name, value in assembly.items() if value]
    if FLAGS.hf_dir and given:
        raise ValueError(f"--hf_dir imports a LLaVA folder; it cannot be combined with "
                         f"{', '.join(given)}")
    if not FLAGS.hf_dir and given != ["--llm_dir"] and len(given) < len(assembly):
        if not given:
            raise ValueError("give --hf_dir=DIR, or --llm_dir=DIR --vision_dir=DIR "
                             "--projector=linear|mlp2x_gelu (or --llm_dir=DIR alone: text only)")
        missing = [name for name in assembly if name not in given]
        raise ValueError(f"assembling a VLM also needs {', '.join(missing)}")
    if FLAGS.projector and FLAGS.projector not in CONNECTORS:
        raise ValueError(f"--projector must be one of {'|'.join(CONNECTORS)}, "
                         f"got {FLAGS.projector!r}")
    if FLAGS.dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {'|'.join(DTYPES)}, got {FLAGS.dtype!r}")
    if not FLAGS.out:
        raise ValueError("--out=CKPT is required")
    out = Path(FLAGS.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} already exists and is not empty")


def convert(out: Path) -> dict:
    """Writes the checkpoint ``out`` from the flags; returns the parameter tree."""
    dtype = DTYPES[FLAGS.dtype]
    if FLAGS.hf_dir:
        importer.check_llava(FLAGS.hf_dir)  # a bad folder fails before any weight is read
        importer.load_processor(FLAGS.hf_dir)
        cfg, params = importer.import_llava(FLAGS.hf_dir, dtype, log=print)
    elif FLAGS.vision_dir:
        cfg, params, processor = importer.assemble(FLAGS.llm_dir, FLAGS.vision_dir,
                                                   FLAGS.projector, dtype, FLAGS.seed, log=print)
    else:
        cfg, params, processor = importer.import_llm(FLAGS.llm_dir, dtype, log=print)
    print(f"writing the checkpoint to {out}")
    checkpoint.save(out, cfg, params)
    if FLAGS.hf_dir:
        importer.copy_assets(FLAGS.hf_dir, out)
    else:
        processor.save_pretrained(str(out))
        generation = Path(FLAGS.llm_dir) / "generation_config.json"
        if generation.is_file():
            shutil.copy2(generation, out / generation.name)
    if cfg.vision is None:
        checkpoint.load_processor(out)  # the tokenizer and its chat template load
    else:
        importer.load_processor(out)
    return params


def _convert() -> None:
    cli.quiet_libraries()
    check_flags()
    out = Path(FLAGS.out)
    existed = out.exists()
    start = time.perf_counter()
    try:
        params = convert(out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # leave --out as it was: a rerun just works
        if existed:
            out.mkdir()
        raise
    leaves = jax.tree.leaves(params)
    dtypes = "+".join(sorted({str(a.dtype) for a in leaves}))
    print(f"{PROG}: wrote {out}: {sum(a.size for a in leaves):,} parameters ({dtypes}), "
          f"{sum(a.nbytes for a in leaves):,} bytes, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    cli.start(PROG, _convert)
