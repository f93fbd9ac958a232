"""Quality flags of a translated text: signs that a person should look at it. None is an error;
the text stays in the output either way.

- ``failed``: the request failed after its retries; the source text was kept.
- ``empty``: the translation is empty.
- ``identical``: the translation is the source text, for a text of two words or more (single
  words, names and loanwords often stay as they are).
- ``length_ratio``: translation length / source length (in characters) outside the band
  (default 0.5 to 2), for sources of at least ``MIN_LENGTH`` characters.
- ``placeholders``: a different number of ``<image>`` placeholders.
- ``numbers``: different numbers (runs of digits, as a multiset: ``3.5`` and ``3,5`` agree).
- ``language``: the language identifier takes the translation for another language with
  probability ``LANGUAGE_CONFIDENCE`` or more, for translations of at least ``MIN_LETTERS``
  letters. The identifier is py3langid (a fork of langid.py: 140 languages, Basque, Galician,
  Catalan, Welsh and Irish among them; numpy only; its model ships inside its wheel); a target
  it does not know is not checked.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from basque_vlm.data.conversation import IMAGE_PLACEHOLDER

FAILED, EMPTY, IDENTICAL, LENGTH_RATIO = "failed", "empty", "identical", "length_ratio"
PLACEHOLDERS, NUMBERS, LANGUAGE = "placeholders", "numbers", "language"
MIN_LENGTH = 20
MIN_LETTERS = 20
LANGUAGE_CONFIDENCE = 0.5
_DIGITS = re.compile(r"\d+")
_WORD = re.compile(r"\w+")


class Checks:
    """The flags of (source, translation) pairs into the language ``target`` (a code)."""

    def __init__(self, target: str, length_band: Sequence[float] = (0.5, 2.0),
                 language_check: bool = True):
        if len(length_band) != 2 or not 0 <= length_band[0] < length_band[1]:
            raise ValueError(f"--length_band={','.join(map(str, length_band))}: expected two "
                             "numbers LOW,HIGH with 0 <= LOW < HIGH")
        self.target = target
        self.low, self.high = length_band
        self._identifier = _identifier(target) if language_check else None

    @property
    def checks_language(self) -> bool:
        return self._identifier is not None

    def __call__(self, source: str, translation: str) -> list[str]:
        """The flags of one translation (``failed`` is the run's: a translation that
        never came)."""
        if not translation.strip():
            return [EMPTY]
        flags = []
        if translation.strip() == source.strip() and len(_WORD.findall(source)) >= 2:
            flags.append(IDENTICAL)
        if len(source.strip()) >= MIN_LENGTH and not \
                self.low <= len(translation.strip()) / len(source.strip()) <= self.high:
            flags.append(LENGTH_RATIO)
        if source.count(IMAGE_PLACEHOLDER) != translation.count(IMAGE_PLACEHOLDER):
            flags.append(PLACEHOLDERS)
        if Counter(_DIGITS.findall(source)) != Counter(_DIGITS.findall(translation)):
            flags.append(NUMBERS)
        if self._identifier is not None and self._wrong_language(translation):
            flags.append(LANGUAGE)
        return flags

    def _wrong_language(self, translation: str) -> bool:
        text = translation.replace(IMAGE_PLACEHOLDER, " ")
        if sum(c.isalpha() for c in text) < MIN_LETTERS:
            return False
        found, probability = self._identifier.classify(text)
        return found != self.target and probability >= LANGUAGE_CONFIDENCE


def _identifier(target: str) -> Any | None:
    """py3langid's identifier with probabilities, or None where it does not know ``target``."""
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        raise ValueError("the language check needs py3langid (pip install py3langid==0.4.0); "
                         "--nolanguage_check runs without it") from None
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return identifier if target in identifier.labels else None
