"""Host memory while a converted checkpoint is loaded onto devices, as ``Assistant`` (the notebook)
and ``generate`` load it: `checkpoint.load_model(ckpt, mesh=...)` reads each weight straight into
its shards on the mesh's devices, so the host should hold little more than one tensor at a time.

Writes a synthetic Llama-architecture LLM of at least ``--size_gb`` and a tiny CLIP
(`convert_memory.write_llm`), converts them (`python -m basque_vlm.convert`), then loads the
checkpoint in a fresh process over ``--devices`` simulated CPU devices with the weights split over
all of them (``fsdp``; `placement.decode_mesh`). That process samples its resident memory every
10 ms. On CPU the devices' buffers are host memory too, so what the loader itself holds is
``RSS - libraries - bytes placed on the devices``, where "libraries" is the RSS after the imports
and the mesh, before the first read. Target: at most 1.3 × the largest tensor
(``--loader_target``). The generated files are deleted at the end. The last stdout line is JSON.

    python benchmarks/load_memory.py [--size_gb=2] [--dtype=float32] [--devices=8]
        [--workdir=DIR]
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import ml_dtypes
import numpy as np
from absl import app, flags
from convert_memory import ROOT, write_llm  # and its flags: --size_gb, --dtype, --workdir

flags.DEFINE_integer("devices", 8, "simulated CPU devices the weights are split over")
flags.DEFINE_float("loader_target", 1.3, "the loader's own peak memory / the largest tensor")
flags.DEFINE_string("load", None, "(internal) load this checkpoint and report its memory")
FLAGS = flags.FLAGS


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def measure_load(ckpt: str) -> dict[str, float]:
    """In this process: the libraries' RSS, then the peak over the load of RSS and of RSS less
    the bytes on the devices (sampled every 10 ms)."""
    import jax

    from basque_vlm.infer import placement
    from basque_vlm.store import checkpoint

    cfg = checkpoint.load_config(ckpt)
    mesh = placement.decode_mesh(cfg, checkpoint.stored_bytes(ckpt), fsdp=jax.device_count())
    base = rss()
    peaks = {"rss": base, "loader": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            now = rss()
            placed = sum(a.nbytes for a in jax.live_arrays())
            peaks["rss"] = max(peaks["rss"], now)
            peaks["loader"] = max(peaks["loader"], now - base - placed)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    _, model = checkpoint.load_model(ckpt, mesh=mesh)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    placed = sum(a.nbytes for a in jax.live_arrays())
    del model
    return {"libraries_rss_bytes": base, "peak_rss_bytes": peaks["rss"],
            "loader_peak_bytes": peaks["loader"], "placed_bytes": placed,
            "mesh": dict(mesh.shape), "load_seconds": round(seconds, 1)}


def largest_tensor(ckpt: Path) -> tuple[int, int]:
    """(the largest parameter's bytes, all parameters' bytes), from the Orbax metadata."""
    import jax
    import orbax.checkpoint as ocp

    leaves = jax.tree.leaves(ocp.PyTreeCheckpointHandler().metadata(ckpt / "params").tree)
    sizes = [math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in leaves]
    return max(sizes), sum(sizes)


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.load:
        print(json.dumps(measure_load(FLAGS.load)))
        return
    from basque_vlm.testing import tiny_models

    work = Path(tempfile.mkdtemp(prefix="load_memory.", dir=FLAGS.workdir))
    try:
        dtype = np.dtype(np.float32 if FLAGS.dtype == "float32" else ml_dtypes.bfloat16)
        llm_bytes = write_llm(work / "llm", FLAGS.size_gb * 1e9, dtype)
        tiny_models.save_vision(work / "vision", "clip")
        ckpt = work / "ckpt"
        subprocess.run([sys.executable, "-m", "basque_vlm.convert", f"--llm_dir={work / 'llm'}",
                        f"--vision_dir={work / 'vision'}", "--projector=linear", f"--out={ckpt}"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        largest, total = largest_tensor(ckpt)
        print(f"converted {llm_bytes / 1e9:.2f} GB of {dtype} weights; largest tensor "
              f"{largest / 2 ** 20:.0f} MiB")
        env = {**os.environ,
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={FLAGS.devices}"}
        proc = subprocess.run([sys.executable, __file__, f"--load={ckpt}"], env=env,
                              capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"loading failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.splitlines()[-1])
        ratio = result["loader_peak_bytes"] / largest
        print(json.dumps({"checkpoint_bytes": total, "largest_tensor_bytes": largest, **result,
                          "loader_peak_over_largest_tensor": round(ratio, 3),
                          "target": FLAGS.loader_target,
                          "meets_target": ratio <= FLAGS.loader_target}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
