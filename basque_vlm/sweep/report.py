"""The sweep's results side by side: every cell's results JSON (``evaluate``'s ``{task: {metric:
value, "n": count, ...}}``) gathered into the paper-style table — a row per backbone and Basque
share, a column per benchmark and language, the best cell of each column in bold — written as
Markdown and CSV, and plotted (score against the Basque share, per backbone and language)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from basque_vlm.eval.tasks import TASKS
from basque_vlm.sweep.plan import MANIFEST, RESULTS, parse_cell_name, percent, read_manifest

MISSING = "—"
DISPLAY = {"vqav2": "VQAv2", "aokvqa_mc": "A-OKVQA MC", "aokvqa_da": "A-OKVQA DA",
           "pixmo_capqa": "PixMo-CapQA", "wildvision": "WildVision", "demo_vqa": "Demo VQA"}
MARKDOWN, CSV, PLOT = "sweep.md", "sweep.csv", "sweep.png"


@dataclasses.dataclass(frozen=True)
class CellResult:
    name: str
    backbone: str
    ratio: float
    path: Path                                   # ROOT/<cell>/eval.json
    results: dict[str, dict[str, Any]] | None    # None: no results yet

    def score(self, task: str) -> float | None | str:
        """The task's main metric; None: not evaluated (or no results); "n/a": no value."""
        if self.results is None or task not in self.results:
            return None
        value = self.results[task].get(TASKS[task].metric)
        return "n/a" if value is None else float(value)


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    """A cell's results JSON, checked against evaluate's schema; bad files raise ValueError."""
    try:
        results = json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(results, dict) or not results:
        raise ValueError(f"{path}: not evaluation results ({{task: {{metric: value, ...}}}})")
    for task, result in results.items():
        if task not in TASKS:
            raise ValueError(f"{path}: unknown task {task!r}")
        if not isinstance(result, dict):
            raise ValueError(f"{path}: {task} is not a {{metric: value}} object")
        value = result.get(TASKS[task].metric)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise ValueError(f"{path}: {task}.{TASKS[task].metric} is not a number: {value!r}")
    return results


def grid_of(root: Path) -> list[tuple[str, str, float]]:
    """The cells under ``root``: its ``sweep.json``, else every ``<backbone>_eu<percent>``
    folder, completed to backbones × shares (so that a cell never started is listed too)."""
    recorded = read_manifest(str(root))
    if recorded is not None:
        return recorded
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder")
    found = [parsed for p in sorted(root.iterdir()) if p.is_dir()
             and (parsed := parse_cell_name(p.name)) is not None]
    if not found:
        raise ValueError(f"{root} holds no sweep: no {MANIFEST}, no <backbone>_eu<percent> "
                         "folders")
    backbones = sorted({b for b, _ in found})
    ratios = sorted({r for _, r in found})
    return [(f"{b}_eu{percent(r)}", b, r) for b in backbones for r in ratios]


def gather(root: Path, grid: Sequence[tuple[str, str, float]] | None = None) -> list[CellResult]:
    """Every cell of ``grid`` (default: ``grid_of(root)``) with its results, or None."""
    cells = []
    for name, backbone, ratio in grid if grid is not None else grid_of(root):
        path = root / name / RESULTS
        results = load_results(path) if path.is_file() else None
        cells.append(CellResult(name, backbone, ratio, path, results))
    if all(c.results is None for c in cells):
        raise ValueError(f"no cell under {root} has results yet ({len(cells)} cells, "
                         f"e.g. {cells[0].path if cells else root})")
    return cells


def columns_of(cells: Sequence[CellResult]) -> list[str]:
    """The tasks any cell was evaluated on, in the registry's order (each benchmark's Basque,
    then English, column)."""
    present = {t for c in cells if c.results for t in c.results}
    return [t for t in TASKS if t in present]


def header(task: str) -> str:
    family = TASKS[task].family
    return f"{DISPLAY.get(family, family)} {TASKS[task].lang}"


def _shown(score: float | None | str) -> str:
    if score is None:
        return MISSING
    return score if isinstance(score, str) else f"{100 * score:.1f}"


def sample_counts(cells: Sequence[CellResult], columns: Sequence[str]) -> str:
    """``task n`` per column; a range where cells were evaluated on different numbers."""
    parts = []
    for task in columns:
        ns = sorted({c.results[task].get("n") for c in cells
                     if c.results and task in c.results} - {None})
        if ns:
            parts.append(f"{task} {ns[0]}" if len(ns) == 1 else
                         f"{task} {ns[0]}–{ns[-1]} (differs between cells)")
    return ", ".join(parts)


