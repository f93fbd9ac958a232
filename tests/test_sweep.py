"""The Basque-share sweep (`python -m basque_vlm.sweep`, configs/sweep_ratio.py): the planned
commands for the paper's grid and for overrides; the report (table with the best cells in bold,
CSV, PNG) from results JSONs written by evaluate's own code; missing cells and a corrupt JSON;
and one real cell trained, evaluated and reported from one command."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import run_cli
from PIL import Image
from train_helpers import TINY

from basque_vlm.eval import judge, report, runner, tasks
from basque_vlm.sweep import plan

PAPER_TASKS = ("vqav2_eu,vqav2_en,aokvqa_mc_eu,aokvqa_mc_en,aokvqa_da_en,pixmo_capqa_eu,"
               "pixmo_capqa_en")
RATIOS = ("0.0", "0.1", "0.2", "0.3", "0.5", "0.75", "1.0")
PERCENTS = ("0", "10", "20", "30", "50", "75", "100")


def commands(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line and not line.startswith("#")]


def test_plan_prints_the_paper_grid(tmp_path):
    root = tmp_path / "sweep"
    result = run_cli.run("sweep", "plan", "--sweep=configs/sweep_ratio.py", f"--root={root}")
    run_cli.assert_ok(result)
    expected = []
    for backbone in ("llama31_8b", "latxa31_8b"):
        for ratio, pct in zip(RATIOS, PERCENTS):
            workdir = f"{root}/{backbone}_eu{pct}"
            expected += [
                f"python -m basque_vlm.train --config=configs/{backbone}.py:instruct "
                f"--workdir={workdir} --config.data.basque_ratio={ratio}",
                f"python -m basque_vlm.evaluate --checkpoint={workdir} --tasks={PAPER_TASKS} "
                f"--out={workdir}/eval.json"]
    assert commands(result.stdout) == ["set -e", *expected]
    assert result.stdout.startswith("# 14 cells: llama31_8b, latxa31_8b × Basque share "
                                    "0, 10, 20, 30, 50, 75, 100 %")
    manifest = json.loads((root / "sweep.json").read_text())
    assert [(c["backbone"], c["basque_ratio"]) for c in manifest["cells"]] == [
        (b, float(r)) for b in ("llama31_8b", "latxa31_8b") for r in RATIOS]
    assert manifest["cells"][2]["train"] == expected[4]
    assert not any(p.is_dir() for p in root.iterdir())  # printing runs nothing


def test_plan_overrides_tpu_lines_and_bad_input(tmp_path):
    root = tmp_path / "s"
    good, *bad = run_cli.run_all("sweep", [
        ["plan", "--sweep=configs/sweep_ratio.py", f"--root={root}", "--launch=tpu",
         "--launch_args=--name=v5p --zone=us-east5-a", "--sweep.ratios=0,0.5,1",
         "--sweep.backbones=latxa31_8b",
         "--sweep.train_args=--config.train.num_steps=10 --config.mesh.fsdp=8",
         "--sweep.tasks=vqav2_eu,wildvision_eu",
         "--sweep.eval_args=--limit=50 --judge_url=http://judge:8000/v1 --judge_model=j"],
        ["plan", "--sweep=configs/sweep_ratio.py", f"--root={root}", "--sweep.backbones=gpt"],
        ["plan", "--sweep=configs/sweep_ratio.py", f"--root={root}", "--sweep.ratios=0,1.5"],
        ["plan", "--sweep=configs/sweep_ratio.py", f"--root={root}", "--sweep.tasks=vqa_xx"],
        ["plan", f"--root={root}"],
        ["bake", "--sweep=configs/sweep_ratio.py", f"--root={root}"],
        ["report", f"--root={tmp_path / 'nothing'}"],
        ["plan", "--sweep=configs/sweep_ratio.py", "--root=gs://bucket/sweep"],
        ["plan", "--sweep=configs/sweep_ratio.py", f"--root={root}",
         "--sweep.train_args=--config.data.basque_ratio=0.3"],
    ])
    run_cli.assert_ok(good)
    assert not root.exists()  # the TPU workers' folder: nothing written here
    set_e, *lines = commands(good.stdout)
    assert set_e == "set -e" and len(lines) == 6
    workdir = f"{root}/latxa31_8b_eu50"
    run_sh = "launch/run.sh --name=v5p --zone=us-east5-a --run_name=latxa31_8b_eu50"
    assert lines[2] == (
        f"{run_sh} --wait -- python -m basque_vlm.train "
        f"--config=configs/latxa31_8b.py:instruct --workdir={workdir} "
        f"--config.data.basque_ratio=0.5 --config.train.num_steps=10 --config.mesh.fsdp=8")
    assert lines[3] == (
        f"{run_sh}-eval --wait -- python -m basque_vlm.evaluate "
        f"--checkpoint={workdir} --tasks=vqav2_eu,wildvision_eu --out={workdir}/eval.json "
        f"--limit=50 --judge_url=http://judge:8000/v1 --judge_model=j")
    assert [line.split()[3] for line in lines] == [
        f"--run_name=latxa31_8b_eu{p}{s}" for p in ("0", "50", "100") for s in ("", "-eval")]
    for result, needle in zip(bad, ["unknown backbone 'gpt'", "1.5 is not a Basque share",
                                    "unknown task(s) ['vqa_xx']", "--sweep is required",
                                    "expected one command", "no such folder",
                                    "--root must be a folder",
                                    "sweep.train_args sets data.basque_ratio"]):
        run_cli.assert_one_line_error(result, "sweep", needle)


def test_demo_variant_and_its_environment(monkeypatch):
    """The demo sweep's XLA_FLAGS (two CPU devices) is used only where the user set none."""
    monkeypatch.chdir(plan.REPO)
    spec = importlib.util.spec_from_file_location("sweep_ratio",
                                                  plan.REPO / "configs" / "sweep_ratio.py")
    sweep_ratio = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep_ratio)

    demo = sweep_ratio.get_config("demo")
    cells = plan.grid(demo, "workdir/sweep_demo")
    assert [c.name for c in cells] == ["demo_eu0", "demo_eu20", "demo_eu100"]
    assert cells[1].train == (
        "-m", "basque_vlm.train", "--config=configs/demo.py", "--workdir=workdir/sweep_demo/"
        "demo_eu20", "--config.data.basque_ratio=0.2", "--config.train.num_steps=750",
        "--config.train.log_every=50", "--config.train.checkpoint_every=750")
    env = plan.env_of(demo, environ={})
    assert plan.command(cells[0].evaluate, env).startswith(
        "XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m basque_vlm.evaluate ")
    assert plan.env_of(demo, environ={"XLA_FLAGS": "--mine"}) == {}
    with pytest.raises(ValueError, match="variant must be paper or demo"):
        sweep_ratio.get_config("huge")


