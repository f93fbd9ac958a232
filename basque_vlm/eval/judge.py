"""Pairwise judging of open-ended answers (WildVision): the model against a reference model.

A judge sees the user's instruction (and image) and two answers, A and B, and ends with one
verdict: ``[[A>>B]]``, ``[[A>B]]``, ``[[A=B]]``, ``[[B>A]]`` or ``[[B>>A]]``. This module's
protocol (``both_orders``; lmms-eval's single judgement is `wildvision_lmms`) judges every sample
twice, the model as B (the reference first, as lmms-eval's WildVision does) and then as A,
so that a judge's preference for a position cancels out. From the model's side a verdict scores
+2 (much better) ... −2 (much worse); a sample's score is the mean of its readable verdicts, and
it is a win (> 0), a tie (0) or a loss (< 0). Reported: ``win_rate`` (ties count 0),
``win_rate_tie_adjusted`` (ties count ½), ``mean_score``, and the verdicts that could not be read
(``malformed_verdicts``, counted, never fatal).

Judges: ``HttpJudge`` (any OpenAI-compatible server, through `runtime.openai_api`) and
``LocalJudge`` (a checkpoint of ours); every protocol asks them through ``Pair``. Automatic
judges are a proxy: the paper stresses human evaluation for open-ended generation, so
``export_annotation`` writes a blind CSV for annotators and ``score_annotation`` reads it back
into the same metrics.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from basque_vlm.runtime.openai_api import ChatClient, Failure, image_part, text_part

VERDICTS = {"A>>B": 2, "A>B": 1, "A=B": 0, "B>A": -1, "B>>A": -2}  # from A's side
_VERDICT = re.compile(r"\[\[\s*(A>>B|A>B|A=B|B>A|B>>A)\s*\]\]")

INSTRUCTIONS = (
    "You are an impartial judge. Compare two AI assistants' answers to the user's request "
    "about the image. Judge which answer is more helpful, correct, relevant and clear; write "
    "the answer in the user's language; do not let the order of the answers or their length "
    "sway you. Explain briefly, then end with exactly one verdict:\n"
    "[[A>>B]] A is much better, [[A>B]] A is better, [[A=B]] a tie, [[B>A]] B is better, "
    "[[B>>A]] B is much better.")
TEMPLATE = ("[User request]\n{question}\n\n[Answer of assistant A]\n{a}\n[End of answer A]\n\n"
            "[Answer of assistant B]\n{b}\n[End of answer B]")


@dataclasses.dataclass(frozen=True)
class Pair:
    """One judging request: the instruction, its image, answers A and B, and how the judge is
    asked (its ``instructions``, and the ``template`` that lays out question and answers)."""

    question: str
    image: Callable[[], Image.Image] | None
    a: str
    b: str
    instructions: str = INSTRUCTIONS
    template: str = TEMPLATE

    def text(self) -> str:
        return self.template.format(question=self.question, a=self.a, b=self.b)


Judge = Callable[[Sequence[Pair]], list[str]]  # the judge's replies, one per pair


def parse_verdict(reply: str) -> str | None:
    """The reply's verdict; None when it has none, or several that disagree."""
    found = set(_VERDICT.findall(reply))
    return found.pop() if len(found) == 1 else None


def judge_pairs(judge: Judge, questions: Sequence[str],
                images: Sequence[Callable[[], Image.Image] | None], model: Sequence[str],
                reference: Sequence[str]) -> list[dict[str, Any]]:
    """Both orders per sample: ``{"verdicts": [model as B, model as A], "score": mean or
    None}``."""
    n = len(questions)
    pairs = ([Pair(q, im, r, m) for q, im, m, r in zip(questions, images, model, reference)]
             + [Pair(q, im, m, r) for q, im, m, r in zip(questions, images, model, reference)])
    replies = judge(pairs)
    verdicts = [parse_verdict(r) for r in replies]
    out = []
    for i in range(n):
        as_b, as_a = verdicts[i], verdicts[n + i]
        scores = ([-VERDICTS[as_b]] if as_b else []) + ([VERDICTS[as_a]] if as_a else [])
        out.append({"verdicts": [as_b, as_a], "score": sum(scores) / len(scores) if scores
                    else None})
    return out


