"""The embedded bilingual demo data: simple generated scenes with questions in Basque and English.

A scene is 1-4 shapes (circle, square, triangle; red, blue, green, yellow; several sizes) on a
plain light background, each in one of four places (left, right, top, bottom), so that every
question has one right answer. Each scene gets a few questions (colour, shape, count, yes/no,
position), asked in parallel in Basque and English; answers are one capitalised word and a period.
Everything is deterministic from the seed; the held-out split is the same distribution drawn with
another seed.

``ensure(root, seed)`` writes, once, through the same path as real data::

    root/raw/images/{train,heldout}/NNNNN.png     the scenes
    root/raw/{train,heldout}_{eu,en}.json         LLaVA JSON
    root/datasets/{train,heldout}_{eu,en}/        ArrayRecord datasets (``sources.prepare``)
    root/tokenizer/                               byte-level BPE + ChatML template + <image>,
                                                  and a CLIP-style preprocessor_config.json
    root/manifest.json                            what was generated (written last)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from basque_vlm.data import sources
from basque_vlm.data.conversation import IMAGE_PLACEHOLDER
from basque_vlm.data.image import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

IMAGE_SIZE = 64
LANGS = ("eu", "en")
SPLITS = {"train": 2000, "heldout": 200}  # scenes per split
QUESTIONS_PER_SCENE = 3
VERSION = 1
# English name → (Basque stem, RGB). Stems take the article -a: gorria, urdina, berdea, horia.
COLOURS = {"red": ("gorri", (215, 40, 40)), "blue": ("urdin", (40, 80, 215)),
           "green": ("berde", (35, 160, 60)), "yellow": ("hori", (235, 195, 25))}
SHAPES = {"circle": "zirkulu", "square": "karratu", "triangle": "triangelu"}
# Place → (Basque answer, centre in a 64-pixel image).
PLACES = {"left": ("Ezkerrean", (14, 32)), "right": ("Eskuinean", (50, 32)),
          "top": ("Goian", (32, 14)), "bottom": ("Behean", (32, 50))}
NUMBERS = {"eu": ("Bat", "Bi", "Hiru", "Lau"), "en": ("One", "Two", "Three", "Four")}
YES_NO = {"eu": ("Bai", "Ez"), "en": ("Yes", "No")}
QUESTION_TYPES = ("colour", "shape", "count", "exists", "position")

# The demo tokenizer: these specials get ids 0-3, in this order (configs/demo.py relies on it).
SPECIAL_TOKENS = ("<|pad|>", "<|im_start|>", "<|im_end|>", IMAGE_PLACEHOLDER)
VOCAB_SIZE = 512
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<image>\\n' -}}{%- else -%}{{- item['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}")


@dataclasses.dataclass(frozen=True)
class Shape:
    shape: str   # a key of SHAPES
    colour: str  # a key of COLOURS
    place: str   # a key of PLACES
    radius: int


@dataclasses.dataclass(frozen=True)
class QA:
    type: str
    question: dict[str, str]  # lang → text
    answer: dict[str, str]


def scene(rng: np.random.Generator) -> tuple[list[Shape], tuple[int, int, int]]:
    """1-4 shapes in distinct places, and a light background colour."""
    count = int(rng.integers(1, 5))
    places = rng.permutation(list(PLACES))[:count]
    shapes = [Shape(str(rng.choice(list(SHAPES))), str(rng.choice(list(COLOURS))), str(place),
                    int(rng.integers(6, 9))) for place in places]
    grey = int(rng.integers(205, 250))
    background = tuple(int(c) for c in np.clip(grey + rng.integers(-8, 9, 3), 0, 255))
    return shapes, background


def draw(shapes: list[Shape], background: tuple[int, int, int], size: int = IMAGE_SIZE,
         supersample: int = 4) -> Image.Image:
    """The scene as an RGB image (drawn large, then downsampled for smooth edges)."""
    big = size * supersample
    image = Image.new("RGB", (big, big), background)
    canvas = ImageDraw.Draw(image)
    scale = supersample * size / IMAGE_SIZE
    for s in shapes:
        x, y = (c * scale for c in PLACES[s.place][1])
        r = s.radius * scale
        colour = COLOURS[s.colour][1]
        if s.shape == "circle":
            canvas.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        elif s.shape == "square":
            canvas.rectangle([x - r, y - r, x + r, y + r], fill=colour)
        else:
            canvas.polygon([(x, y - r), (x - r, y + 0.8 * r), (x + r, y + 0.8 * r)], fill=colour)
    return image.resize((size, size), Image.Resampling.BOX)


def questions(shapes: list[Shape], rng: np.random.Generator, count: int = QUESTIONS_PER_SCENE
              ) -> list[QA]:
    """Up to ``count`` questions of different types, each with exactly one right answer."""
    candidates = {t: [] for t in QUESTION_TYPES}
    shape_count = {k: sum(s.shape == k for s in shapes) for k in SHAPES}
    colour_count = {c: sum(s.colour == c for s in shapes) for c in COLOURS}
    pairs = {(s.shape, s.colour) for s in shapes}
    for s in shapes:
        if shape_count[s.shape] == 1:
            candidates["colour"].append(_colour_of(s))
        if colour_count[s.colour] == 1:
            candidates["shape"].append(_shape_of(s))
        if sum((t.shape, t.colour) == (s.shape, s.colour) for t in shapes) == 1:
            candidates["position"].append(_position_of(s))
    candidates["count"] = [_count_of(k, n) for k, n in shape_count.items() if n]
    absent = [(k, c) for k in SHAPES for c in COLOURS if (k, c) not in pairs]
    present = sorted(pairs)
    pick = present if rng.random() < 0.5 else absent
    k, c = pick[int(rng.integers(len(pick)))]
    candidates["exists"].append(_exists(k, c, (k, c) in pairs))
    types = [t for t in QUESTION_TYPES if candidates[t]]
    chosen = rng.permutation(types)[:count]
    return [candidates[t][int(rng.integers(len(candidates[t])))] for t in chosen]


def _article(stem: str) -> str:
    return stem + "a"


def _partitive(stem: str) -> str:
    """-rik after a vowel, -ik after a consonant: gorririk, berderik, horirik, urdinik."""
    return stem + ("rik" if stem[-1] in "aeiou" else "ik")


def _qa(type_: str, eu: str, en: str, answer_eu: str, answer_en: str) -> QA:
    return QA(type_, {"eu": eu, "en": en},
              {"eu": answer_eu.capitalize() + ".", "en": answer_en.capitalize() + "."})


def _colour_of(s: Shape) -> QA:
    return _qa("colour", f"Zer koloretakoa da {_article(SHAPES[s.shape])}?",
               f"What colour is the {s.shape}?", _article(COLOURS[s.colour][0]), s.colour)


def _shape_of(s: Shape) -> QA:
    return _qa("shape", f"Zer forma du objektu {COLOURS[s.colour][0]}ak?",
               f"What shape is the {s.colour} object?", _article(SHAPES[s.shape]), s.shape)


def _count_of(shape: str, n: int) -> QA:
    return _qa("count", f"Zenbat {SHAPES[shape]} daude irudian?",
               f"How many {shape}s are there in the image?", NUMBERS["eu"][n - 1],
               NUMBERS["en"][n - 1])


def _exists(shape: str, colour: str, present: bool) -> QA:
    i = 0 if present else 1
    return _qa("exists", f"Ba al dago {SHAPES[shape]} {_partitive(COLOURS[colour][0])} irudian?",
               f"Is there a {colour} {shape} in the image?", YES_NO["eu"][i], YES_NO["en"][i])


def _position_of(s: Shape) -> QA:
    return _qa("position", f"Non dago {SHAPES[s.shape]} {_article(COLOURS[s.colour][0])}?",
               f"Where is the {s.colour} {s.shape}?", PLACES[s.place][0], s.place)


def split_seed(seed: int, split: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, list(SPLITS).index(split)])


def write_split(raw: Path, split: str, seed: int, scenes: int) -> dict[str, Path]:
    """PNG scenes under ``raw/images/split`` and one LLaVA JSON per language; the JSON paths."""
    rng = np.random.default_rng(split_seed(seed, split))
    (raw / "images" / split).mkdir(parents=True, exist_ok=True)
    records: dict[str, list[dict[str, Any]]] = {lang: [] for lang in LANGS}
    for i in range(scenes):
        shapes, background = scene(rng)
        image = f"{split}/{i:05d}.png"
        draw(shapes, background).save(raw / "images" / image)
        for q, qa in enumerate(questions(shapes, rng)):
            for lang in LANGS:
                records[lang].append({
                    "id": f"{split}-{i:05d}-{q}-{lang}", "image": image, "lang": lang,
                    "question_type": qa.type, "conversations": [
                        {"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{qa.question[lang]}"},
                        {"from": "gpt", "value": qa.answer[lang]}]})
    paths = {}
    for lang in LANGS:
        paths[lang] = raw / f"{split}_{lang}.json"
        paths[lang].write_text(json.dumps(records[lang], ensure_ascii=False, indent=0))
    return paths


def write_tokenizer(folder: Path, texts: list[str], vocab_size: int = VOCAB_SIZE,
                    image_size: int = IMAGE_SIZE) -> None:
    """A byte-level BPE tokenizer trained on ``texts`` (deterministic), with the ChatML-like
    template, and a CLIP-style image processor config at ``image_size``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|pad|>", model_max_length=4096)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    processor = {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True,
        "size": {"shortest_edge": image_size}, "resample": int(Image.Resampling.BICUBIC),
        "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD),
        "do_convert_rgb": True}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")