# -- the report, on results JSONs written by evaluate's code (runner.summarize,
# judge.summarize, report.write_results) -------------------------------------------------------

# (backbone, percent) → accuracy per task, in hundredths (out of 100 samples)
SCORES = {
    ("llama31_8b", "0"): dict(vqav2_eu=31, vqav2_en=70, aokvqa_mc_eu=40, aokvqa_mc_en=80),
    ("llama31_8b", "20"): dict(vqav2_eu=55, vqav2_en=71, aokvqa_mc_eu=60, aokvqa_mc_en=79),
    ("llama31_8b", "100"): dict(vqav2_eu=56, vqav2_en=60, aokvqa_mc_eu=60, aokvqa_mc_en=75),
    ("latxa31_8b", "0"): dict(vqav2_eu=40, vqav2_en=69, aokvqa_mc_eu=50, aokvqa_mc_en=78),
    ("latxa31_8b", "20"): dict(vqav2_eu=57, vqav2_en=70, aokvqa_mc_eu=61, aokvqa_mc_en=77),
}  # latxa31_8b_eu100: missing


def results_json(scores: dict[str, int], wildvision_win: int) -> dict:
    results = {}
    for name, hits in scores.items():
        records = [{"score": float(i < hits)} for i in range(100)]
        results[name] = runner.summarize(tasks.TASKS[name], records, 0, tasks.TASKS[name].lang)
    # WildVision: English judged (wins/100), Basque not judged (no win rate: "n/a")
    judged = [{"score": 1.0 if i < wildvision_win else -1.0, "verdicts": [2, 2]}
              for i in range(100)]
    for lang, extra in (("en", judge.summarize(judged)), ("eu", {})):
        task = tasks.TASKS[f"wildvision_{lang}"]
        results[task.name] = {**runner.summarize(task, judged, 0, lang), "judge": None, **extra}
    return results


