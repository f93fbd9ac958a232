"""The synthetic demo data: deterministic, correct Basque, right answers and captions, a distinct
held-out."""

import hashlib
import json
import re

import numpy as np
import pytest
from data_helpers import demo_config
from transformers import AutoImageProcessor, AutoTokenizer

from basque_vlm.data.chat import ChatRenderer
from basque_vlm.data.conversation import read_conversations
from basque_vlm.data.image import ImageSpec, open_image
from basque_vlm.data.sources import ConversationSource
from basque_vlm.demo import synthetic
from basque_vlm.demo.synthetic import Shape

COLOURS = "(gorria|urdina|berdea|horia)"
STEMS = "(zirkulu|karratu|triangelu)"
# Every Basque question and the answers it may have.
BASQUE = {
    rf"Zer koloretakoa da {STEMS}a\?": r"(Gorria|Urdina|Berdea|Horia)\.",
    r"Zer forma du objektu (gorri|urdin|berde|hori)ak\?": r"(Zirkulua|Karratua|Triangelua)\.",
    rf"Zenbat {STEMS} daude irudian\?": r"(Bat|Bi|Hiru|Lau)\.",
    rf"Ba al dago {STEMS} (gorririk|urdinik|berderik|horirik) irudian\?": r"(Bai|Ez)\.",
    rf"Non dago {STEMS} {COLOURS}\?": r"(Ezkerrean|Eskuinean|Goian|Behean)\.",
}
ENGLISH = {
    r"What colour is the (circle|square|triangle)\?": r"(Red|Blue|Green|Yellow)\.",
    r"What shape is the (red|blue|green|yellow) object\?": r"(Circle|Square|Triangle)\.",
    r"How many (circle|square|triangle)s are there in the image\?": r"(One|Two|Three|Four)\.",
    r"Is there a (red|blue|green|yellow) (circle|square|triangle) in the image\?": r"(Yes|No)\.",
    r"Where is the (red|blue|green|yellow) (circle|square|triangle)\?":
        r"(Left|Right|Top|Bottom)\.",
}
PLACES_EU = "(Goian|Ezkerrean|Eskuinean|Behean)"
PLACES_EN = "(Top|Left|Right|Bottom)"
SHAPE_EU = rf"{STEMS} (gorri|urdin|berde|hori) bat"
SHAPE_EN = r"a (red|blue|green|yellow) (circle|square|triangle)"
EN_TO_EU = {"Red": "Gorria", "Blue": "Urdina", "Green": "Berdea", "Yellow": "Horia",
            "Circle": "Zirkulua", "Square": "Karratua", "Triangle": "Triangelua", "One": "Bat",
            "Two": "Bi", "Three": "Hiru", "Four": "Lau", "Yes": "Bai", "No": "Ez",
            "Left": "Ezkerrean", "Right": "Eskuinean", "Top": "Goian", "Bottom": "Behean"}


def qa_pairs(path):
    return [(r["id"], r["conversations"][0]["value"], r["conversations"][1]["value"])
            for r in json.loads(path.read_text())]


def test_questions_use_the_basque_forms_and_match_english(demo_root):
    eu = qa_pairs(demo_root / "raw" / "train_eu.json")
    en = qa_pairs(demo_root / "raw" / "train_en.json")
    assert len(eu) == len(en) > 5000
    for (id_eu, q_eu, a_eu), (id_en, q_en, a_en) in zip(eu, en):
        assert id_eu.removesuffix("-eu") == id_en.removesuffix("-en")
        assert q_eu.startswith("<image>\n") and q_en.startswith("<image>\n")
        matched = [(q, a) for q, a in BASQUE.items() if re.fullmatch(q, q_eu[8:])]
        assert len(matched) == 1 and re.fullmatch(matched[0][1], a_eu), (q_eu, a_eu)
        assert any(re.fullmatch(q, q_en[8:]) and re.fullmatch(a, a_en)
                   for q, a in ENGLISH.items()), (q_en, a_en)
        assert EN_TO_EU[a_en[:-1]] + "." == a_eu
    types = {re.sub(r"\?.*", "", q) for _, q, _ in eu}
    assert len(types) >= 20  # every question type with its variants


