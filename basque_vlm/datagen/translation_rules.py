"""What of a text goes to the model, and what is kept or translated by rule.

A text is cut at its ``<image>`` placeholders: each piece between them is translated on its own
and the placeholders, with the whitespace around them, stay where they were. A piece's own
leading and trailing whitespace stays too. A piece without a letter (a number, ``3.5``,
``10:30``, punctuation) is kept as it is, and a bare yes or no (any case, an optional final
``.`` or ``!``) becomes the target language's word in the same case. Only the rest is sent.
"""

from __future__ import annotations

import dataclasses
import re

from basque_vlm.data.conversation import IMAGE_PLACEHOLDER

_PLACEHOLDER = re.compile(rf"(\s*{re.escape(IMAGE_PLACEHOLDER)}\s*)")
_EDGES = re.compile(r"(\s*)(.*?)(\s*)", re.DOTALL)
KEEP, RULE, MODEL = "keep", "rule", "model"


@dataclasses.dataclass(frozen=True)
class Part:
    """A piece of a text: ``how`` it is translated (KEEP, RULE or MODEL) and ``text``, the piece
    itself (for RULE, already translated)."""

    how: str
    text: str


def has_letters(text: str) -> bool:
    return any(c.isalpha() for c in text)


def has_text(text: str) -> bool:
    """Whether ``text`` has anything to translate: letters outside its placeholders."""
    return any(has_letters(piece) for piece in _PLACEHOLDER.split(text)[::2])


def split(text: str, yes_no: tuple[tuple[str, str], tuple[str, str]] | None = None
          ) -> list[Part]:
    """``text`` as parts whose texts, joined, give it back (MODEL parts once translated).
    ``yes_no`` is ``((source yes, source no), (target yes, target no))``, None for no rule."""
    parts: list[Part] = []
    for i, piece in enumerate(_PLACEHOLDER.split(text)):
        if i % 2 or not has_letters(piece):
            parts.append(Part(KEEP, piece))
            continue
        lead, core, trail = _EDGES.fullmatch(piece).groups()
        ruled = _yes_no(core, yes_no) if yes_no else None
        parts += [Part(KEEP, lead), Part(MODEL, core) if ruled is None else Part(RULE, ruled),
                  Part(KEEP, trail)]
    return [p for p in parts if p.text]


def _yes_no(core: str, yes_no: tuple[tuple[str, str], tuple[str, str]]) -> str | None:
    words, end = core.rstrip(".!"), core[len(core.rstrip(".!")):]
    if len(end) > 1:
        return None
    for said, meant in zip(*yes_no):
        if words.casefold() == said.casefold():
            return _same_case(words, meant) + end
    return None


def _same_case(model: str, word: str) -> str:
    if model.isupper() and len(model) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if model[:1].isupper() else word
