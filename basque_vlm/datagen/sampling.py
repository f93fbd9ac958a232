"""Drawing the items people validate and splitting them into one package per annotator.

Per benchmark, ``per_benchmark`` items are drawn (all of them where there are fewer) with a
generator seeded by the seed and the benchmark's name, so a benchmark's draw does not depend
on the others. A share ``overlap`` of the drawn items (rounded to whole items) goes to every
annotator, for the agreement statistics; the rest is dealt round-robin, continuing across
benchmarks, so that every annotator gets the same number of items to within one.

The sample is the folder ``DIR``: ``manifest.json`` (the settings, the benchmarks and the
packages), ``items.jsonl`` (every drawn item once: its key, who sees it, where it came from and
the record as read), and ``DIR/<annotator>/`` for each annotator (see `annotations`). It is
built in a temporary folder beside ``DIR`` and renamed into place, so it is there whole or not
at all.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from basque_vlm.datagen import annotations
from basque_vlm.datagen.items import SourceItem

MANIFEST, ITEMS = "manifest.json", "items.jsonl"
FORMAT = "basque_vlm.validate/1"


@dataclasses.dataclass(frozen=True)
class Assigned:
    """A drawn item and the annotators who judge it (all of them for an overlap item)."""

    item: SourceItem
    annotators: tuple[str, ...]
    overlap: bool


def draw(items: Sequence[SourceItem], per_benchmark: int, overlap: float,
         annotators: Sequence[str], seed: int) -> list[Assigned]:
    """The drawn items of every benchmark (benchmarks in the order they first appear, items
    in the order drawn), each with its annotators."""
    if per_benchmark < 1:
        raise ValueError(f"--per_benchmark must be at least 1, got {per_benchmark}")
    if not 0 <= overlap <= 1:
        raise ValueError(f"--overlap must lie in [0, 1], got {overlap}")
    if not annotators:
        raise ValueError("no annotators")
    groups: dict[str, list[SourceItem]] = {}
    for item in items:
        groups.setdefault(item.benchmark, []).append(item)
    assigned, turn = [], 0
    for benchmark, group in groups.items():
        rng = random.Random(f"{seed}/{benchmark}")
        chosen = rng.sample(group, min(per_benchmark, len(group)))
        shared_count = int(overlap * len(chosen) + 0.5) if len(annotators) > 1 else 0
        shared = set(rng.sample(range(len(chosen)), shared_count))
        for i, item in enumerate(chosen):
            if i in shared:
                assigned.append(Assigned(item, tuple(annotators), True))
            else:
                assigned.append(Assigned(item, (annotators[turn % len(annotators)],), False))
                turn += 1
    return assigned


def _copy_image(image: Path, images: Path, names: dict[Path, str]) -> str:
    """Copies ``image`` into ``images`` under a name made of its content's hash (the same
    file once however many items show it); returns its path inside the package."""
    if image not in names:
        digest = hashlib.sha256(image.read_bytes()).hexdigest()[:20]
        names[image] = f"{digest}{image.suffix.lower()}"
    target = images / names[image]
    if not target.exists():
        images.mkdir(exist_ok=True)
        shutil.copyfile(image, target)
    return f"{annotations.IMAGES}/{names[image]}"


def _package_item(item: SourceItem, images: Path, names: dict[Path, str]
                  ) -> annotations.PackageItem:
    image = item.image
    shown = _copy_image(image, images, names) if isinstance(image, Path) else image
    return annotations.PackageItem(item.key, item.benchmark, item.kind, item.id, item.field,
                                   item.source, item.text, item.references, shown)


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out={out} exists and is not an empty folder (a sample is never "
                         "written over: its answers would be lost)")


def summarize(items: Sequence[SourceItem], assigned: Sequence[Assigned],
              annotators: Sequence[str]) -> dict[str, Any]:
    """Per benchmark its kind and how many items there were, were drawn and are overlap
    items; per annotator how many items it has and how many of them are overlap items."""
    benchmarks: dict[str, dict[str, Any]] = {}
    for item in items:
        entry = benchmarks.setdefault(item.benchmark, {"kind": item.kind, "available": 0,
                                                       "sampled": 0, "overlap": 0})
        entry["available"] += 1
    for a in assigned:
        benchmarks[a.item.benchmark]["sampled"] += 1
        benchmarks[a.item.benchmark]["overlap"] += a.overlap
    packages = {name: {"items": sum(name in a.annotators for a in assigned),
                       "overlap": sum(a.overlap for a in assigned)} for name in annotators}
    return {"benchmarks": benchmarks, "packages": packages}


def write_sample(out: Path, items: Sequence[SourceItem], assigned: Sequence[Assigned],
                 annotators: Sequence[str], settings: dict[str, Any]) -> dict[str, Any]:
    """Writes the sample folder ``out`` (absent or empty) and returns its manifest;
    ``settings`` (seed, sizes, inputs) are recorded in the manifest as given."""
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        names: dict[Path, str] = {}
        for name in annotators:
            folder = building / name
            folder.mkdir()
            annotations.write_items(folder, [_package_item(a.item, folder / annotations.IMAGES,
                                                           names)
                                             for a in assigned if name in a.annotators])
        with open(building / ITEMS, "w", encoding="utf-8") as f:
            for a in assigned:
                f.write(json.dumps({"key": a.item.key, "benchmark": a.item.benchmark,
                                    "kind": a.item.kind, "annotators": list(a.annotators),
                                    "overlap": a.overlap, "where": a.item.where,
                                    "record": a.item.record}, ensure_ascii=False) + "\n")
        manifest = {"format": FORMAT,
                    "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    **settings, "annotators": list(annotators),
                    **summarize(items, assigned, annotators)}
        (building / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False)
                                         + "\n", encoding="utf-8")
        _check_out(out)
        if out.exists():
            out.rmdir()
        os.rename(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return manifest


def read_manifest(root: Path) -> dict[str, Any]:
    """``root``'s manifest; ValueError where ``root`` is not a sample folder."""
    path = root / MANIFEST
    if not path.is_file():
        raise ValueError(f"{root} is not a validation sample (no {MANIFEST}; make one with "
                         "`validate sample`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} manifest")
    return manifest


def read_sampled(root: Path) -> list[dict[str, Any]]:
    """Every drawn item of the sample ``root``, as `write_sample` recorded it."""
    path = root / ITEMS
    with open(path, encoding="utf-8") as f:
        try:
            return [json.loads(line) for line in f if line.strip()]
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