@pytest.fixture
def sweep_root(tmp_path):
    root = tmp_path / "sweep"
    run_cli.assert_ok(run_cli.run(
        "sweep", "plan", "--sweep=configs/sweep_ratio.py", f"--root={root}",
        "--sweep.ratios=0,0.2,1"))
    for i, ((backbone, pct), scores) in enumerate(SCORES.items()):
        (root / f"{backbone}_eu{pct}").mkdir()
        report.write_results(root / f"{backbone}_eu{pct}" / "eval.json",
                             results_json(scores, wildvision_win=30 + i))
    return root


TABLE = """\
| backbone | Basque % | VQAv2 eu | VQAv2 en | A-OKVQA MC eu | A-OKVQA MC en | WildVision eu | WildVision en |
|---|---:|---:|---:|---:|---:|---:|---:|
| llama31_8b | 0 | 31.0 | 70.0 | 40.0 | **80.0** | n/a | 30.0 |
| llama31_8b | 20 | 55.0 | **71.0** | 60.0 | 79.0 | n/a | 31.0 |
| llama31_8b | 100 | 56.0 | 60.0 | 60.0 | 75.0 | n/a | 32.0 |
| latxa31_8b | 0 | 40.0 | 69.0 | 50.0 | 78.0 | n/a | 33.0 |
| latxa31_8b | 20 | **57.0** | 70.0 | **61.0** | 77.0 | n/a | **34.0** |
| latxa31_8b | 100 | — | — | — | — | — | — |
"""