def corpus(json_paths: list[Path]) -> list[str]:
    """The tokenizer's training text: every message, and the chat roles."""
    texts = ["system\n", "user\n", "assistant\n"]
    for path in json_paths:
        for record in json.loads(path.read_text()):
            texts += [t["value"].replace(IMAGE_PLACEHOLDER, "") for t in record["conversations"]]
    return texts


def generate(root: Path, seed: int, splits: dict[str, int] = SPLITS) -> dict[str, Any]:
    """Writes everything under ``root`` (which must not exist); returns the manifest."""
    raw = root / "raw"
    manifest: dict[str, Any] = {"version": VERSION, "seed": seed, "splits": dict(splits),
                                "datasets": {}}
    json_paths = {}
    for split, scenes in splits.items():
        for lang, path in write_split(raw, split, seed, scenes).items():
            json_paths[split, lang] = path
    write_tokenizer(root / "tokenizer", corpus([p for (s, _), p in json_paths.items()
                                                if s == "train"]))
    for (split, lang), path in json_paths.items():
        summary = sources.prepare(path, raw / "images", root / "datasets" / f"{split}_{lang}",
                                  lang, name=f"demo_vqa_{split}_{lang}")
        manifest["datasets"][f"{split}_{lang}"] = summary["written"]
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def ensure(root: str | os.PathLike, seed: int = 0, splits: dict[str, int] = SPLITS) -> Path:
    """The demo data under ``root``, generated on first use (safe when several processes race:
    each builds in its own temporary folder and the first rename wins)."""
    root = Path(root)
    expected = {"version": VERSION, "seed": seed, "splits": dict(splits)}
    if (root / "manifest.json").is_file():
        found = json.loads((root / "manifest.json").read_text())
        if {k: found.get(k) for k in expected} != expected:
            raise ValueError(f"{root} holds demo data generated with "
                             f"{ {k: found.get(k) for k in expected} }, not {expected}; "
                             "remove it or choose another data.root")
        return root
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} exists and is not demo data (no manifest.json)")
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        generate(tmp, seed, splits)
        try:
            os.replace(tmp, root)
        except OSError:
            if not (root / "manifest.json").is_file():  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ensure(root, seed, splits)
