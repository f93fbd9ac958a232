"""The validation report of a sample (`sampling`) and its annotators' answers: acceptance
per benchmark and per annotator with 95% Wilson intervals, agreement on the items everyone
saw (observed agreement, Fleiss' kappa, Krippendorff's alpha), and the items with the
corrections written back (`corrections`). Written as ``report.md``, ``report.json``,
``acceptance.png`` and ``corrected.jsonl``.

Acceptance counts judgements: an overlap item judged by four annotators counts four times.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from basque_vlm.datagen import agreement, corrections, sampling
from basque_vlm.datagen.annotations import Answer, Package

MARKDOWN, JSON, PLOT, CORRECTED = "report.md", "report.json", "acceptance.png", "corrected.jsonl"
ALL = "all"


@dataclasses.dataclass(frozen=True)
class Judged:
    """A drawn item with the latest answers of the annotators who saw it, by annotator."""

    key: str
    benchmark: str
    kind: str
    annotators: tuple[str, ...]
    overlap: bool
    record: dict[str, Any]
    answers: dict[str, Answer]


def gather(root: Path) -> tuple[dict[str, Any], list[Judged]]:
    """The sample's manifest and every drawn item with its answers."""
    manifest = sampling.read_manifest(root)
    answers = {name: Package.load(root, name).answers() for name in manifest["annotators"]}
    judged = []
    for s in sampling.read_sampled(root):
        judged.append(Judged(s["key"], s["benchmark"], s["kind"], tuple(s["annotators"]),
                             s["overlap"], s["record"],
                             {n: answers[n][s["key"]] for n in s["annotators"]
                              if s["key"] in answers[n]}))
    if not any(j.answers for j in judged):
        raise ValueError(f"no answers under {root} yet (each annotator's answers are in "
                         f"{root}/<annotator>/answers.jsonl)")
    return manifest, judged


def acceptance(judged: Sequence[Judged], annotator: str | None = None) -> dict[str, Any]:
    """Judgements, accepted, rate and its 95% Wilson interval (None without judgements),
    and how many assigned judgements are still missing; of one annotator, or of all."""
    given = [a for j in judged for n, a in j.answers.items() if annotator in (None, n)]
    assigned = sum(len(j.annotators) if annotator is None else annotator in j.annotators
                   for j in judged)
    accepted = sum(a.verdict == "accept" for a in given)
    interval = agreement.wilson_interval(accepted, len(given))
    return {"items": len({j.key for j in judged if annotator in (None, *j.annotators)}),
            "judgements": len(given), "accepted": accepted,
            "rate": accepted / len(given) if given else None,
            "wilson_95": list(interval) if interval else None,
            "unanswered": assigned - len(given)}


def agreement_of(judged: Sequence[Judged], annotators: Sequence[str]) -> dict[str, Any]:
    """Agreement on the overlap items among ``judged``: Krippendorff's alpha over all of
    them (missing judgements allowed), Fleiss' kappa over those every annotator judged."""
    rows = [[j.answers[n].verdict if n in j.answers else None for n in annotators]
            for j in judged if j.overlap]
    complete = [row for row in rows if None not in row]
    return {"items": len(rows), "complete": len(complete),
            "observed_agreement": agreement.observed_agreement(rows),
            "fleiss_kappa": agreement.fleiss_kappa(complete),
            "krippendorff_alpha": agreement.krippendorff_alpha(rows)}


def by_benchmark(judged: Sequence[Judged]) -> dict[str, list[Judged]]:
    groups: dict[str, list[Judged]] = {}
    for j in judged:
        groups.setdefault(j.benchmark, []).append(j)
    return groups


def statistics(manifest: dict[str, Any], judged: Sequence[Judged]) -> dict[str, Any]:
    """Everything ``report.json`` holds but the corrections."""
    names = manifest["annotators"]
    groups = by_benchmark(judged)
    return {
        "annotators": names,
        "acceptance": {"by_benchmark": {b: {"kind": g[0].kind, **acceptance(g)}
                                        for b, g in groups.items()},
                       "by_annotator": {n: acceptance(judged, n) for n in names},
                       ALL: acceptance(judged)},
        "agreement": {"by_benchmark": {b: agreement_of(g, names) for b, g in groups.items()},
                      ALL: agreement_of(judged, names)}}


def write_corrected(path: Path, judged: Sequence[Judged]) -> dict[str, Any]:
    """Writes every drawn item's record with its corrections (`corrections`) to ``path``;
    returns how many were corrected and which were ties."""
    counts = {corrections.CORRECTED: 0, corrections.TIE: []}
    with open(path, "w", encoding="utf-8") as f:
        for j in judged:
            record, resolution = corrections.corrected_record(j.kind, j.key, j.record,
                                                              j.answers)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            if resolution.status == corrections.CORRECTED:
                counts[corrections.CORRECTED] += 1
            elif resolution.status == corrections.TIE:
                counts[corrections.TIE].append(j.key)
    return {"file": path.name, "corrected": counts[corrections.CORRECTED],
            "ties": counts[corrections.TIE]}


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _interval(stats: dict[str, Any]) -> str:
    interval = stats["wilson_95"]
    return "n/a" if interval is None else f"{100 * interval[0]:.1f}–{100 * interval[1]:.1f}%"


