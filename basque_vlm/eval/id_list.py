"""A fixed list of sample ids a task keeps, the same in every language: the paper's WildVision
pairs (``wildvision_ids.txt`` beside this module; README, "Evaluation data").

A list file holds one id a line; blank lines and lines starting with ``#`` are ignored. A list
with no ids keeps every sample. Rows whose id is not listed are skipped (the results count them
as ``skipped``); every listed id must be in the data (``MISSING_TOLERANCE``), or the two
languages would no longer be scored on the same items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from basque_vlm.eval.taskdata import TaskDataError

if TYPE_CHECKING:
    from basque_vlm.eval.tasks import Sample, Task

WILDVISION_IDS = Path(__file__).with_name("wildvision_ids.txt")
MISSING_TOLERANCE = 0  # listed ids the data may lack

Loader = Callable[["Task", Path], Iterator["Sample | None"]]


def read_ids(path: Path) -> frozenset[str]:
    """The ids listed in ``path`` (empty: none listed, keep everything)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise TaskDataError(f"{path}: cannot read the id list ({e.strerror or e})") from None
    return frozenset(s for s in (line.strip() for line in lines) if s and not s.startswith("#"))


def only_listed(load: Loader, path: Path) -> Loader:
    """``load``, keeping only the samples whose id ``path`` lists (all when it lists none)."""

    def listed(task: Task, folder: Path) -> Iterator[Sample | None]:
        ids = read_ids(path)
        if not ids:
            yield from load(task, folder)
            return
        found = set()
        for sample in load(task, folder):
            if sample is not None and sample.id in ids:
                found.add(sample.id)
                yield sample
            else:
                yield None
        missing = sorted(ids - found)
        if len(missing) > MISSING_TOLERANCE:
            raise TaskDataError(f"{folder}: {len(missing)} of the {len(ids)} ids listed in "
                                f"{path} are not in the data ({', '.join(missing[:3])}"
                                f"{', ...' if len(missing) > 3 else ''})")

    return listed
