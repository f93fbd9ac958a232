"""Image loading and preprocessing (numpy/PIL), exactly as transformers' image processors do it.

The reference is transformers' PIL backend (``CLIPImageProcessorPil``,
``SiglipImageProcessorPil``, ``LlavaImageProcessorPil``): convert to RGB (transparency composited
onto white), optionally pad to a square with the mean colour (LLaVA-1.5's ``pad``), resize with PIL
on uint8 pixels (shortest edge, or a fixed height × width), centre crop, rescale in float64 then
cast to float32, normalise in float32. The same PIL operations in the same order give the same
bits (measured: max |Δ| = 0).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
# image_processor_type (or legacy feature_extractor_type) → the class defaults of transformers.
_CLIP = dict(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
             do_center_crop=True, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
_DEFAULTS = {
    "CLIPImageProcessor": _CLIP,
    "CLIPFeatureExtractor": _CLIP,
    "LlavaImageProcessor": _CLIP,
    "SiglipImageProcessor": dict(size={"height": 224, "width": 224}, do_center_crop=False,
                                 image_mean=HALF, image_std=HALF),
}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
STORED_FORMATS = ("PNG", "JPEG")  # what a prepared dataset keeps as it is


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """What to do to an image; ``None`` skips a step. Build it with ``from_config``."""

    shortest_edge: int | None = None        # resize keeping the aspect ratio (CLIP) ...
    resize_to: tuple[int, int] | None = None  # ... or to exactly (height, width) (SigLIP)
    crop: tuple[int, int] | None = None     # centre crop (height, width)
    resample: int = Image.Resampling.BICUBIC
    rescale_factor: float | None = 1 / 255
    mean: tuple[float, ...] | None = None   # normalise with mean/std
    std: tuple[float, ...] | None = None
    convert_rgb: bool = True
    pad_color: tuple[int, int, int] | None = None  # first pad to a square (LLaVA-1.5 ``pad``)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], pad_to_square: bool | None = None
                    ) -> ImageSpec:
        """From a ``preprocessor_config.json`` dict (or a ``processor_config.json`` dict holding
        one under ``image_processor``). ``pad_to_square`` overrides the config's ``do_pad``."""
        config = config.get("image_processor", config)
        kind = config.get("image_processor_type") or config.get("feature_extractor_type", "")
        kind = kind.removesuffix("Pil").removesuffix("Fast")
        if kind not in _DEFAULTS:
            raise ValueError(f"unsupported image processor {kind!r}; expected one of "
                             f"{sorted(_DEFAULTS)}")
        c = {**_DEFAULTS[kind], **config}
        pad = c.get("do_pad", False) if pad_to_square is None else pad_to_square
        shortest, resize_to = None, None
        if c.get("do_resize", True):
            size = c["size"]
            if isinstance(size, int):  # legacy configs; transformers reads it as the shortest edge
                size = {"shortest_edge": size}
            if set(size) == {"shortest_edge"}:
                shortest = int(size["shortest_edge"])
            elif set(size) == {"height", "width"}:
                resize_to = (int(size["height"]), int(size["width"]))
            else:
                raise ValueError(f"unsupported size {size!r}")
        crop = None
        if c.get("do_center_crop"):
            size = c["crop_size"]
            crop = (size, size) if isinstance(size, int) else (size["height"], size["width"])
        normalize = c.get("do_normalize", True)
        return cls(
            shortest_edge=shortest, resize_to=resize_to, crop=crop,
            resample=int(c.get("resample", Image.Resampling.BICUBIC)),
            rescale_factor=float(c.get("rescale_factor", 1 / 255))
            if c.get("do_rescale", True) else None,
            mean=tuple(c["image_mean"]) if normalize else None,
            std=tuple(c["image_std"]) if normalize else None,
            convert_rgb=bool(c.get("do_convert_rgb", True)),
            # transformers' LLaVA processor: the mean colour as ints, truncated
            pad_color=tuple(int(x * 255) for x in c["image_mean"]) if pad else None)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, pad_to_square: bool | None = None
                    ) -> ImageSpec:
        """From a checkpoint or Hugging Face folder: ``preprocessor_config.json``, else the
        ``image_processor`` entry of ``processor_config.json`` (how transformers 5 saves it)."""
        for name in ("preprocessor_config.json", "processor_config.json"):
            path = Path(folder, name)
            if path.is_file():
                return cls.from_config(json.loads(path.read_text()), pad_to_square)
        raise FileNotFoundError(f"no preprocessor_config.json or processor_config.json in {folder}")