def test_captions_list_every_shape_by_place_in_both_languages(demo_root):
    eu = qa_pairs(demo_root / "raw" / "train_caption_eu.json")
    en = qa_pairs(demo_root / "raw" / "train_caption_en.json")
    assert len(eu) == len(en) == len(list((demo_root / "raw" / "images" / "train").glob("*.png")))
    counts = set()
    for (id_eu, q_eu, a_eu), (id_en, q_en, a_en) in zip(eu, en):
        assert id_eu.removesuffix("-eu") == id_en.removesuffix("-en")
        assert (q_eu, q_en) == ("<image>\nDeskribatu irudia.", "<image>\nDescribe the image.")
        items_eu, items_en = a_eu.split(". "), a_en.split(". ")
        assert len(items_eu) == len(items_en) and a_eu.endswith(".") and a_en.endswith(".")
        counts.add(len(items_eu))
        for item_eu, item_en in zip(items_eu, items_en):
            assert re.fullmatch(rf"{PLACES_EU}: {SHAPE_EU}\.?", item_eu), a_eu
            assert re.fullmatch(rf"{PLACES_EN}: {SHAPE_EN}\.?", item_en), a_en
            assert EN_TO_EU[item_en.split(":")[0]] == item_eu.split(":")[0]
    assert counts == {1, 2, 3, 4}
    assert not (demo_root / "raw" / "heldout_caption_eu.json").exists()  # questions only


def test_a_caption_says_what_the_scene_holds():
    shapes = [Shape("square", "yellow", "bottom"), Shape("circle", "red", "left"),
              Shape("triangle", "blue", "top")]
    qa = synthetic.caption(shapes)
    assert qa.answer == {
        "eu": "Goian: triangelu urdin bat. Ezkerrean: zirkulu gorri bat. Behean: karratu hori bat.",
        "en": "Top: a blue triangle. Left: a red circle. Bottom: a yellow square."}


def test_answers_are_right():
    shapes = [Shape("circle", "red", "left", 7), Shape("square", "blue", "right", 7),
              Shape("square", "yellow", "top", 6)]
    rng = np.random.default_rng(0)
    asked = {}
    for _ in range(200):
        for qa in synthetic.questions(shapes, rng):
            asked[qa.question["eu"]] = (qa.answer["eu"], qa.answer["en"])
    assert asked["Zer koloretakoa da zirkulua?"] == ("Gorria.", "Red.")
    assert "Zer koloretakoa da karratua?" not in asked  # two squares: ambiguous, never asked
    assert asked["Zer forma du objektu horiak?"] == ("Karratua.", "Square.")
    assert asked["Zenbat karratu daude irudian?"] == ("Bi.", "Two.")
    assert asked["Non dago karratu urdina?"] == ("Eskuinean.", "Right.")
    assert asked["Non dago zirkulu gorria?"] == ("Ezkerrean.", "Left.")
    present = {("zirkulu", "gorririk"), ("karratu", "urdinik"), ("karratu", "horirik")}
    exists = {q: a for q, (a, _) in asked.items() if q.startswith("Ba al dago")}
    assert {"Bai.", "Ez."} == set(exists.values())
    for question, answer in exists.items():
        shape, colour = question.split()[3:5]
        assert answer == ("Bai." if (shape, colour) in present else "Ez."), question


def test_scenes_are_drawn_where_the_questions_say():
    shapes = [Shape("square", "green", "bottom")]
    pixels = np.asarray(synthetic.draw(shapes, (240, 240, 240)))
    assert pixels.shape == (48, 48, 3)
    assert pixels[40, 24].tolist() == list(synthetic.COLOURS["green"][1])  # the bottom cell
    assert pixels[8, 24].tolist() == [240, 240, 240]                       # the top cell
    assert pixels[40, 17].tolist() == list(synthetic.OUTLINE)              # the outline
    # each shape stays inside its own 16-pixel cell (one ViT patch of the demo model)
    inside = np.zeros((48, 48), bool)
    inside[32:48, 16:32] = True
    assert (pixels[~inside] == 240).all()


