"""The Basque-ratio sweep as runs: one cell per (backbone, ratio), its workdir, its results JSON,
and the ``train`` / ``evaluate`` commands that produce them; run one after another here
(resumable), or printed for a shell or for ``launch/run.sh`` on a TPU VM.

A cell is named ``<backbone>_eu<percent>`` (``llama31_8b_eu20`` for ``basque_ratio=0.2``); its
workdir is ``ROOT/<cell>`` and its results ``ROOT/<cell>/eval.json``. ``ROOT/sweep.json`` records
the grid (the report uses it to list the cells that have no results yet).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[2]  # a source checkout: configs/ beside the package
MANIFEST = "sweep.json"
RESULTS = "eval.json"
CELL_NAME = re.compile(r"^(?P<backbone>.+)_eu(?P<percent>\d+(?:\.\d+)?)$")
LAUNCHES = ("print", "local", "tpu")


@dataclasses.dataclass(frozen=True)
class Cell:
    backbone: str
    ratio: float
    config: str            # the train --config value (path[:arg])
    workdir: str           # ROOT/<name>, as the user wrote ROOT
    train: tuple[str, ...]     # argv after ``python``
    evaluate: tuple[str, ...]

    @property
    def name(self) -> str:
        return cell_name(self.backbone, self.ratio)

    @property
    def results(self) -> str:
        return f"{self.workdir}/{RESULTS}"


def percent(ratio: float) -> str:
    """0.2 → "20", 0.125 → "12.5"."""
    return format(round(100 * ratio, 6), "g")


def cell_name(backbone: str, ratio: float) -> str:
    return f"{backbone}_eu{percent(ratio)}"


def parse_cell_name(name: str) -> tuple[str, float] | None:
    match = CELL_NAME.match(name)
    if match is None:
        return None
    return match["backbone"], float(match["percent"]) / 100


def _split(items: Any) -> list[str]:
    """A tuple of names, each possibly comma-separated (``--sweep.backbones=a,b`` arrives as
    one string), or one string."""
    items = (items,) if isinstance(items, str) else tuple(items)
    return [name.strip() for item in items for name in str(item).split(",") if name.strip()]


def ratios_of(sweep: Any) -> list[float]:
    raw = sweep.ratios
    raw = _split(raw) if isinstance(raw, str) else (
        list(raw) if isinstance(raw, (tuple, list)) else [raw])
    ratios = []
    for value in raw:
        try:
            ratio = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"sweep.ratios: {value!r} is not a number") from None
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"sweep.ratios: {ratio} is not a Basque share between 0 and 1")
        ratios.append(ratio)
    names = [percent(r) for r in ratios]
    if not ratios or len(set(names)) != len(names):
        raise ValueError(f"sweep.ratios must be distinct shares, got {raw}")
    return sorted(ratios)


def _resolve_config(path_arg: str) -> str:
    """``configs/X.py[:arg]`` as given when it exists from here, else from the repository."""
    path, sep, arg = path_arg.partition(":")
    if Path(path).is_file():
        return path_arg
    if not Path(path).is_absolute() and (REPO / path).is_file():
        return f"{REPO / path}{sep}{arg}"
    raise ValueError(f"backbone config {path} not found")


def backbones_of(sweep: Any) -> list[tuple[str, str]]:
    """``(name, config)`` per backbone: a name from ``sweep.configs``, or a config path."""
    known = dict(sweep.configs)
    backbones = []
    for item in _split(sweep.backbones):
        if item in known:
            backbones.append((item, _resolve_config(known[item])))
        elif item.partition(":")[0].endswith(".py"):
            backbones.append((Path(item.partition(":")[0]).stem, _resolve_config(item)))
        else:
            raise ValueError(f"unknown backbone {item!r}: one of {', '.join(known)} or a config "
                             "path (configs/X.py[:arg])")
    names = [name for name, _ in backbones]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"sweep.backbones must be distinct, got {names}")
    for name in names:
        if parse_cell_name(f"{name}_eu0") != (name, 0.0) or "/" in name:
            raise ValueError(f"backbone name {name!r} cannot name a cell folder")
    return backbones


def split_args(text: str, what: str) -> list[str]:
    """Command-line words of ``text`` (shell quoting)."""
    try:
        return shlex.split(text or "")
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None


def grid(sweep: Any, root: str) -> list[Cell]:
    """The cells of ``sweep`` (an ml_collections config, configs/sweep_ratio.py) under
    ``root``: backbones × ratios, in that order."""
    from basque_vlm.eval import tasks as task_registry

    tasks = ",".join(t.name for t in task_registry.get(str(sweep.tasks)))
    train_args = split_args(sweep.train_args, "sweep.train_args")
    if any(a.startswith("--config.data.basque_ratio") for a in train_args):
        raise ValueError("sweep.train_args sets data.basque_ratio, which each cell sets: "
                         "choose the shares with sweep.ratios")
    eval_args = split_args(sweep.eval_args, "sweep.eval_args")
    root = root.rstrip("/") or "/"
    cells = []
    for backbone, config in backbones_of(sweep):
        for ratio in ratios_of(sweep):
            workdir = f"{root}/{cell_name(backbone, ratio)}"
            train = ("-m", "basque_vlm.train", f"--config={config}", f"--workdir={workdir}",
                     f"--config.data.basque_ratio={ratio!r}", *train_args)
            evaluate = ("-m", "basque_vlm.evaluate", f"--checkpoint={workdir}",
                        f"--tasks={tasks}", f"--out={workdir}/{RESULTS}", *eval_args)
            cells.append(Cell(backbone, ratio, config, workdir, train, evaluate))
    return cells


def env_of(sweep: Any, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The sweep's environment variables that the user has not set."""
    return {k: str(v) for k, v in dict(sweep.get("env") or {}).items() if k not in environ}