def markdown(cells: Sequence[CellResult], root: Path) -> str:
    columns = columns_of(cells)
    shown = [[_shown(c.score(t)) for t in columns] for c in cells]
    best = []
    for j in range(len(columns)):
        numbers = [float(row[j]) for row in shown if row[j] not in (MISSING, "n/a")]
        best.append(max(numbers) if numbers else None)
    lines = ["| backbone | Basque % | " + " | ".join(header(t) for t in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for cell, row in zip(cells, shown):
        marked = [f"**{v}**" if best[j] is not None and v not in (MISSING, "n/a")
                  and float(v) == best[j] else v for j, v in enumerate(row)]
        lines.append(f"| {cell.backbone} | {percent(cell.ratio)} | " + " | ".join(marked) + " |")
    metrics = sorted({TASKS[t].metric for t in columns})
    lines += ["", f"Scores ×100 ({', '.join(metrics)}; each task's metric as `evaluate` reports "
              f"it); the best cell of each column in **bold**; {MISSING}: no result. "
              f"Samples per cell: {sample_counts(cells, columns)}."]
    missing = [c for c in cells if c.results is None]
    if missing:
        lines += ["", f"Missing ({len(missing)} of {len(cells)} cells have no results yet): "
                  + ", ".join(f"`{c.name}`" for c in missing) + "."]
    return f"# Basque-share sweep: {root}\n\n" + "\n".join(lines) + "\n"


def write_csv(path: Path, cells: Sequence[CellResult]) -> None:
    """One row per cell: backbone, basque_ratio, cell, status (ok | missing), then per task its
    metric (a fraction, empty where there is none) and sample count."""
    columns = columns_of(cells)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["backbone", "basque_ratio", "cell", "status"] + [
            name for t in columns for name in (f"{t}.{TASKS[t].metric}", f"{t}.n")])
        for cell in cells:
            row: list[Any] = [cell.backbone, cell.ratio, cell.name,
                              "missing" if cell.results is None else "ok"]
            for task in columns:
                score = cell.score(task)
                n = cell.results[task].get("n") if cell.results and task in cell.results else None
                row += [score if isinstance(score, float) else "", "" if n is None else n]
            writer.writerow(row)


def plot(path: Path, cells: Sequence[CellResult], title: str) -> None:
    """A panel per benchmark: score against the Basque share, a colour per backbone, solid
    Basque and dashed English lines (cells without a score are left out)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("the plot needs matplotlib (pip install matplotlib==3.11.2)") from None

    columns = columns_of(cells)
    families = list(dict.fromkeys(TASKS[t].family for t in columns))
    backbones = list(dict.fromkeys(c.backbone for c in cells))
    ratios = sorted({c.ratio for c in cells})
    ncols = min(3, len(families))
    nrows = -(-len(families) // ncols)
    fig = Figure(figsize=(max(6.0, 4.6 * ncols), 3.6 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colours = [f"C{i % 10}" for i in range(len(backbones))]
    for ax, family in zip(axes, families):
        metric = None
        for backbone, colour in zip(backbones, colours):
            for task in (t for t in columns if TASKS[t].family == family):
                metric = TASKS[task].metric
                points = [(100 * c.ratio, 100 * s) for c in cells if c.backbone == backbone
                          and isinstance(s := c.score(task), float)]
                if not points:
                    continue
                eu = TASKS[task].lang == "eu"
                ax.plot(*zip(*points), color=colour, linestyle="-" if eu else "--",
                        marker="o" if eu else "s", label=f"{backbone} · {TASKS[task].lang}")
        ax.set_title(f"{DISPLAY.get(family, family)} ({metric})")
        ax.set_xlabel("Basque share of the multimodal data (%)")
        ax.set_ylabel("score (%)")
        ax.set_xticks([100 * r for r in ratios])
        ax.set_xlim(-5, 105)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
    for ax in axes[len(families):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize="medium")
    fig.savefig(path, dpi=110)


def write(root: Path, out: Path, grid: Sequence[tuple[str, str, float]] | None = None
          ) -> tuple[str, list[CellResult]]:
    """Gathers the cells under ``root`` and writes ``out``/sweep.md, sweep.csv, sweep.png;
    returns the Markdown and the cells."""
    cells = gather(root, grid)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(cells, root) + f"\n![score against the Basque share]({PLOT})\n"
    (out / MARKDOWN).write_text(text)
    write_csv(out / CSV, cells)
    plot(out / PLOT, cells, f"{root.name}: score against the Basque share")
    return text, cells
