"""A project checkpoint → a Hugging Face ``LlavaForConditionalGeneration`` folder.

    python -m basque_vlm.export --checkpoint=CKPT --out=DIR

The folder loads with ``LlavaForConditionalGeneration.from_pretrained`` and
``AutoProcessor.from_pretrained`` and gives the checkpoint's logits.
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import flags

from basque_vlm.hf import shards, writer
from basque_vlm.runtime import cli
from basque_vlm.store import checkpoint

PROG = "export"

flags.DEFINE_string("checkpoint", None, "The project checkpoint folder (CKPT) to export.")
flags.DEFINE_string("out", None, "The folder to write; must not exist or be empty.")
flags.DEFINE_string("max_shard_size", "5GB", "Largest safetensors file (e.g. 5GB, 500MB); "
                    "bigger models are sharded with a model.safetensors.index.json.")
FLAGS = flags.FLAGS


def check_flags() -> int:
    """Raises ValueError naming a bad flag; returns the shard size in bytes."""
    for name in ("checkpoint", "out"):
        if not FLAGS[name].value:
            raise ValueError(f"--{name} is required")
    out = Path(FLAGS.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} already exists and is not empty")
    if checkpoint.load_config(FLAGS.checkpoint).vision is None:  # before anything is written
        raise ValueError(f"{FLAGS.checkpoint} is a text-only checkpoint (no vision tower); "
                         "export writes LlavaForConditionalGeneration folders")
    try:
        size = shards.parse_size(FLAGS.max_shard_size)
    except ValueError:
        size = 0
    if size <= 0:
        raise ValueError(f"--max_shard_size must be a size such as 5GB, got "
                         f"{FLAGS.max_shard_size!r}")
    return size


def _export() -> None:
    cli.quiet_libraries()
    start = time.perf_counter()
    max_shard_bytes = check_flags()
    if checkpoint.load_config(FLAGS.checkpoint).connector == "linear":
        print(writer.LINEAR_NOTE)
    files = writer.export_checkpoint(FLAGS.checkpoint, FLAGS.out, max_shard_bytes, log=print)
    size = sum(f.stat().st_size for f in files)
    print(f"{PROG}: wrote {FLAGS.out}: {len(files)} safetensors file(s), {size:,} bytes, "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    cli.start(PROG, _export)
