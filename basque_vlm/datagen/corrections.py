"""Writing the annotators' corrections back into the items.

The rule, per item: every annotator who answered it votes for one text, their correction
where they gave one that differs from the original (whatever their verdict: a rejected
translation often comes with the right one), else the original. The text with the most votes
is kept. A tie between the leading texts keeps the original and is listed for a person to
settle (``tie``); every proposed correction is recorded with the item either way.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from typing import Any

from basque_vlm.datagen.annotations import Answer
from basque_vlm.datagen.items import PREDICTION, TRANSLATION

# The field of an input record that holds the judged text.
JUDGED_FIELD = {TRANSLATION: "target", PREDICTION: "prediction"}
CORRECTED, UNCHANGED, TIE, UNANSWERED = "corrected", "unchanged", "tie", "unanswered"


@dataclasses.dataclass(frozen=True)
class Resolution:
    """The text kept for an item, why (``status``: corrected, unchanged, tie or
    unanswered), and the corrections proposed: text → the annotators who proposed it."""

    text: str
    status: str
    proposals: dict[str, list[str]]


def resolve(original: str, answers: Mapping[str, Answer]) -> Resolution:
    """Applies the rule above to the latest answers to one item, by annotator."""
    if not answers:
        return Resolution(original, UNANSWERED, {})
    votes = {name: a.correction if a.correction and a.correction != original else original
             for name, a in sorted(answers.items())}
    proposals: dict[str, list[str]] = {}
    for name, text in votes.items():
        if text != original:
            proposals.setdefault(text, []).append(name)
    counts = Counter(votes.values()).most_common()
    leaders = [text for text, count in counts if count == counts[0][1]]
    if len(leaders) > 1:
        return Resolution(original, TIE, proposals)
    return Resolution(leaders[0], CORRECTED if leaders[0] != original else UNCHANGED, proposals)


def decision(answers: Mapping[str, Answer]) -> str:
    """The item's verdict by majority: accepted, rejected, split (a tie) or unanswered."""
    if not answers:
        return UNANSWERED
    accepts = sum(a.verdict == "accept" for a in answers.values())
    rejects = len(answers) - accepts
    return "accepted" if accepts > rejects else "rejected" if rejects > accepts else "split"


def corrected_record(kind: str, key: str, record: Mapping[str, Any],
                     answers: Mapping[str, Answer]) -> tuple[dict[str, Any], Resolution]:
    """``record`` (an input record, as read) with the kept text in its judged field, and a
    ``validation`` object: the item's key, each annotator's verdict, the majority
    ``decision``, the text's ``status``, the ``original`` text where it was replaced, the
    ``proposals`` and the annotators' ``comments`` (where there are any)."""
    field = JUDGED_FIELD[kind]
    resolution = resolve(record[field], answers)
    validation: dict[str, Any] = {
        "key": key, "verdicts": {n: a.verdict for n, a in sorted(answers.items())},
        "decision": decision(answers), "status": resolution.status}
    if resolution.status == CORRECTED:
        validation["original"] = record[field]
    if resolution.proposals:
        validation["proposals"] = resolution.proposals
    comments = {n: a.comment for n, a in sorted(answers.items()) if a.comment}
    if comments:
        validation["comments"] = comments
    return {**record, field: resolution.text, "validation": validation}, resolution