def open_image(source: bytes | str | os.PathLike, timeout: float = 30.0) -> Image.Image:
    """The one way the project opens an image: ``source`` is encoded bytes, a file path or an
    ``http(s)://`` URL. Decoded in full (corrupt data raises here), upright (the EXIF orientation
    applied, as transformers' ``load_image`` does) and in RGB: transparency composited onto white
    (as transformers' image processors convert), 16-bit greyscale scaled to 8 bits (transformers
    would clip it to 255, a white image). A missing file raises FileNotFoundError; a file or URL
    that does not decode, OSError naming it."""
    name = None if isinstance(source, bytes) else str(source)
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        request = urllib.request.Request(source, headers={"User-Agent": "basque_vlm"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            source = response.read()
    elif name is not None:
        source = Path(source).expanduser()
        if not source.is_file():
            raise FileNotFoundError(f"image file not found: {name}")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        if name is None:
            raise
        raise OSError(f"cannot read image {name}: {type(e).__name__}: {e}") from None
    if upright.mode in _SIXTEEN_BIT:
        pixels = np.asarray(upright, dtype=np.float64) / 257
        upright = Image.fromarray(np.round(pixels).astype(np.uint8), mode="L")
    return _to_rgb(upright)


def stored_bytes(data: bytes) -> bytes:
    """What a prepared dataset stores for an encoded image: PNG and JPEG bytes as they are, any
    other format as the image `open_image` gives (upright, RGB) re-encoded as PNG."""
    if Image.open(io.BytesIO(data)).format in STORED_FORMATS:
        return data
    buf = io.BytesIO()
    open_image(data).save(buf, format="PNG")
    return buf.getvalue()


def preprocess(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """A PIL image → ``[C, H, W]`` float32 ``pixel_values`` (transformers' layout)."""
    image = _to_rgb(image) if spec.convert_rgb else image
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image (do_convert_rgb is off), got mode {image.mode}")
    if spec.pad_color is not None:
        image = _pad_to_square(image, spec.pad_color)
    if spec.shortest_edge is not None:
        image = image.resize(_shortest_edge_size(image.size, spec.shortest_edge), spec.resample)
    elif spec.resize_to is not None:
        image = image.resize(spec.resize_to[::-1], spec.resample)
    pixels = np.asarray(image).transpose(2, 0, 1)
    if spec.crop is not None:
        pixels = _center_crop(pixels, spec.crop)
    if spec.rescale_factor is not None:
        pixels = (pixels.astype(np.float64) * spec.rescale_factor).astype(np.float32)
    pixels = pixels.astype(np.float32, copy=False)
    if spec.mean is not None:
        mean = np.asarray(spec.mean, np.float32)[:, None, None]
        std = np.asarray(spec.std, np.float32)[:, None, None]
        pixels -= mean  # in place: pixels is always a fresh float32 array here
        pixels /= std
    return pixels


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB" and image.info.get("transparency") is None:
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _pad_to_square(image: Image.Image, color: tuple[int, int, int]) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new("RGB", (side, side), color)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def _shortest_edge_size(size: tuple[int, int], shortest: int) -> tuple[int, int]:
    """PIL (width, height) with the short side ``shortest``; the long side is truncated, as in
    transformers' ``get_resize_output_image_size``."""
    width, height = size
    short, long = min(width, height), max(width, height)
    new_long = int(shortest * long / short)
    return (shortest, new_long) if width <= height else (new_long, shortest)


def _center_crop(pixels: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """``[C, H, W]`` centre crop; an image smaller than the crop is zero-padded around it, as
    transformers does."""
    _, height, width = pixels.shape
    crop_h, crop_w = crop
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if top >= 0 and left >= 0:
        return pixels[:, top:top + crop_h, left:left + crop_w]
    out_h, out_w = max(crop_h, height), max(crop_w, width)
    out = np.zeros((pixels.shape[0], out_h, out_w), pixels.dtype)
    pad_top, pad_left = math.ceil((out_h - height) / 2), math.ceil((out_w - width) / 2)
    out[:, pad_top:pad_top + height, pad_left:pad_left + width] = pixels
    return _center_crop(out, crop)
