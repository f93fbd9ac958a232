"""Per-sample answer metrics: VQAv2 accuracy, A-OKVQA (multiple choice and direct answer), yes/no
and exact match.

VQAv2 (``vqa_accuracy``) is the official accuracy: both the prediction and the ten annotator
answers are normalised, then each annotator is left out in turn and the prediction scores
``min(1, matches among the other nine / 3)``; the accuracy is the mean over the ten subsets. The
normalisation is the official one (newline and tab → space; punctuation removed or turned into a
space; periods dropped unless a digit follows; number words → digits; articles dropped; the
contractions table), applied *always*, as lmms-eval does since 0.4.1. The official script (its
2021 version) normalises only when the annotators disagree, which makes e.g. "Yes" against ten
"yes" a miss; we follow lmms-eval so that numbers are comparable with published lmms-eval
results.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

# The official punctuation set; each is removed, or replaced by a space (see ``_punctuation``).
_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
_DIGIT_COMMA = re.compile(r"\d,+\d")  # lmms-eval's; the official script has one comma
# The official pattern reads "(?!<=\d)(\.)(?!\d)": a malformed look-behind that never fires, so
# in effect a period survives only when a digit follows it ("2.5", ".5"; not "5.").
_PERIOD = re.compile(r"\.(?!\d)")
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
            "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
# The official contractions table, as "CONTRACTED spelling spelling ..." groups: each spelling
# (a lower-case word without some apostrophes) is rewritten to CONTRACTED. The official table's
# entries keyed with a capital I ("Im", "Ive", "Id've", "I'dve") never match the lower-cased words,
# and its identity entries change nothing: both are left out. "somebody'd" → "somebodyd" is the
# official table's (reversed) entry, kept to give the same scores.
_CONTRACTION_GROUPS = """
ain't aint | aren't arent | can't cant | could've couldve | couldn't couldnt |
couldn't've couldn'tve couldnt've | didn't didnt | doesn't doesnt | don't dont | hadn't hadnt |
hadn't've hadnt've hadn'tve | hasn't hasnt | haven't havent | he'd hed | he'd've hed've he'dve |
he's hes | how'd howd | how'll howll | how's hows | isn't isnt | it'd itd |
it'd've itd've it'dve | it'll itll | ma'am maam | mightn't mightnt |
mightn't've mightnt've mightn'tve | might've mightve | mustn't mustnt | must've mustve |
needn't neednt | not've notve | o'clock oclock | oughtn't oughtnt |
'ow's'at ow's'at 'ows'at 'ow'sat | shan't shant | she'd've shed've she'dve |
should've shouldve | shouldn't shouldnt | shouldn't've shouldnt've shouldn'tve |
somebodyd somebody'd | somebody'd've somebodyd've somebody'dve | somebody'll somebodyll |
somebody's somebodys | someone'd someoned | someone'd've someoned've someone'dve |
someone'll someonell | someone's someones | something'd somethingd |
something'd've somethingd've something'dve | something'll somethingll | that's thats |
there'd thered | there'd've thered've there'dve | there're therere | there's theres |
they'd theyd | they'd've theyd've they'dve | they'll theyll | they're theyre | they've theyve |
'twas twas | wasn't wasnt | we'd've wed've we'dve | we've weve | weren't werent |
what'll whatll | what're whatre | what's whats | what've whatve | when's whens |
where'd whered | where's wheres | where've whereve | who'd whod | who'd've whod've who'dve |
who'll wholl | who's whos | who've whove | why'll whyll | why're whyre | why's whys |
won't wont | would've wouldve | wouldn't wouldnt | wouldn't've wouldnt've wouldn'tve |
y'all yall | y'all'll yall'll y'allll | y'all'd've yall'd've y'alld've y'all'dve |
you'd youd | you'd've youd've you'dve | you'll youll | you're youre | you've youve
"""
_CONTRACTIONS = {spelling: group.split()[0] for group in _CONTRACTION_GROUPS.split("|")
                 for spelling in group.split()[1:]}


def _punctuation(text: str) -> str:
    """Each official punctuation mark is deleted when it touches a space (or the text has a comma
    between digits, as in "1,000"), else replaced by a space ("black-and-white"); then periods
    not followed by a digit are deleted. The test looks at the input text, not the running
    result, as the official code does."""
    delete = bool(_DIGIT_COMMA.search(text))
    out = text
    for mark in _PUNCTUATION:
        gone = delete or f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if gone else " ")
    return _PERIOD.sub("", out)


def _digits_articles(text: str) -> str:
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_vqa(answer: str) -> str:
    """An answer as the VQAv2 evaluation compares it (lmms-eval ≥ 0.4.1)."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles(_punctuation(answer))


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """The official VQAv2 accuracy of ``prediction`` against the annotator ``answers`` (ten in
    VQAv2): the mean over leave-one-out subsets of ``min(1, matches / 3)``, both sides normalised
    as in lmms-eval ≥ 0.4.1 (see the module docstring)."""
    if not answers:
        raise ValueError("vqa_accuracy needs at least one reference answer")
    pred = normalize_vqa(prediction)
    hits = [normalize_vqa(a) == pred for a in answers]
    total = sum(hits)
    return math.fsum(min(1.0, (total - hit) / 3) for hit in hits) / len(hits)


