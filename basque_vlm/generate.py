"""Answer one prompt (optionally about an image) with a checkpoint.

    python -m basque_vlm.generate --checkpoint=CKPT --prompt="Zer dago irudian?" --image=cat.jpg

The prompt is one user message rendered with the checkpoint's chat template. Temperature 0 is
greedy decoding. Prints the answer; ``--output_json`` also writes ``{"text", "token_ids"}`` (the
generated ids, up to and including the end-of-turn token).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app, flags, logging
from PIL import Image, UnidentifiedImageError

from basque_vlm import checkpoint, cli, paths
from basque_vlm.infer.assistant import complete
from basque_vlm.infer.prompts import chat_inputs

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
flags.DEFINE_string("output_json", None, "also write {text, token_ids} here")
FLAGS = flags.FLAGS


class InputError(ValueError):
    """Bad user input: reported in one line, without a traceback."""


def read_image(path: str) -> Image.Image:
    if not Path(path).is_file():
        raise InputError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"cannot read image {path}: {e}") from None


def run(checkpoint_dir: str, prompt: str, image_path: str | None, max_new_tokens: int,
        temperature: float, top_p: float, seed: int) -> dict:
    """``{"text": answer, "token_ids": generated ids}``."""
    checkpoint.load_config(checkpoint_dir)
    image = None if image_path is None else read_image(image_path)
    from transformers import AutoProcessor  # slow to import: only once the input is known good

    try:
        processor = AutoProcessor.from_pretrained(str(paths.local_copy(checkpoint_dir)))
    except OSError as e:
        raise InputError(f"cannot load the tokenizer/processor of {checkpoint_dir}: {e}") from None
    inputs = chat_inputs(processor, [prompt], None if image is None else [image])
    # One prompt: the scanned decoder compiles several times faster than the unrolled one.
    _, model = checkpoint.load_model(checkpoint_dir, scan_layers=True)
    return complete(model, processor, inputs, max_new_tokens=max_new_tokens,
                    temperature=temperature, top_p=top_p, seed=seed)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cli.skip_absent_tpu()
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs each step of a load at INFO
    try:
        result = run(FLAGS.checkpoint, FLAGS.prompt, FLAGS.image, FLAGS.max_new_tokens,
                     FLAGS.temperature, FLAGS.top_p, FLAGS.seed)
    except (checkpoint.CheckpointNotFound, InputError) as e:
        sys.exit(f"generate: {e}")
    print(result["text"])
    if FLAGS.output_json:
        Path(FLAGS.output_json).write_text(json.dumps(result, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    app.run(main)