def test_deterministic_from_the_seed(tmp_path):
    splits = {"train": 12, "heldout": 4}
    a = synthetic.ensure(tmp_path / "a", seed=3, splits=splits)
    b = synthetic.ensure(tmp_path / "b", seed=3, splits=splits)
    c = synthetic.ensure(tmp_path / "c", seed=4, splits=splits)
    files = sorted(p.relative_to(a) for p in (a / "raw").rglob("*") if p.is_file())
    files += [p.relative_to(a) for p in sorted((a / "tokenizer").iterdir())]
    assert len(files) > 20
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "raw/train_eu.json").read_bytes() != (c / "raw/train_eu.json").read_bytes()
    source_a, source_b = (ConversationSource(r / "datasets" / "train_eu") for r in (a, b))
    assert [source_a[i] for i in range(len(source_a))] == \
           [source_b[i] for i in range(len(source_b))]
    with pytest.raises(ValueError, match="generated with"):
        synthetic.ensure(a, seed=5, splits=splits)


def test_data_of_an_older_version_is_generated_again(tmp_path):
    splits = {"train": 3, "heldout": 2}
    old = tmp_path / "data"
    (old / "raw").mkdir(parents=True)
    (old / "raw" / "stale.json").write_text("[]")
    (old / "manifest.json").write_text(json.dumps(
        {"version": synthetic.VERSION - 1, "seed": 0, "splits": splits}))
    assert synthetic.ensure(old, seed=0, splits=splits) == old
    assert json.loads((old / "manifest.json").read_text())["version"] == synthetic.VERSION
    assert not (old / "raw" / "stale.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing left beside it


def test_heldout_differs_from_train(demo_root):
    def digests(split):
        return {hashlib.sha256(p.read_bytes()).hexdigest()
                for p in (demo_root / "raw" / "images" / split).glob("*.png")}

    train, heldout = digests("train"), digests("heldout")
    assert len(train) > 1900 and len(heldout) > 190
    assert not train & heldout
    manifest = json.loads((demo_root / "manifest.json").read_text())
    assert manifest["datasets"]["heldout_eu"] == len(ConversationSource(
        demo_root / "datasets" / "heldout_eu")) > 500


def test_tokenizer_processor_and_config_agree(demo_root):
    folder = demo_root / "tokenizer"
    config = demo_config(demo_root)
    tok = AutoTokenizer.from_pretrained(folder)
    assert len(tok) <= config.model.text.vocab_size
    assert tok.convert_tokens_to_ids(list(synthetic.SPECIAL_TOKENS)) == [0, 1, 2, 3]
    assert config.model.image_token_id == tok.convert_tokens_to_ids("<image>")
    assert config.model.pad_token_id == tok.pad_token_id
    assert list(config.model.eos_token_ids) == [tok.eos_token_id]
    processor = AutoImageProcessor.from_pretrained(folder)
    assert processor.crop_size == {"height": 48, "width": 48}
    assert ImageSpec.from_folder(folder).crop == (48, 48)
    assert config.model.vision.image_size == 48 and config.model.vision.patch_size == 16

    from basque_vlm.model.vlm import VLMConfig
    assert VLMConfig.from_dict(config.model.to_dict()).tokens_per_image == \
           config.data.tokens_per_image

    renderer = ChatRenderer(tok, 3, config.data.tokens_per_image, config.data.max_length)
    conv = next(read_conversations(demo_root / "raw" / "heldout_eu.json"))
    example = renderer.render(conv)
    assert tok.decode(example.targets[example.loss_mask == 1]) == \
           conv.messages[-1].text + "<|im_end|>"
    image = open_image(demo_root / "raw" / "images" / conv.images[0])
    assert image.size == (48, 48) and image.mode == "RGB"
