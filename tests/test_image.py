"""Image preprocessing: parity with transformers' PIL image processors; loading edge cases."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from basque_vlm.data.image import ImageSpec, open_image, preprocess
from basque_vlm.testing import tiny_models

SIZES = [(37, 53), (640, 481), (300, 300), (45, 700), (700, 45)]  # (width, height)
TOLERANCE = 1e-5  # measured: 0.0, the same PIL resize and float ops give identical bits


def random_image(width, height, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "LA": 2, "L": 1}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), np.uint8)
    if mode in ("RGBA", "LA"):
        pixels[: height // 2, :, -1] = 0  # a transparent half, the rest partly translucent
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode)


def reference(processor, image):
    return processor(images=image, return_tensors="np")["pixel_values"][0]


def assert_parity(processor, image, spec=None):
    spec = spec or ImageSpec.from_config(processor.to_dict())
    ours, ref = preprocess(image, spec), reference(processor, image)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= TOLERANCE


PROCESSORS = {
    "clip": lambda: tiny_models.image_processor("clip", 336),
    "siglip": lambda: tiny_models.image_processor("siglip", 384),
    "llava_pad": lambda: LlavaImageProcessorPil(size={"shortest_edge": 336}, do_pad=True,
                                                crop_size={"height": 336, "width": 336}),
}


@pytest.mark.parametrize("kind", list(PROCESSORS))
@pytest.mark.parametrize("size", SIZES)
def test_parity_with_transformers(kind, size):
    assert_parity(PROCESSORS[kind](), random_image(*size))


def test_spec_from_configs(tmp_path):
    siglip = ImageSpec.from_config(PROCESSORS["siglip"]().to_dict())
    assert (siglip.resize_to, siglip.crop, siglip.mean) == ((384, 384), None, (0.5, 0.5, 0.5))
    # the legacy form of openai/clip-vit-large-patch14-336: int sizes, feature extractor type
    legacy = {"feature_extractor_type": "CLIPFeatureExtractor", "size": 336, "crop_size": 336,
              "do_center_crop": True, "do_normalize": True, "do_resize": True, "resample": 3,
              "image_mean": [0.48145466, 0.4578275, 0.40821073],
              "image_std": [0.26862954, 0.26130258, 0.27577711]}
    spec = ImageSpec.from_config(legacy)
    assert (spec.shortest_edge, spec.crop, spec.pad_color) == (336, (336, 336), None)
    assert_parity(CLIPImageProcessorPil.from_dict(legacy), random_image(640, 481), spec)
    # transformers 5 saves the image processor inside processor_config.json
    nested = {"image_processor": PROCESSORS["clip"]().to_dict(), "image_token": "<image>"}
    (tmp_path / "processor_config.json").write_text(json.dumps(nested))
    assert ImageSpec.from_folder(tmp_path) == ImageSpec.from_config(nested["image_processor"])
    with pytest.raises(ValueError, match="unsupported image processor"):
        ImageSpec.from_config({"image_processor_type": "ViTImageProcessor"})


def test_crop_larger_than_resize_pads_like_transformers():
    processor = CLIPImageProcessorPil(size={"shortest_edge": 30},
                                      crop_size={"height": 40, "width": 24})
    for size in [(37, 53), (53, 37)]:
        assert_parity(processor, random_image(*size))


def palette(transparent_index=None):
    image = random_image(61, 43).quantize(16)
    if transparent_index is not None:
        image.info["transparency"] = transparent_index
    return image


MODES = {
    "L": lambda: random_image(61, 43, "L"),
    "RGBA": lambda: random_image(61, 43, "RGBA"),
    "LA": lambda: random_image(61, 43, "LA"),
    "P": palette,
    "P_transparent": lambda: palette(transparent_index=3),
    "CMYK": lambda: random_image(61, 43).convert("CMYK"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_modes_match_transformers(mode):
    image = MODES[mode]()
    for kind in ("clip", "siglip"):
        assert_parity(PROCESSORS[kind](), image)


def test_transparency_is_composited_on_white():
    image = random_image(32, 32, "RGBA")
    spec = ImageSpec(rescale_factor=None)  # no resize, no normalisation: raw pixels
    pixels = preprocess(image, spec)
    assert pixels.shape == (3, 32, 32)
    assert (pixels[:, :16] == 255).all()  # the fully transparent half


def test_pad_to_square_with_mean_colour():
    spec = ImageSpec.from_config(PROCESSORS["clip"]().to_dict(), pad_to_square=True)
    assert spec.pad_color == (122, 116, 104)  # int(x * 255) of CLIP's mean
    raw = ImageSpec(pad_color=spec.pad_color, rescale_factor=None)
    pixels = preprocess(Image.new("RGB", (10, 4), (1, 2, 3)), raw)
    assert pixels.shape == (3, 10, 10)
    column = pixels[:, :, 0]
    assert (column[:, 3:7].T == [1, 2, 3]).all()  # centred: (10 - 4) // 2 = 3 rows above
    assert (column[:, :3].T == spec.pad_color).all() and (column[:, 7:].T == spec.pad_color).all()
    assert_parity(PROCESSORS["llava_pad"](), random_image(640, 481), spec)


def png_bytes(image, **save):
    buf = io.BytesIO()
    image.save(buf, format="PNG", **save)
    return buf.getvalue()


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red, right half blue
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display after rotating 90° clockwise
    data = png_bytes(Image.fromarray(pixels), exif=exif)
    (tmp_path / "r.png").write_bytes(data)
    for source in (data, tmp_path / "r.png", str(tmp_path / "r.png")):
        upright = np.asarray(open_image(source))
        assert upright.shape == (40, 20, 3)
        assert (upright[:20] == (255, 0, 0)).all() and (upright[20:] == (0, 0, 255)).all()


def test_sixteen_bit_greyscale_is_scaled():
    values = np.array([[0, 257, 65535], [32896, 1000, 65278]], np.uint16)
    image = open_image(png_bytes(Image.fromarray(values)))
    assert image.mode == "RGB"
    assert np.asarray(image)[..., 0].tolist() == [[0, 1, 255], [128, 4, 254]]
    assert (np.asarray(image) == np.asarray(image)[..., :1]).all()


def test_corrupt_data_raises():
    with pytest.raises(Exception):
        open_image(b"GIF89a not really")
    jpeg = io.BytesIO()
    random_image(64, 64).save(jpeg, format="JPEG")
    with pytest.raises(OSError):
        open_image(jpeg.getvalue()[:500])
