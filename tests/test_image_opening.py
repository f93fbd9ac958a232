"""One way to open an image: a phone photo (EXIF orientation 6) gives the same ``pixel_values``
to ``generate``, ``evaluate`` and the training pipeline as transformers' ``load_image`` and
processor give."""

import io

import numpy as np
import pytest
from PIL import Image
from transformers.image_utils import load_image

from basque_vlm import generate
from basque_vlm.data.image import ImageSpec, open_image, preprocess
from basque_vlm.eval.taskdata import decode_image
from basque_vlm.infer.prompts import chat_inputs
from basque_vlm.store import checkpoint
from basque_vlm.testing import checkpoints, tiny_models


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A JPEG stored sideways (left half red, right half blue as displayed) with EXIF
    orientation 6, and a tiny LLaVA checkpoint whose processor centre-crops a square."""
    root = tmp_path_factory.mktemp("exif")
    stored = np.zeros((30, 50, 3), np.uint8)  # displayed after a 90° clockwise turn: 50 × 30
    stored[:15] = (0, 0, 255)
    stored[15:] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = root / "photo.jpg"
    Image.fromarray(stored).save(path, format="JPEG", exif=exif, quality=95)
    tiny_models.save_llava(root / "hf")
    return path, checkpoints.from_llava(root / "hf", root / "ckpt")


def test_the_opener_turns_the_photo_upright(photo):
    path, _ = photo
    ours, theirs = np.asarray(open_image(path)), np.asarray(load_image(str(path)))
    assert ours.shape == (50, 30, 3) and ours.tolist() == theirs.tolist()
    assert ours[25, 5, 0] > 200 and ours[25, 25, 2] > 200  # red left, blue right


def test_every_entry_point_sees_the_same_pixels(photo):
    path, ckpt = photo
    processor = checkpoint.load_processor(ckpt)
    reference = processor.image_processor(load_image(str(path)), return_tensors="np")
    reference = np.asarray(reference["pixel_values"])
    _, generate_inputs = generate.prompt_inputs(str(ckpt), "Zer dago?", str(path))
    evaluate_inputs = chat_inputs(processor, ["Zer dago?"], [decode_image(path, "photo")])
    training = preprocess(open_image(path.read_bytes()), ImageSpec.from_folder(ckpt))[None]
    sideways = processor.image_processor(Image.open(io.BytesIO(path.read_bytes())),
                                         return_tensors="np")["pixel_values"]
    assert not np.allclose(sideways, reference)  # the orientation matters for this image
    for got in (generate_inputs["pixel_values"], evaluate_inputs["pixel_values"], training):
        np.testing.assert_array_equal(got, reference)
