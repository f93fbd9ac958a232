"""The answer metrics, against values worked out by hand from their definitions.

VQAv2: with ``m`` of ten annotators matching, the leave-one-out mean is
``(m·min(1, (m-1)/3) + (10-m)·min(1, m/3)) / 10``: 0, 0.3, 0.6, 0.9, then 1 from four matches on.
"""

import pytest

from basque_vlm.eval import metrics
from basque_vlm.eval.metrics import (direct_answer_accuracy, exact_match, parse_choice,
                                     parse_yes_no, vqa_accuracy, yes_no_accuracy)


def ten(answer: str, matching: int, other: str = "zzz") -> list[str]:
    return [answer] * matching + [other] * (10 - matching)


VQA_CASES = [
    # the leave-one-out mean of min(1, matches / 3)
    ("yes", ten("yes", 10), 1.0),
    ("no", ten("yes", 10), 0.0),
    ("cat", ten("cat", 1), 0.3),
    ("cat", ten("cat", 2), 0.6),
    ("cat", ten("cat", 3), 0.9),
    ("cat", ten("cat", 4), 1.0),
    ("yes", ["no"] * 9 + ["yes"], 0.3),
    ("cat", ["cat", "cat", "dog"], (1 / 3 + 1 / 3 + 2 / 3) / 3),  # three annotators
    ("cat", ["cat"], 0.0),  # one annotator: leaving it out leaves no match
    ("", ten("yes", 10), 0.0),
    # case, surrounding whitespace, newlines and tabs (lmms-eval normalises even when all
    # annotators agree; the official 2021 script would give "Yes" 0 against ten "yes")
    ("Yes", ten("yes", 10), 1.0),
    ("YES", ten("Yes", 3), 0.9),
    ("  yes\n", ten("yes", 10), 1.0),
    ("red\tcar", ten("red car", 10), 1.0),
    ("red\ncar", ten("red car", 2), 0.6),
    # punctuation: deleted when it touches a space, else replaced by a space
    ("yes!", ten("yes", 10), 1.0),
    ("t-shirt", ten("t shirt", 10), 1.0),
    ("t-shirt", ten("tshirt", 10), 0.0),
    ("black and white", ten("black-and-white", 10), 1.0),
    ("red , blue", ten("red blue", 10), 1.0),
    ("red,blue", ten("red blue", 10), 1.0),
    ("(dog)", ten("dog", 10), 1.0),
    ("left/right", ten("left right", 10), 1.0),
    ("@home", ten("home", 10), 1.0),
    ("a/b", ten("b", 10), 1.0),  # "a b", then the article goes
    ("yes, no-way", ten("yes no way", 10), 1.0),  # ", " deletes commas; "-" becomes a space
    # a comma between digits deletes every punctuation mark of the text
    ("1,000", ten("1000", 10), 1.0),
    ("10,000", ten("10 000", 10), 0.0),
    ("red-blue 1,000", ten("redblue 1000", 10), 1.0),
    # periods: deleted unless a digit follows (never replaced by a space)
    ("3.5", ten("3.5", 10), 1.0),
    ("3.5", ten("35", 10), 0.0),
    ("5.", ten("5", 10), 1.0),
    ("mr. smith", ten("mr smith", 10), 1.0),
    ("dr.who", ten("drwho", 10), 1.0),
    ("dr.who", ten("dr who", 10), 0.0),
    (".5", ten("5", 10), 0.0),
    # number words up to ten become digits ("none" is 0)
    ("two", ten("2", 10), 1.0),
    ("Two.", ten("2", 3, other="3"), 0.9),
    ("none", ten("0", 10), 1.0),
    ("zero", ten("none", 10), 1.0),
    ("ten", ten("10", 10), 1.0),
    ("eleven", ten("11", 10), 0.0),
    ("one dog", ten("1 dog", 10), 1.0),
    ("2", ["two", "2", "Two", "2.", "three", "3", "3", "3", "3", "3"], 1.0),
    # articles a, an, the are dropped as words only
    ("the dog", ten("dog", 10), 1.0),
    ("a dog", ten("an dog", 10), 1.0),
    ("The Beatles", ten("beatles", 10), 1.0),
    ("theater", ten("ater", 10), 0.0),
    ("an apple", ten("apple", 2, other="pear"), 0.6),
    ("The dog!", ten("dog", 3), 0.9),
    # the contractions table
    ("dont", ten("don't", 10), 1.0),
    ("isnt", ten("isn't", 10), 1.0),
    ("cant", ten("can't", 10), 1.0),
    ("shouldnt've", ten("shouldn't've", 10), 1.0),
    ("whats", ten("what's", 10), 1.0),
    ("oclock", ten("o'clock", 10), 1.0),
    ("yall'll", ten("y'allll", 10), 1.0),
    ("it's", ten("its", 10), 0.0),
    ("im", ten("i'm", 10), 0.0),  # the official key is "Im": never matches lower-cased words
    ("somebody'd", ten("somebodyd", 10), 1.0),  # the official (reversed) entry
    # Basque answers go through the same rules
    ("Bai.", ten("bai", 10), 1.0),
    ("Gorria", ten("gorria", 3, other="urdina"), 0.9),
]


