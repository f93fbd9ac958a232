"""Answer one prompt (optionally about an image) with a checkpoint.

    python -m basque_vlm.generate --checkpoint=CKPT --prompt="Zer dago irudian?" --image=cat.jpg

The prompt is one user message rendered with the checkpoint's chat template. Temperature 0 is
greedy decoding. Prints the answer; ``--output_json`` also writes ``{"text", "token_ids"}`` (the
generated ids, up to and including the end-of-turn token).
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
from absl import flags, logging
from jax.sharding import Mesh

from basque_vlm.data.image import open_image
from basque_vlm.infer import placement
from basque_vlm.infer.assistant import complete
from basque_vlm.infer.prompts import chat_inputs
from basque_vlm.runtime import cli, distributed, paths
from basque_vlm.store import checkpoint

flags.DEFINE_string("checkpoint", None, "project checkpoint folder (see `convert`) or training "
                    "workdir (its latest step); local or gs://", required=True)
flags.DEFINE_string("prompt", None, "the user message", required=True)
flags.DEFINE_string("image", None, "an image file the prompt is about")
flags.DEFINE_integer("max_new_tokens", 64, "most tokens to generate", lower_bound=1)
flags.DEFINE_float("temperature", 0.0, "0 = greedy; otherwise sampling temperature",
                   lower_bound=0.0)
flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass in (0, 1] (with temperature > 0)")
flags.register_validator("top_p", lambda p: 0 < p <= 1, message="--top_p must be in (0, 1]")
flags.DEFINE_integer("seed", 0, "sampling seed")
flags.DEFINE_string("output_json", None, "also write {text, token_ids} here (local or gs://)")
placement.define_flags()
FLAGS = flags.FLAGS


def prompt_inputs(checkpoint_dir: str, prompt: str, image_path: str | None
                  ) -> tuple[Any, dict[str, np.ndarray]]:
    """The checkpoint's processor, and the model inputs of the prompt (one user message)."""
    checkpoint.load_config(checkpoint_dir)
    image = None if image_path is None else open_image(image_path)
    processor = checkpoint.load_processor(checkpoint_dir)  # once the input is known good
    return processor, chat_inputs(processor, [prompt], None if image is None else [image])


def run(checkpoint_dir: str, prompt: str, image_path: str | None, max_new_tokens: int,
        temperature: float, top_p: float, seed: int, mesh: Mesh | None = None) -> dict:
    """``{"text": answer, "token_ids": generated ids}``, decoded on ``mesh`` (default:
    `placement.decode_mesh`'s choice)."""
    processor, inputs = prompt_inputs(checkpoint_dir, prompt, image_path)
    # One prompt: the scanned decoder compiles several times faster than the unrolled one.
    if mesh is None:
        mesh = placement.decode_mesh(checkpoint.load_config(checkpoint_dir),
                                     checkpoint.stored_bytes(checkpoint_dir))
    _, model = checkpoint.load_model(checkpoint_dir, mesh=mesh, scan_layers=True)
    return complete(model, processor, inputs, max_new_tokens=max_new_tokens,
                    temperature=temperature, top_p=top_p, seed=seed, mesh=mesh)


def _generate() -> None:
    distributed.init()
    cli.skip_absent_tpu()
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs each step of a load at INFO
    mesh = placement.from_flags(checkpoint.load_config(FLAGS.checkpoint),
                                checkpoint.stored_bytes(FLAGS.checkpoint))
    result = run(FLAGS.checkpoint, FLAGS.prompt, FLAGS.image, FLAGS.max_new_tokens,
                 FLAGS.temperature, FLAGS.top_p, FLAGS.seed, mesh)
    if jax.process_index() != 0:  # every process decodes; the first answers
        return
    print(result["text"])
    if FLAGS.output_json:
        paths.path(FLAGS.output_json).write_text(json.dumps(result, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    cli.start("generate", _generate)
