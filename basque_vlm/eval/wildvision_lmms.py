"""WildVision judged and scored as lmms-eval's ``wild_vision_bench`` task does, so that the numbers
compare with published lmms-eval results.

Each sample is judged once, in an arena-hard style: the judge writes its own answer first, then
weighs the two answers, and ends with one of ``[[A>>B]]``, ``[[A>B]]``, ``[[A=B]]``, ``[[B>A]]``,
``[[B>>A]]``. The reference model's answer is assistant A, the model under test assistant B. The
judge's instructions below follow that procedure in our own words; the layout of the request,
the positions, the labels, how a reply is read and the aggregate are lmms-eval's.

Reading a reply (as lmms-eval does): the bracketed labels ``[[...]]`` are collected; when they
name exactly one label, that label is read, otherwise (none, or several that differ) the whole
reply is. The text read is then matched, as a substring and in this order, against ``A>B``
(Worse, −1), ``A>>B`` (Worse++, −2), ``A=B`` (Tie, 0), ``B>A`` (Better, +1), ``B>>A``
(Better++, +2); nothing matched is Unclear (0). A failed judge request is an empty reply:
Unclear.

The aggregate, at lmms-eval's scale, over all samples: ``raw_scores`` (the mean score, −2…+2),
``win_rates`` (the percentage judged Better or Better++) and the share of each judgement in
percent (``judgements_better``, ``_better_plus``, ``_worse``, ``_worse_plus``, ``_tie``,
``_unclear``); ``win_rate`` is ``win_rates`` as a fraction, the headline every task reports.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from basque_vlm.eval.judge import Judge, Pair

INSTRUCTIONS = (
    "Act as an impartial judge. Two AI assistants, A and B, answered the user prompt shown below "
    "(with its image); decide whose answer is better. Proceed in this order:\n"
    "1. Write your own answer to the prompt before you judge anything.\n"
    "2. Compare each assistant's answer with yours; name and correct every mistake or "
    "inaccuracy you find in them.\n"
    "3. Judge each answer for helpfulness (it answers what was asked or follows the "
    "instructions; when the prompt is ambiguous or can be read in more than one way, asking the "
    "user to clarify is better than answering on an assumption), relevance (every part of it "
    "bears on the request) and concision (clear, neither verbose nor padded).\n"
    "4. Where the prompt calls for it, weigh creativity and novelty, and note any important "
    "information an answer leaves out that would help the user.\n"
    "Give your explanation, then end with exactly one of these verdict labels:\n"
    "[[A>>B]] assistant A is significantly better\n"
    "[[A>B]] assistant A is slightly better\n"
    "[[A=B]] a tie, about the same\n"
    "[[B>A]] assistant B is slightly better\n"
    "[[B>>A]] assistant B is significantly better\n"
    'For example: "My final verdict is a tie: [[A=B]]".')
TEMPLATE = ("<|User Prompt|>\n{question}\n\n"
            "<|The Start of Assistant A's Answer|>\n{a}\n<|The End of Assistant A's Answer|>\n\n"
            "<|The Start of Assistant B's Answer|>\n{b}\n<|The End of Assistant B's Answer|>")
ANSWER_TOKENS = 4096  # lmms-eval's generation budget for the answers under test

_LABELS = re.compile(r"\[\[([AB<>=]+)\]\]")
# (text looked for, judgement, score), in the order lmms-eval tries them
_JUDGEMENTS = (("A>B", "Worse", -1), ("A>>B", "Worse++", -2), ("A=B", "Tie", 0),
               ("B>A", "Better", 1), ("B>>A", "Better++", 2))
_SHARES = {"judgements_better": "Better", "judgements_better_plus": "Better++",
           "judgements_worse": "Worse", "judgements_worse_plus": "Worse++",
           "judgements_tie": "Tie", "judgements_unclear": "Unclear"}


def read_judgement(reply: str) -> tuple[str, int]:
    """The judgement (Better, Better++, Worse, Worse++, Tie or Unclear) and score of a reply."""
    labels = set(_LABELS.findall(reply))
    text = labels.pop() if len(labels) == 1 else reply
    for needle, judgement, score in _JUDGEMENTS:
        if needle in text:
            return judgement, score
    return "Unclear", 0


def judge_samples(judge: Judge, questions: Sequence[str],
                  images: Sequence[Callable[[], Image.Image] | None], model: Sequence[str],
                  reference: Sequence[str]) -> list[dict[str, Any]]:
    """One judgement per sample, the reference as A and the model as B:
    ``{"judgement": ..., "score": ...}``."""
    pairs = [Pair(q, im, r, m, INSTRUCTIONS, TEMPLATE)
             for q, im, m, r in zip(questions, images, model, reference)]
    return [dict(zip(("judgement", "score"), read_judgement(reply))) for reply in judge(pairs)]


def summarize(judged: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """lmms-eval's aggregate of ``judge_samples``' records (see the module docstring)."""
    n = len(judged)
    counts = Counter(j["judgement"] for j in judged)
    wins = counts["Better"] + counts["Better++"]
    return {"win_rate": wins / n, "raw_scores": math.fsum(j["score"] for j in judged) / n,
            "win_rates": wins / n * 100,
            **{name: counts[judgement] / n * 100 for name, judgement in _SHARES.items()}}