def summarize(judged: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Win rate (ties 0), tie-adjusted win rate, mean score over the judged samples."""
    scores = [j["score"] for j in judged if j["score"] is not None]
    malformed = sum(v is None for j in judged for v in j["verdicts"])
    if not scores:
        return {"win_rate": None, "win_rate_tie_adjusted": None, "mean_score": None,
                "judged": 0, "malformed_verdicts": malformed}
    wins, ties = sum(s > 0 for s in scores), sum(s == 0 for s in scores)
    return {"win_rate": wins / len(scores), "win_rate_tie_adjusted": (wins + ties / 2) /
            len(scores), "mean_score": math.fsum(scores) / len(scores), "judged": len(scores),
            "wins": wins, "ties": ties, "losses": len(scores) - wins - ties,
            "malformed_verdicts": malformed}


class HttpJudge:
    """A judge behind an OpenAI-compatible server (``client``): the instructions as the system
    message, then the question and answers and the image in the user message; greedy. A request
    that fails after the client's retries yields an empty reply (an unreadable verdict) and is
    kept in ``failures`` (those of the last call)."""

    def __init__(self, client: ChatClient, max_tokens: int = 1024):
        self.client, self.max_tokens = client, max_tokens
        self.failures: list[Failure] = []

    def __call__(self, pairs: Sequence[Pair]) -> list[str]:
        replies = self.client.complete_all((self._messages(p) for p in pairs),
                                           max_tokens=self.max_tokens, temperature=0)
        self.failures = [r for r in replies if isinstance(r, Failure)]
        return [r if isinstance(r, str) else "" for r in replies]

    @staticmethod
    def _messages(pair: Pair) -> list[dict[str, Any]]:
        image = [] if pair.image is None else [image_part(pair.image())]
        return [{"role": "system", "content": pair.instructions},
                {"role": "user", "content": [text_part(pair.text()), *image]}]


class LocalJudge:
    """A checkpoint of ours as the judge (greedy; the instructions lead the user message)."""

    def __init__(self, generator: Any, max_new_tokens: int = 512):
        self.generator, self.max_new_tokens = generator, max_new_tokens
        self.spans_processes = getattr(generator, "spans_processes", False)

    def __call__(self, pairs: Sequence[Pair]) -> list[str]:
        return self.generator([f"{p.instructions}\n\n{p.text()}" for p in pairs],
                              [p.image for p in pairs], self.max_new_tokens)


# -- human annotation -----------------------------------------------------------------------

ANNOTATION_COLUMNS = ("item", "question", "image", "answer_a", "answer_b", "verdict")


def export_annotation(path: Path, ids: Sequence[str], questions: Sequence[str],
                      images: Sequence[Callable[[], Image.Image] | None], model: Sequence[str],
                      reference: Sequence[str], seed: int = 0) -> None:
    """A blind CSV for annotators (``path``): per item the question, the image file (written to
    ``<path stem>_images/``), answers A and B in a random order, and an empty ``verdict`` to fill
    with A>>B, A>B, A=B, B>A or B>>A. Which answer is the model's goes to ``<path stem>_key.csv``.
    """
    rng = random.Random(seed)
    image_dir = path.with_name(path.stem + "_images")
    # Written through the path's own methods: ``path`` may be remote (an ``epath.Path``).
    f, k = io.StringIO(newline=""), io.StringIO(newline="")
    rows, key = csv.writer(f), csv.writer(k)
    rows.writerow(ANNOTATION_COLUMNS)
    key.writerow(("item", "id", "model_is"))
    for item, (sample_id, question, image, m, r) in enumerate(
            zip(ids, questions, images, model, reference), start=1):
        image_name = ""
        if image is not None:
            image_dir.mkdir(exist_ok=True)
            image_name = f"{image_dir.name}/{item:05d}.png"
            png = io.BytesIO()
            image().convert("RGB").save(png, format="PNG")
            (path.parent / image_name).write_bytes(png.getvalue())
        model_is = rng.choice("AB")
        a, b = (m, r) if model_is == "A" else (r, m)
        rows.writerow((item, question, image_name, a, b, ""))
        key.writerow((item, sample_id, model_is))
    path.write_bytes(f.getvalue().encode("utf-8"))
    path.with_name(path.stem + "_key.csv").write_bytes(k.getvalue().encode("utf-8"))


def score_annotation(path: Path) -> dict[str, Any]:
    """The filled annotation CSV scored with its key file, as ``summarize`` reports."""
    with open(path.with_name(path.stem + "_key.csv"), newline="", encoding="utf-8") as k:
        model_is = {row["item"]: row["model_is"] for row in csv.DictReader(k)}
    judged = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            verdict = parse_verdict(f"[[{row['verdict'].strip()}]]")
            score = None if verdict is None else VERDICTS[verdict] * (
                1 if model_is[row["item"]] == "A" else -1)
            judged.append({"verdicts": [verdict], "score": score})
    return summarize(judged)