def direct_answer_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """A-OKVQA direct answer, the official rule: ``min(1, matches / 3)`` over the ten direct
    answers, compared as they are (the official script does not normalise; only surrounding
    whitespace of the prediction is stripped here)."""
    pred = prediction.strip()
    return min(1.0, sum(pred == a for a in answers) / 3)


# -- multiple choice -------------------------------------------------------------------------

LETTERS = "ABCDEFGHIJ"
_ONLY_LETTER = re.compile(r"^\W*\(?([A-Za-z])\)?\W*$")
_LEADING_LETTER = re.compile(r"^\W{0,3}\(?([A-Z])(?:\)|\.|:|\s+-|$)")
# A lower-case letter counts after an English phrase only when nothing follows it ("answer is
# b."), so that "the answer is a cat" reads the article as no letter.
_LETTER_AFTER = r"\(?([A-Z]|[a-z](?=\)?\s*(?:$|[.,;:!)])))\)?(?![\w'])"
# "The answer is B", "Answer: (C)", "option D", "Erantzuna B da", "Erantzun zuzena: C",
# "aukera zuzena A da", "B aukera", "C letra", "B da erantzuna".
_EXPLICIT = (
    re.compile(r"\b(?i:answer|option|choice|letter)\b(?:\s+(?i:is))?\s*[:\-]?\s*"
               + _LETTER_AFTER),
    re.compile(r"\b(?:erantzun(?:a|ak)?|aukera|letra)\b(?:\s+zuzena)?\s*[:\-]?\s*\(?([A-Za-z])\)?"
               r"(?![\w'])", re.IGNORECASE),
    re.compile(r"(?<![\w'])\(?([A-Z])\)?\s+(?:aukera|letra|da\s+erantzun)", re.IGNORECASE),
)
_LONE_LETTER = re.compile(r"(?<![\w'])([A-Z])(?![\w'])")
_WORDS = re.compile(r"[^\w\s]+")


def _text_key(text: str) -> str:
    return " ".join(_WORDS.sub(" ", text.lower()).split())


def parse_choice(answer: str, choices: Sequence[str]) -> int | None:
    """The option index a free-text answer picks, or None when it cannot be told.

    In order: a lone letter ("B", "(b)", "B."); a leading letter ("B. dog", "(B) dog"); an
    explicit phrase in English or Basque ("The answer is B", "Erantzuna B da", "B aukera"); the
    option text itself (exactly, else the one option named in the answer, the longest when one
    option's text contains another's); a single capital letter standing alone ("I pick C").
    """
    valid = LETTERS[:len(choices)]
    text = answer.strip()

    def letter(match: re.Match | None) -> int | None:
        if match and match.group(1).upper() in valid:
            return valid.index(match.group(1).upper())
        return None

    for pattern in (_ONLY_LETTER, _LEADING_LETTER, *_EXPLICIT):
        found = letter(pattern.search(text))
        if found is not None:
            return found
    key = _text_key(text)
    keys = [_text_key(c) for c in choices]
    if key in keys and keys.count(key) == 1:
        return keys.index(key)
    named = [i for i, k in enumerate(keys) if k and re.search(rf"\b{re.escape(k)}\b", key)]
    named = [i for i in named if not any(keys[i] != keys[j] and keys[i] in keys[j]
                                         for j in named)]
    if len(named) == 1:
        return named[0]
    lone = {m.group(1) for m in _LONE_LETTER.finditer(text)
            if m.group(1) in valid and not (m.group(1) == "A" and _article(text, m.start()))}
    return valid.index(lone.pop()) if len(lone) == 1 else None


def _article(text: str, start: int) -> bool:
    """An "A" that opens a sentence before a lower-case word is the English article."""
    before = text[:start].rstrip(" \"'(*")
    return (not before or before[-1] in ".!?") and bool(re.match(r"\s+[a-z]", text[start + 1:]))


def format_choices(choices: Sequence[str]) -> str:
    """The options as lmms-eval lays them out: one ``A. text`` line each."""
    if len(choices) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options, got {len(choices)}")
    return "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))


# -- yes/no and exact match ------------------------------------------------------------------

_YES = frozenset({"yes", "bai"})
_NO = frozenset({"no", "ez"})
_WORD = re.compile(r"\w+")


def parse_yes_no(answer: str) -> bool | None:
    """True for yes/bai, False for no/ez, None otherwise. The first word decides ("Bai, ...",
    "Yes.", "Ez dago"); else every yes/no word in the answer must agree ("The answer is yes")."""
    words = _WORD.findall(answer.lower())
    if not words:
        return None
    if words[0] in _YES or words[0] in _NO:
        return words[0] in _YES
    said = {w in _YES for w in words if w in _YES or w in _NO}
    return said.pop() if len(said) == 1 else None


def yes_no_accuracy(prediction: str, answer: str) -> float:
    """1 when the prediction gives the reference's yes/no (bai/ez) answer."""
    truth = parse_yes_no(answer)
    if truth is None:
        raise ValueError(f"reference answer {answer!r} is not a yes/no (bai/ez) answer")
    return float(parse_yes_no(prediction) == truth)


def normalize_light(text: str) -> str:
    """Case folded, surrounding whitespace, quotes and trailing punctuation removed."""
    return text.strip().strip("\"'`").rstrip(".!?,;:").strip().casefold()


def exact_match(prediction: str, answer: str) -> float:
    """1 when the answers agree up to case and trailing punctuation ("Gorria." = "gorria")."""
    return float(normalize_light(prediction) == normalize_light(answer))
