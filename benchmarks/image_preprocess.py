"""Image preprocessing throughput: a 640×480 JPEG → CLIP-336 ``pixel_values``, one core.

Times decode + EXIF + RGB + resize + crop + normalise (``open_image`` then ``preprocess``), beside
transformers' ``CLIPImageProcessorPil`` on the same decoded image, and reports the largest
difference between the two outputs. The last stdout line is JSON.

    python benchmarks/image_preprocess.py [--images=200]
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
from absl import app, flags
from PIL import Image
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from basque_vlm.data.image import ImageSpec, open_image, preprocess

flags.DEFINE_integer("images", 200, "images per timed pass")
FLAGS = flags.FLAGS


def photo_like_jpeg(width: int = 640, height: int = 480) -> bytes:
    """Smooth gradients plus mild noise: decodes like a photo (pure noise would be slower)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    pixels = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], -1)
    pixels += rng.normal(0, 8, pixels.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def rate(fn, n: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main(argv):
    del argv
    data = photo_like_jpeg()
    processor = CLIPImageProcessorPil(size={"shortest_edge": 336},
                                      crop_size={"height": 336, "width": 336})
    spec = ImageSpec.from_config(processor.to_dict())
    decoded = open_image(data)
    result = {
        "jpeg_bytes": len(data),
        "ours_images_per_s": rate(lambda: preprocess(open_image(data), spec), FLAGS.images),
        "ours_preprocess_only_images_per_s": rate(lambda: preprocess(decoded, spec),
                                                  FLAGS.images),
        "transformers_preprocess_only_images_per_s": rate(
            lambda: processor(images=decoded, return_tensors="np"), FLAGS.images),
        "max_abs_diff_vs_transformers": float(np.abs(
            preprocess(decoded, spec)
            - processor(images=decoded, return_tensors="np")["pixel_values"][0]).max()),
    }
    print(json.dumps({k: round(v, 1) if "per_s" in k else v for k, v in result.items()}))


if __name__ == "__main__":
    app.run(main)
