"""The Basque-share sweep (configs/sweep_ratio.py): plan it, run it, report it.

    python -m basque_vlm.sweep plan --sweep=configs/sweep_ratio.py --root=DIR \\
        [--launch=print|local|tpu] [--sweep.ratios=0,0.2,1 --sweep.backbones=latxa31_8b ...]
    python -m basque_vlm.sweep report --root=DIR [--out=DIR/report]
    python -m basque_vlm.sweep run --sweep=configs/sweep_ratio.py:demo --root=workdir/sweep_demo

``plan`` writes ``DIR/sweep.json`` (the grid) and prints one ``train`` and one ``evaluate``
command per cell (``DIR/<backbone>_eu<percent>``, results ``DIR/<cell>/eval.json``) as a shell
script; ``--launch=local`` runs them here one after another, skipping the cells that have
results (rerun it to resume); ``--launch=tpu`` prints them as ``launch/run.sh [--launch_args]
--run_name=CELL --wait -- COMMAND`` lines (every worker of the TPU VM runs the command; writes
nothing here). ``report`` gathers the results into ``OUT/sweep.md`` (the table, best cells in
bold, missing cells listed), ``OUT/sweep.csv`` and ``OUT/sweep.png``. ``run`` = ``plan
--launch=local`` then ``report``.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags, logging
from ml_collections import config_flags

from basque_vlm.runtime import cli, paths
from basque_vlm.sweep import plan

COMMANDS = ("plan", "report", "run")
config_flags.DEFINE_config_file("sweep", None, "Sweep definition: configs/sweep_ratio.py (the "
                                "paper's grid) or configs/sweep_ratio.py:demo (the miniature).")
flags.DEFINE_string("root", None, "The sweep's folder: a workdir and results per cell.")
flags.DEFINE_enum("launch", "print", plan.LAUNCHES, "plan: print the commands, run them "
                  "here one after another (local), or print launch/run.sh lines (tpu).")
flags.DEFINE_string("launch_args", "", "plan --launch=tpu: flags for every launch/run.sh line, "
                    "e.g. '--name=TPU --zone=ZONE --project=PROJECT' (default: $BVLM_TPU, "
                    "$CLOUDSDK_COMPUTE_ZONE, $CLOUDSDK_CORE_PROJECT).")
flags.DEFINE_string("out", None, "report: output folder (default ROOT/report).")
FLAGS = flags.FLAGS


def _plan(launch: str) -> None:
    if FLAGS.sweep is None:
        raise ValueError("--sweep is required (configs/sweep_ratio.py or "
                         "configs/sweep_ratio.py:demo)")
    root = FLAGS.root
    cells = plan.grid(FLAGS.sweep, root)
    env = plan.env_of(FLAGS.sweep)
    if paths.scheme(root) is not None:  # gs://, file://, ...: a plain folder path only
        raise ValueError("--root must be a folder path (train and evaluate write it with file "
                         "I/O; on a TPU VM, a folder all workers share, e.g. a gcsfuse mount), "
                         f"got {root}")
    if launch == "tpu":
        # The root is the TPU workers' folder: nothing is written here. `report --sweep=...`
        # lists the cells of the grid that have no results.
        plan.print_plan(cells, env, launch, root, plan.split_args(
            FLAGS.launch_args, "--launch_args"))
        return
    plan.write_manifest(root, FLAGS.sweep, cells)
    if launch == "print":
        plan.print_plan(cells, env, launch, root)
        return
    try:
        seconds = plan.run_local(cells, env)
    except plan.CellFailed as e:
        cli.fail("sweep", e)
    print(f"# {len(cells)} cells done in {seconds:.0f} s; results: {root}/<cell>/"
          f"{plan.RESULTS}", flush=True)


def _report() -> None:
    from basque_vlm.sweep import report

    root = Path(FLAGS.root)
    grid = None
    if FLAGS.sweep is not None:
        grid = [(c.name, c.backbone, c.ratio) for c in plan.grid(FLAGS.sweep, FLAGS.root)]
    out = Path(FLAGS.out) if FLAGS.out else root / "report"
    text, cells = report.write(root, out, grid)
    print(text, end="")
    missing = [c.name for c in cells if c.results is None]
    print(f"wrote {out / report.MARKDOWN}, {out / report.CSV}, "
          f"{out / report.PLOT}" + (f"; missing cells: {', '.join(missing)}"
                                           if missing else ""), flush=True)


def _main(command: str) -> None:
    logging.set_verbosity(logging.WARNING)  # no INFO lines (matplotlib's font cache, ...)
    if not FLAGS.root:
        raise ValueError("--root is required")
    if command == "run" and FLAGS["launch"].present and FLAGS.launch != "local":
        raise ValueError("run launches here; print or launch on a TPU VM with "
                         f"`plan --launch={FLAGS.launch}`")
    if command in ("plan", "run"):
        _plan("local" if command == "run" else FLAGS.launch)
    if command in ("report", "run"):
        _report()


if __name__ == "__main__":
    cli.start("sweep", _main, COMMANDS)
