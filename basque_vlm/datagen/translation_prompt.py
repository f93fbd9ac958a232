"""What a translation model is told: the languages, the instructions and the few-shot examples.

A language is named by its code (``eu``) or, for those of ``LANGUAGES``, by its English name
(``Basque``); a language outside the table needs both, its code for file names and checks and its
name for the prompt.

The default prompt (`DEFAULT_SYSTEM`, `DEFAULT_TEMPLATE`) is a system message with the
instructions and a user message per string. A template is text with these placeholders:
``{text}`` (required: the string to translate), ``{source}`` and ``{target}`` (the languages'
names), ``{source_code}`` and ``{target_code}``; a literal brace is written twice (``{{``).
A server gets the system message, then each example as a user message (the template applied to
its source) answered by an assistant message (its target), then the string. A checkpoint of ours
gets all of it in one user message (`Prompt.single`): the system text, the examples as
``Source: ...`` / ``Target: ...`` pairs, then the template applied to the string.

Few-shot examples are a JSONL file of ``{"source": ..., "target": ...}``; a small set for
English to Basque ships with the package (``translation_examples_en_eu.jsonl``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import string
from pathlib import Path
from typing import Any

Message = dict[str, Any]

# ISO 639-1 code → English name: the paper's language, its neighbours and the usual sources.
LANGUAGES = {"eu": "Basque", "gl": "Galician", "ca": "Catalan", "cy": "Welsh", "ga": "Irish",
             "en": "English", "es": "Spanish", "fr": "French", "pt": "Portuguese",
             "it": "Italian", "de": "German"}
# The words a bare yes/no answer becomes. Welsh and Irish have no general words for yes and no
# (an answer echoes the question's verb): "ie"/"na" and "tá"/"níl" fit only some questions
# ("tá"/"níl" answer "An bhfuil...?", "is ... there?"), so check them against your data or let
# the model translate (``--yes_no=model``). Galician writes the adverb "si" without an accent.
YES_NO = {"en": ("yes", "no"), "eu": ("bai", "ez"), "gl": ("si", "non"), "ca": ("sí", "no"),
          "cy": ("ie", "na"), "ga": ("tá", "níl"), "es": ("sí", "no"), "fr": ("oui", "non"),
          "pt": ("sim", "não"), "it": ("sì", "no"), "de": ("ja", "nein")}

DEFAULT_SYSTEM = (
    "You are a professional translator. Translate the {source} text that the user sends into "
    "{target}. Keep its meaning, register and formatting (line breaks, lists, Markdown); keep "
    "numbers, names, code and URLs as they are; a question stays a question. Reply with the "
    "translation only, without notes, quotes or explanations.")
DEFAULT_TEMPLATE = "Translate this {source} text into {target}:\n\n{text}"
PLACEHOLDERS = ("text", "source", "target", "source_code", "target_code")
EXAMPLES_DIR = Path(__file__).parent


@dataclasses.dataclass(frozen=True)
class Language:
    code: str
    name: str


@dataclasses.dataclass(frozen=True)
class Example:
    source: str
    target: str


def language(given: str, name: str | None = None, flag: str = "--target") -> Language:
    """The language ``given`` as a code or an English name of ``LANGUAGES``; with ``name``,
    ``given`` is the code of a language of that name (any language)."""
    given = given.strip()
    if name:
        return Language(given, name.strip())
    if given in LANGUAGES:
        return Language(given, LANGUAGES[given])
    by_name = {n.casefold(): c for c, n in LANGUAGES.items()}
    if given.casefold() in by_name:
        code = by_name[given.casefold()]
        return Language(code, LANGUAGES[code])
    raise ValueError(f"{flag}={given}: not a language this tool knows ({', '.join(LANGUAGES)}); "
                     f"give its code with {flag}=CODE and its English name with {flag}_name=NAME")


def yes_no_words(lang: Language, given: str = "rule") -> tuple[str, str] | None:
    """The target words of a bare yes/no: ``given`` as ``YES,NO``, or ``rule`` (the table's,
    None for a language without a row) or ``model`` (None: the model translates them)."""
    if given == "model":
        return None
    if given == "rule":
        return YES_NO.get(lang.code)
    words = tuple(w.strip() for w in given.split(","))
    if len(words) != 2 or not all(words):
        raise ValueError(f"--yes_no={given}: expected rule, model or two words YES,NO")
    return words


def read_template(path: Path, required: bool = True) -> str:
    """A template file (one trailing newline dropped), its placeholders checked."""
    text = path.read_text(encoding="utf-8").removesuffix("\n")
    check_template(text, str(path), required)
    return text


def check_template(text: str, where: str, required: bool = True) -> None:
    """Raises ValueError naming ``where`` for an unknown placeholder, or a ``{text}`` missing
    (``required``) or present where it must not be."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as e:
        raise ValueError(f"{where}: not a template ({e}; write a literal brace twice)") from None
    unknown = sorted(names - set(PLACEHOLDERS))
    if unknown:
        raise ValueError(f"{where}: unknown placeholder(s) {', '.join(unknown)}; known: "
                         f"{', '.join(PLACEHOLDERS)}")
    if required and "text" not in names:
        raise ValueError(f"{where}: the template needs {{text}}, where the string goes")
    if not required and "text" in names:
        raise ValueError(f"{where}: the system message cannot hold {{text}}")


def read_examples(path: Path) -> list[Example]:
    """The examples of a JSONL file of ``{"source": ..., "target": ...}``."""
    examples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path} line {number}: not valid JSON ({e})") from None
            if not isinstance(record, dict) or not all(
                    isinstance(record.get(k), str) and record[k].strip()
                    for k in ("source", "target")):
                raise ValueError(f'{path} line {number}: expected {{"source": text, "target": '
                                 "text}")
            examples.append(Example(record["source"], record["target"]))
    return examples


def default_examples(source: Language, target: Language) -> Path | None:
    """The examples that ship for this direction, if any."""
    path = EXAMPLES_DIR / f"translation_examples_{source.code}_{target.code}.jsonl"
    return path if path.is_file() else None


@dataclasses.dataclass(frozen=True)
class Prompt:
    """How one string is asked for: ``system`` and ``template`` with their placeholders."""

    source: Language
    target: Language
    system: str = DEFAULT_SYSTEM
    template: str = DEFAULT_TEMPLATE
    examples: tuple[Example, ...] = ()

    def _fill(self, template: str, text: str = "") -> str:
        return template.format(text=text, source=self.source.name, target=self.target.name,
                               source_code=self.source.code, target_code=self.target.code)

    def messages(self, text: str) -> list[Message]:
        """The chat messages for a server: system, the examples as turns, the string."""
        system = self._fill(self.system)
        out: list[Message] = [{"role": "system", "content": system}] if system else []
        for example in self.examples:
            out += [{"role": "user", "content": self._fill(self.template, example.source)},
                    {"role": "assistant", "content": example.target}]
        return out + [{"role": "user", "content": self._fill(self.template, text)}]

    def single(self, text: str) -> str:
        """All of it as one user message, for a checkpoint's chat template."""
        parts = [self._fill(self.system)] if self.system else []
        if self.examples:
            parts.append("Examples:\n\n" + "\n\n".join(
                f"{self.source.name}: {e.source}\n{self.target.name}: {e.target}"
                for e in self.examples))
        return "\n\n".join(parts + [self._fill(self.template, text)])

    def fingerprint(self) -> str:
        """A hash of everything the model is told but the string itself."""
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True,
                                         ensure_ascii=False).encode()).hexdigest()[:16]