def test_report_table_csv_png_and_missing_cells(sweep_root, tmp_path):
    no_manifest = tmp_path / "copy"
    (sweep_root / "sweep.json").rename(tmp_path / "sweep.json")
    for cell in sweep_root.iterdir():
        (no_manifest / cell.name).mkdir(parents=True)
        (no_manifest / cell.name / "eval.json").write_bytes((cell / "eval.json").read_bytes())
    (tmp_path / "sweep.json").rename(sweep_root / "sweep.json")
    out = tmp_path / "report"
    with_manifest, scanned, from_config = run_cli.run_all("sweep", [
        ["report", f"--root={sweep_root}", f"--out={out}"], ["report", f"--root={no_manifest}"],
        ["report", f"--root={no_manifest}", f"--out={tmp_path / 'r3'}",
         "--sweep=configs/sweep_ratio.py", "--sweep.ratios=0,0.2,1"]])
    head, rows = TABLE.splitlines(True)[:2], TABLE.splitlines(True)[2:]
    # without sweep.json: the cells found by folder name, backbones in alphabetical order;
    # or the grid of --sweep
    for result, table in ((with_manifest, TABLE), (scanned, "".join(head + rows[3:] + rows[:3])),
                          (from_config, TABLE)):
        run_cli.assert_ok(result)
        assert table in result.stdout
        assert "Missing (1 of 6 cells have no results yet): `latxa31_8b_eu100`." in result.stdout
        assert result.stdout.rstrip().endswith("; missing cells: latxa31_8b_eu100")
    assert "Samples per cell: vqav2_eu 100, vqav2_en 100," in with_manifest.stdout

    markdown = (out / "sweep.md").read_text()
    assert TABLE in markdown and "![score against the Basque share](sweep.png)" in markdown
    with open(out / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["cell"], r["status"]) for r in rows] == [
        (f"{b}_eu{p}", "missing" if (b, p) == ("latxa31_8b", "100") else "ok")
        for b in ("llama31_8b", "latxa31_8b") for p in ("0", "20", "100")]
    assert rows[1]["basque_ratio"] == "0.2" and rows[1]["backbone"] == "llama31_8b"
    assert float(rows[1]["vqav2_eu.accuracy"]) == 0.55 and rows[1]["vqav2_eu.n"] == "100"
    assert rows[1]["wildvision_eu.win_rate"] == "" and rows[1]["wildvision_en.win_rate"] == "0.31"
    assert rows[5]["vqav2_eu.accuracy"] == ""
    for png in (out / "sweep.png", no_manifest / "report" / "sweep.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.width >= 600 and image.height >= 300


def test_report_names_a_corrupt_cell(sweep_root, tmp_path):
    """A results JSON that does not parse, or is not evaluate's, stops the report in one line
    naming the file."""
    bad = {"corrupt": ("latxa31_8b_eu100", '{"vqav2_eu": {"accuracy": 0.5,', "not valid JSON"),
           "list": ("llama31_8b_eu0", "[1, 2]", "not evaluation results"),
           "value": ("latxa31_8b_eu20", '{"vqav2_eu": {"accuracy": "high"}}',
                     "vqav2_eu.accuracy is not a number: 'high'")}
    roots = {}
    for case, (cell, text, _) in bad.items():
        roots[case] = tmp_path / case
        shutil.copytree(sweep_root, roots[case])
        (roots[case] / cell).mkdir(exist_ok=True)
        (roots[case] / cell / "eval.json").write_text(text)
    results = run_cli.run_all("sweep", [["report", f"--root={roots[case]}"] for case in bad])
    for result, (case, (cell, _, needle)) in zip(results, bad.items()):
        run_cli.assert_one_line_error(result, "sweep", f"{roots[case] / cell / 'eval.json'}: "
                                      f"{needle}")


# -- running the cells here ------------------------------------------------------------------


def test_local_launch_skips_done_cells_and_stops_at_a_failing_command(tmp_path):
    """A cell with results is skipped; a command that fails stops the sweep with one line naming
    the cell, the command and its log's last line (nothing after it runs)."""
    root = tmp_path / "sweep"
    (root / "demo_eu0").mkdir(parents=True)
    report.write_results(root / "demo_eu0" / "eval.json",
                         results_json({"demo_vqa_eu": 2, "demo_vqa_en": 42}, 0))
    result = run_cli.run("sweep", "plan", "--launch=local", "--sweep=configs/sweep_ratio.py:demo",
                         f"--root={root}", "--sweep.ratios=0,0.2,1",
                         "--sweep.train_args=--config.train.no_such_key=4")
    log = root / "demo_eu20" / "train.log"
    run_cli.assert_one_line_error(result, "sweep", f"demo_eu20: train exited with status 1; "
                                  f"{log}: ", "no_such_key")
    assert f"# [1/3] demo_eu0: done ({root}/demo_eu0/eval.json), skipped" in result.stdout
    assert "--config.train.no_such_key=4" in result.stdout.splitlines()[-1]
    assert not (root / "demo_eu20" / "eval.log").exists() and not (root / "demo_eu100").exists()


# -- one real cell: the demo config (made tiny) trained for a few steps and evaluated --------


@pytest.mark.slow  # 65-100 s on the shared 2-core machine (load 4-8)
def test_one_real_cell_end_to_end_and_resume(demo_root, tmp_path):
    root = tmp_path / "sweep"
    tiny = " ".join(f"--config.{k}={v}" for k, v in TINY.items())
    argv = [sys.executable, "-m", "basque_vlm.sweep", "run", "--sweep=configs/sweep_ratio.py:demo",
            f"--root={root}", "--sweep.ratios=0.2",
            f"--sweep.train_args={tiny} --config.data.root={demo_root} "
            "--config.train.num_steps=4 --config.train.checkpoint_every=4",
            "--sweep.eval_args=--limit=4 --max_new_tokens=4"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}

    def run():
        result = subprocess.run(argv, cwd=run_cli.ROOT, env=env, capture_output=True, text=True,
                                timeout=run_cli.TIMEOUT_S)
        run_cli.assert_ok(result)
        return result.stdout

    first = run()
    cell = root / "demo_eu20"
    assert "# [1/1] demo_eu20: train" in first and "# [1/1] demo_eu20: eval" in first
    assert sorted(json.loads(line)["step"] for line in
                  (cell / "metrics.jsonl").read_text().splitlines()) == [1, 2, 3, 4]
    results = json.loads((cell / "eval.json").read_text())
    assert set(results) == {"demo_vqa_eu", "demo_vqa_en"}
    assert all(r["n"] == 4 and 0 <= r["accuracy"] <= 1 for r in results.values())
    assert (cell / "train.log").is_file() and (cell / "eval.log").is_file()
    row = next(line for line in first.splitlines() if line.startswith("| demo | 20 |"))
    assert row == (f"| demo | 20 | **{100 * results['demo_vqa_eu']['accuracy']:.1f}** | "
                   f"**{100 * results['demo_vqa_en']['accuracy']:.1f}** |")
    assert (root / "report" / "sweep.png").is_file()

    second = run()  # resumable: the finished cell is skipped, the report rewritten
    assert f"# [1/1] demo_eu20: done ({cell}/eval.json), skipped" in second
    assert row in second