def command(argv: Sequence[str], env: Mapping[str, str], python: str = "python") -> str:
    """One shell line: ``K=V python -m ...``."""
    return shlex.join([f"{k}={v}" for k, v in env.items()] + [python, *argv])


def tpu_line(run_name: str, argv: Sequence[str], env: Mapping[str, str],
             launch_args: Sequence[str] = ()) -> str:
    """A ``launch/run.sh`` call that runs the command on every worker of the TPU VM (the TPU:
    ``launch_args`` such as ``--name=TPU --zone=Z --project=P``, or $BVLM_TPU,
    $CLOUDSDK_COMPUTE_ZONE, $CLOUDSDK_CORE_PROJECT) and waits until it has ended everywhere
    (it fails unless it exited 0 on every worker)."""
    words = ["launch/run.sh", *launch_args, f"--run_name={run_name}", "--wait",
             *(f"--env={k}={v}" for k, v in env.items()), "--", "python", *argv]
    return shlex.join(words)


def results_ok(path: Path) -> bool:
    """The cell is done: its results JSON is there and reads as an object."""
    try:
        return isinstance(json.loads(path.read_text()), dict)
    except (OSError, ValueError):
        return False


def write_manifest(root: str, sweep: Any, cells: Sequence[Cell]) -> Path:
    path = Path(root) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = {
        "sweep": json.loads(sweep.to_json()),
        "cells": [{"name": c.name, "backbone": c.backbone, "basque_ratio": c.ratio,
                   "config": c.config, "workdir": c.workdir, "results": c.results,
                   "train": command(c.train, {}), "evaluate": command(c.evaluate, {})}
                  for c in cells]}
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def read_manifest(root: str) -> list[tuple[str, str, float]] | None:
    """``(name, backbone, ratio)`` of the cells recorded under ``root``, None without one."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        cells = json.loads(path.read_text())["cells"]
        return [(str(c["name"]), str(c["backbone"]), float(c["basque_ratio"])) for c in cells]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a sweep manifest ({type(e).__name__}: {e})") from None


def print_plan(cells: Sequence[Cell], env: Mapping[str, str], launch: str, root: str,
               launch_args: Sequence[str] = (), out: TextIO = sys.stdout) -> None:
    """The commands as a shell script (``set -e``: a failing command stops it; notes start with
    ``#``): for each cell its ``train`` then its ``evaluate`` command, or (``launch="tpu"``)
    their ``launch/run.sh`` lines (run names ``CELL`` and ``CELL-eval``)."""
    backbones = list(dict.fromkeys(c.backbone for c in cells))
    ratios = list(dict.fromkeys(percent(c.ratio) for c in cells))
    print(f"# {len(cells)} cells: {', '.join(backbones)} × Basque share "
          f"{', '.join(ratios)} %; results: {root}/<cell>/{RESULTS}", file=out)
    print("set -e", file=out)
    for cell in cells:
        done = launch != "tpu" and results_ok(Path(cell.results))
        print(f"# {cell.name}" + (" (has results)" if done else ""), file=out)
        for suffix, argv in (("", cell.train), ("-eval", cell.evaluate)):
            print(tpu_line(cell.name + suffix, argv, env, launch_args) if launch == "tpu"
                  else command(argv, env), file=out)
    out.flush()


class CellFailed(RuntimeError):
    """A command of a cell exited with an error."""


def _last_line(path: Path, width: int = 200) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    line = " ".join(lines[-1].split()) if lines else ""
    return line if len(line) <= width else line[:width - 3] + "..."


def _scores(path: Path) -> str:
    """``task metric value, ...`` of a results JSON (the evaluation's summary line)."""
    from basque_vlm.eval.tasks import TASKS

    results = json.loads(path.read_text())
    parts = []
    for name, result in results.items():
        metric = TASKS[name].metric if name in TASKS else "accuracy"
        value = result.get(metric) if isinstance(result, dict) else None
        parts.append(f"{name} {metric} " + ("n/a" if not isinstance(value, (int, float))
                                              else f"{value:.3f}"))
    return ", ".join(parts)


def run_local(cells: Sequence[Cell], env: Mapping[str, str], out: TextIO = sys.stdout) -> float:
    """Trains and evaluates each cell in turn, here; a cell whose results JSON reads is skipped
    (a cell stopped halfway resumes: train picks up its latest checkpoint). Each command's
    output goes to ``<workdir>/train.log`` / ``eval.log``; a failing command stops the sweep
    with its log's last line. Returns the seconds taken."""
    started = time.monotonic()
    for i, cell in enumerate(cells, 1):
        if results_ok(Path(cell.results)):
            print(f"# [{i}/{len(cells)}] {cell.name}: done ({cell.results}), skipped", file=out,
                  flush=True)
            continue
        Path(cell.workdir).mkdir(parents=True, exist_ok=True)
        for step, argv in (("train", cell.train), ("eval", cell.evaluate)):
            log = Path(cell.workdir) / f"{step}.log"
            print(f"# [{i}/{len(cells)}] {cell.name}: {step} (log: {log})", file=out)
            print(command(argv, env), file=out, flush=True)
            t0 = time.monotonic()
            with open(log, "a") as f:  # a resumed cell adds to its logs
                try:
                    code = subprocess.call([sys.executable, *argv], stdout=f,
                                           stderr=subprocess.STDOUT, env={**os.environ, **env})
                except KeyboardInterrupt:
                    raise CellFailed(f"{cell.name}: {step} interrupted; run the same command "
                                     "again to resume") from None
            if code != 0:
                raise CellFailed(f"{cell.name}: {step} exited with status {code}; {log}: "
                                 f"{_last_line(log)}")
            summary = _scores(Path(cell.results)) if step == "eval" else _last_line(log)
            print(f"#   {time.monotonic() - t0:.0f} s: {summary}", file=out, flush=True)
    return time.monotonic() - started