def markdown(root: Path, manifest: dict[str, Any], report: dict[str, Any]) -> str:
    names = report["annotators"]
    rate = report["acceptance"]
    agree = report["agreement"]
    lines = [f"# Human validation: {root}", "",
             f"Annotators: {', '.join(names)}. Up to {manifest['per_benchmark']} items drawn "
             f"per benchmark (seed {manifest['seed']}); a share {manifest['overlap']} of "
             "them is judged by every annotator, for the agreement statistics.", "",
             "## Acceptance per benchmark", "",
             "| benchmark | kind | items | judgements | accepted | acceptance | 95% CI (Wilson) "
             "| unanswered |", "|---|---|---:|---:|---:|---:|---|---:|"]
    rows = [*rate["by_benchmark"].items(), (f"**{ALL}**", {"kind": "", **rate[ALL]})]
    for name, s in rows:
        lines.append(f"| {name} | {s['kind']} | {s['items']} | {s['judgements']} | "
                     f"{s['accepted']} | {_percent(s['rate'])} | {_interval(s)} | "
                     f"{s['unanswered']} |")
    lines += ["", "A judgement is one annotator's verdict on one item: an item everyone saw "
              "counts once per annotator.", "", "## Acceptance per annotator", "",
              "| annotator | items | judgements | accepted | acceptance | 95% CI (Wilson) "
              "| unanswered |", "|---|---:|---:|---:|---:|---|---:|"]
    for name, s in rate["by_annotator"].items():
        lines.append(f"| {name} | {s['items']} | {s['judgements']} | {s['accepted']} | "
                     f"{_percent(s['rate'])} | {_interval(s)} | {s['unanswered']} |")
    lines += ["", "## Agreement on the items every annotator saw", "",
              f"| benchmark | items | judged by all {len(names)} | observed agreement "
              "| Fleiss' κ | Krippendorff's α |", "|---|---:|---:|---:|---:|---:|"]
    for name, a in [*agree["by_benchmark"].items(), (f"**{ALL}**", agree[ALL])]:
        lines.append(f"| {name} | {a['items']} | {a['complete']} | "
                     f"{_percent(a['observed_agreement'])} | {_number(a['fleiss_kappa'])} | "
                     f"{_number(a['krippendorff_alpha'])} |")
    fixed = report["corrections"]
    lines += ["", "Observed agreement: the share of agreeing pairs of verdicts on an item. "
              "Fleiss' κ over the items judged by every annotator; Krippendorff's α "
              "(nominal) over all of them, missing verdicts allowed. n/a: undefined (one "
              "verdict throughout, or no item judged twice).", "", "## Corrections", "",
              f"{fixed['corrected']} items corrected in `{fixed['file']}` (every drawn item, "
              "its text replaced where the annotators' corrections carry it). Rule: each "
              "annotator who answered votes for their correction, or for the original where "
              "they gave none; the text with the most votes is kept; a tie keeps the "
              "original."]
    if fixed["ties"]:
        lines += ["", "Ties, left unchanged for a person to settle: "
                  + ", ".join(f"`{k}`" for k in fixed["ties"]) + "."]
    return "\n".join(lines) + f"\n\n![acceptance per benchmark]({PLOT})\n"


def plot(path: Path, report: dict[str, Any], title: str) -> None:
    """Bars of acceptance per benchmark (and all together), with their Wilson intervals and
    the number of judgements."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [(b, s) for b, s in report["acceptance"]["by_benchmark"].items()
            if s["rate"] is not None] + [(ALL, report["acceptance"][ALL])]
    fig = Figure(figsize=(max(4.5, 1.2 * len(rows) + 2), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    rates = [100 * s["rate"] for _, s in rows]
    errors = [[r - 100 * s["wilson_95"][0] for r, (_, s) in zip(rates, rows)],
              [100 * s["wilson_95"][1] - r for r, (_, s) in zip(rates, rows)]]
    colours = ["C0"] * (len(rows) - 1) + ["C7"]
    ax.bar(range(len(rows)), rates, yerr=errors, capsize=5, color=colours)
    for x, (rate, (_, s)) in enumerate(zip(rates, rows)):  # above the interval's cap
        ax.text(x, 100 * s["wilson_95"][1] + 1.5, f"{rate:.1f}%", ha="center", va="bottom",
                fontsize="small")
    ax.set_xticks(range(len(rows)), [f"{b}\n(n={s['judgements']})" for b, s in rows],
                  rotation=20, ha="right")
    ax.set_ylabel("accepted (%), 95% Wilson interval")
    ax.set_ylim(0, 108)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize="medium")
    fig.savefig(path, dpi=110)


def write(root: Path, out: Path) -> tuple[str, dict[str, Any]]:
    """Writes ``out``/report.md, report.json, acceptance.png and corrected.jsonl; returns
    the Markdown and the report."""
    manifest, judged = gather(root)
    out.mkdir(parents=True, exist_ok=True)
    report = {"sample": str(root), **statistics(manifest, judged),
              "corrections": write_corrected(out / CORRECTED, judged)}
    text = markdown(root, manifest, report)
    (out / MARKDOWN).write_text(text, encoding="utf-8")
    (out / JSON).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n",
                            encoding="utf-8")
    plot(out / PLOT, report, f"{root.name}: acceptance per benchmark")
    return text, report
