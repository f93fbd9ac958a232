"""A package as a spreadsheet, for annotators who prefer one to the annotation page: export
the items (with the answers so far) as CSV, fill in ``verdict`` (accept or reject),
``correction`` and ``comment``, import it back. Only those three columns and ``key`` are read
back; a row left without a verdict is left unanswered. Import checks every row before it
saves any, and names the first bad one (row 1 is the header, as a spreadsheet counts)."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any

from basque_vlm.datagen.annotations import VERDICTS, Answer, AnswerStore, make_answer

COLUMNS = ("key", "benchmark", "field", "image", "source", "text", "references", "verdict",
           "correction", "comment")
REQUIRED = ("key", "verdict")
# UTF-8 with a byte-order mark: spreadsheets otherwise read the file in a legacy encoding.
ENCODING = "utf-8-sig"


def export_csv(store: AnswerStore, path: Path) -> dict[str, Any]:
    """Writes the package's items, one row each with its latest answer, to ``path``
    (replaced whole: written beside it, then renamed)."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding=ENCODING, newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for item in store.package.items:
                answer = store.latest.get(item.key)
                writer.writerow([item.key, item.benchmark, item.field or "", item.image or "",
                                 item.source, item.text, "\n".join(item.references),
                                 answer.verdict if answer else "",
                                 answer.correction if answer else "",
                                 answer.comment if answer else ""])
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    return {"exported": len(store.package.items), "answered": len(store.latest)}


def _row_answer(row: dict[str, str | None], where: str, store: AnswerStore,
                seen: dict[str, str]) -> Answer | None:
    key = (row.get("key") or "").strip()
    cells = {name: (row.get(name) or "").strip() for name in ("verdict", "correction",
                                                                 "comment")}
    if not key:
        if any(cells.values()):
            raise ValueError(f"{where}: an answer without a key")
        return None
    if key not in store.package.keys:
        raise ValueError(f"{where}: item {key!r} is not in {store.package.annotator}'s package")
    if key in seen:
        raise ValueError(f"{where}: item {key!r} again (first at {seen[key]})")
    seen[key] = where
    verdict = cells["verdict"].lower()
    if not verdict:
        if cells["correction"] or cells["comment"]:
            raise ValueError(f"{where}: a correction or comment needs a verdict "
                             f"({' or '.join(VERDICTS)})")
        return None
    if verdict not in VERDICTS:
        raise ValueError(f"{where}: verdict must be {' or '.join(VERDICTS)} (or empty), "
                         f"got {cells['verdict']!r}")
    return make_answer(key, verdict, cells["correction"], cells["comment"], via="csv")


def import_csv(store: AnswerStore, path: Path) -> dict[str, Any]:
    """Saves the answers of the CSV at ``path`` that differ from the latest ones; a bad row
    raises ValueError naming it, and then nothing is saved."""
    with open(path, encoding=ENCODING, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(missing)} (the header row needs "
                             f"{', '.join(REQUIRED)}; export one with --export_csv)")
        seen: dict[str, str] = {}
        answers = []
        for number, row in enumerate(reader, 2):
            answer = _row_answer(row, f"{path} row {number}", store, seen)
            if answer is not None:
                answers.append(answer)
    new = [a for a in answers if not a.same_judgement(store.latest.get(a.key))]
    for answer in new:
        store.save(answer)
    return {"imported": len(new), "unchanged": len(answers) - len(new),
            "done": len(store.latest), "total": len(store.package.items)}