@pytest.mark.parametrize("prediction,answers,expected", VQA_CASES)
def test_vqa_accuracy(prediction, answers, expected):
    assert vqa_accuracy(prediction, answers) == pytest.approx(expected, abs=1e-12)


def test_vqa_accuracy_needs_answers():
    with pytest.raises(ValueError):
        vqa_accuracy("yes", [])


def test_vqa_normalisation_examples():
    assert metrics.normalize_vqa("The two dogs, aren't they?") == "2 dogs aren't they"
    assert metrics.normalize_vqa("Black-and-White.") == "black and white"


DOG = ["dog", "cat", "hot dog", "bird"]
TXAKUR = ["txakurra", "katua", "hegaztia", "zaldia"]
CHOICE_CASES = [
    # English
    ("B", DOG, 1), ("B.", DOG, 1), ("(B)", DOG, 1), ("b", DOG, 1), ("A", DOG, 0),
    ("(B) cat", DOG, 1), ("B) cat", DOG, 1), ("B: cat", DOG, 1), ("D. bird", DOG, 3),
    ("The answer is B", DOG, 1), ("The answer is B.", DOG, 1), ("the answer is b.", DOG, 1),
    ("Answer: C", DOG, 2), ("answer: (d)", DOG, 3), ("Option D", DOG, 3), ("Letter B", DOG, 1),
    ("The correct option is A.", DOG, 0), ("I choose C because it is cooked.", DOG, 2),
    ("cat", DOG, 1), ("Cat.", DOG, 1), ("hot dog", DOG, 2), ("It is a hot dog.", DOG, 2),
    ("The answer is a cat", DOG, 1), ("A dog.", DOG, 0), ("A bird", DOG, 3),
    ("E", DOG, None), ("I don't know", DOG, None), ("", DOG, None), ("Both A and B", DOG, None),
    # Basque
    ("Erantzuna B da", TXAKUR, 1), ("Erantzuna: C", TXAKUR, 2),
    ("Erantzun zuzena D da.", TXAKUR, 3),
    ("B aukera", TXAKUR, 1), ("B aukera da zuzena", TXAKUR, 1), ("Aukera zuzena A da", TXAKUR, 0),
    ("C letra", TXAKUR, 2), ("B da erantzuna", TXAKUR, 1), ("Erantzuna: (a)", TXAKUR, 0),
    ("A aukera", TXAKUR, 0), ("(C) hegaztia", TXAKUR, 2), ("katua", TXAKUR, 1),
    ("Katua da.", TXAKUR, 1), ("Erantzuna katua da", TXAKUR, 1), ("Irudian zaldia dago", TXAKUR, 3),
    ("Ez dakit", TXAKUR, None),
]


@pytest.mark.parametrize("answer,choices,expected", CHOICE_CASES)
def test_parse_choice(answer, choices, expected):
    assert parse_choice(answer, choices) == expected


def test_format_choices_as_lmms_eval():
    assert metrics.format_choices(["dog", "cat"]) == "A. dog\nB. cat"


YES_NO_CASES = [
    ("Yes", True), ("yes.", True), ("Yes, there is a cat.", True), ("YES!", True),
    ("No", False), ("no, it isn't", False), ("NO.", False), ("The answer is yes.", True),
    ("Maybe", None), ("", None), ("Nope", None),
    ("Bai", True), ("bai.", True), ("Bai, katu bat dago.", True), ("BAI!", True),
    ("Ez", False), ("Ez dago katurik.", False), ("Ez, ez dago.", False),
    ("Erantzuna bai da.", True), ("Agian", None),
]


@pytest.mark.parametrize("answer,expected", YES_NO_CASES)
def test_parse_yes_no(answer, expected):
    assert parse_yes_no(answer) is expected


@pytest.mark.parametrize("prediction,reference,expected", [
    ("Bai", "yes", 1.0), ("Ez.", "no", 1.0), ("Yes", "ez", 0.0), ("no", "bai", 0.0),
    ("Bai, badago.", "Bai", 1.0), ("Yes.", "Yes, it is.", 1.0), ("Maybe", "yes", 0.0)])
def test_yes_no_accuracy_across_languages(prediction, reference, expected):
    assert yes_no_accuracy(prediction, reference) == expected


def test_yes_no_reference_must_be_yes_or_no():
    with pytest.raises(ValueError, match="not a yes/no"):
        yes_no_accuracy("yes", "a cat")


@pytest.mark.parametrize("prediction,expected", [
    ("Gorria.", 1.0), ("gorria", 1.0), (" GORRIA ", 1.0), ('"Gorria"', 1.0), ("Urdina.", 0.0),
    ("Gorria bat", 0.0)])
def test_exact_match(prediction, expected):
    assert exact_match(prediction, "Gorria.") == expected


@pytest.mark.parametrize("prediction,expected", [
    ("dog", 1.0), ("cat", 1.0), (" dog ", 1.0), ("Dog", 0.0), ("bird", 0.0)])
def test_direct_answer_official_rule(prediction, expected):
    assert direct_answer_accuracy(prediction, ["dog"] * 4 + ["cat"] * 6) == expected
    assert direct_answer_accuracy("dog", ["dog"] * 2 + ["cat"] * 8) == pytest.approx(2 / 3)
