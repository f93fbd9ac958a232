"""Inputs for `python -m basque_vlm.translate`, the stub model that "translates" them, and the
tool run as a user runs it.

The stub's translation of a string is ``FAKE + string``: deterministic and reversible, so a test
can tell that each translation landed in the place of its source.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import run_cli
from PIL import Image

from basque_vlm.datagen import translation_prompt
from basque_vlm.testing.openai_stub import Fault, Request

FAKE = "[eu] "
# What the default en→eu prompt puts before the string in its last user message.
PREFIX = translation_prompt.DEFAULT_TEMPLATE.format(source="English", target="Basque", text="")
STUB_FLAGS = ("--model_name=stub-mt", "--retry_backoff=0.001", "--max_retries=2",
              "--nolanguage_check")


def fake(text: str) -> str:
    return FAKE + text


class Translator:
    """A responder: ``fake`` of the string in the default prompt, after ``delay`` seconds; a
    fault of ``faults`` (by string) for its first ``times`` tries. ``asked`` counts the requests
    per string."""

    def __init__(self, faults: dict[str, Fault] | None = None, delay: float = 0.0):
        self.faults, self.delay = faults or {}, delay
        self.asked: Counter[str] = Counter()

    def __call__(self, request: Request) -> str | Fault:
        source = request.text.removeprefix(PREFIX)
        self.asked[source] += 1
        fault = self.faults.get(source)
        if fault is not None and (fault.times is None or request.attempt <= fault.times):
            return fault
        return Fault(delay_s=self.delay, text=fake(source)) if self.delay else fake(source)


def args(url: str, source: Path, out: Path, *extra: object) -> list[object]:
    """The command line of a translation by the stub at ``url``."""
    return [f"--input={source}", f"--out={out}", "--target=eu", f"--endpoint={url}", *STUB_FLAGS,
            *extra]


def translate(url: str, source: Path, out: Path, *extra: object) -> dict[str, Any]:
    """Runs the tool, checks it succeeded quietly, and returns its summary (the last line)."""
    result = run_cli.run("translate", *args(url, source, out, *extra))
    run_cli.assert_ok(result)
    return json.loads(result.stdout.splitlines()[-1])


def read_parquet(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def llava_records(folder: Path) -> Path:
    """A LLaVA JSON list (with a system turn, two images, a placeholder mid-text, a ``lang``)
    and its images; returns the JSON file."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for colour in ("red", "blue"):
        Image.new("RGB", (12, 8), colour).save(folder / "img" / f"{colour}.png")
    records = [
        {"id": "a", "image": "img/red.png", "lang": "en", "conversations": [
            {"from": "system", "value": "You are helpful."},
            {"from": "human", "value": "<image>\nWhat colour is it?"},
            {"from": "gpt", "value": "It is red."},
            {"from": "human", "value": "Are you sure?"},
            {"from": "gpt", "value": "Yes"}]},
        {"id": "b", "image": ["img/red.png", "img/blue.png"], "conversations": [
            {"from": "human", "value": "Compare <image> with <image>, please."},
            {"from": "gpt", "value": "The first has 3 sides and the second 4."}]},
        {"id": "c", "conversations": [
            {"from": "human", "value": "What colour is it?"},
            {"from": "gpt", "value": "  It is red.\n"}]},
    ]
    path = folder / "train.json"
    path.write_text(json.dumps(records, indent=2))
    return path


def openai_records(folder: Path) -> Path:
    """OpenAI-style records in JSONL: string and list contents."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [
        {"id": "m1", "images": ["img/blue.png"], "messages": [
            {"role": "user", "content": [{"type": "image"},
                                         {"type": "text", "text": "Describe the picture."}]},
            {"role": "assistant", "content": "A blue square."}]},
        {"id": "m2", "messages": [{"role": "user", "content": "Describe the picture."},
                                  {"role": "assistant", "content": "No"}]},
    ]
    path = folder / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
