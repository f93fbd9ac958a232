"""The `evaluate` CLI end to end on a tiny random checkpoint and fixture files for every task:
the results JSON, the predictions JSONL and the table; 1 and 2 processes agree."""

import json
import socket

import pytest
import run_cli

from basque_vlm.eval import tasks
from basque_vlm.testing import checkpoints, eval_fixtures, tiny_models

ALL = ",".join(tasks.TASKS)
# Every scorer, loader format and the judge, for the 1-process vs 2-process comparison.
SUBSET = ["vqav2_en", "aokvqa_mc_eu", "aokvqa_da_en", "pixmo_capqa_eu", "wildvision_en",
          "demo_vqa_eu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_root):
    """Every task on one process (batch 4), and ``SUBSET`` on two processes (batch 3), run
    concurrently."""
    root = tmp_path_factory.mktemp("evaluate")
    tiny_models.save_llava(root / "hf")
    ckpt = checkpoints.from_llava(root / "hf", root / "ckpt")
    data = eval_fixtures.write_all(root / "data")
    common = [f"--checkpoint={ckpt}", f"--data_dir={data}",
              "--limit=5", "--max_new_tokens=6",
              f"--judge_checkpoint={ckpt}", "--judge_max_new_tokens=6"]
    port = free_port()
    two = [[*common, f"--tasks={','.join(SUBSET)}", f"--out={root / 'two' / 'results.json'}",
            "--batch_size=3",
            f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"]
           for i in range(2)]
    procs = run_cli.run_all("evaluate", [
        [*common, f"--tasks={ALL}", f"--out={root / 'one' / 'results.json'}", "--batch_size=4"],
        *two])
    for proc in procs:
        assert proc.returncode == 0, proc.stderr
    return root, procs


def read(root, name):
    out = root / name
    return (json.loads((out / "results.json").read_text()),
            (out / "results.predictions.jsonl").read_text().splitlines(), out)


def test_results_predictions_and_table(runs):
    root, procs = runs
    results, lines, out = read(root, "one")
    assert list(results) == list(tasks.TASKS)
    for name, result in results.items():
        task = tasks.TASKS[name]
        assert result["prompt"] == task.lang and 1 <= result["n"] <= 5
        assert task.metric in result
        if task.score is not None:
            assert 0 <= result[task.metric] <= 1
    assert results["aokvqa_da_en"]["skipped"] == 1  # the difficult question
    assert all(r["checkpoint"] == str(root / "ckpt") for r in results.values())
    wildvision = results["wildvision_en"]
    assert wildvision["judge"].endswith("ckpt") and wildvision["protocol"] == "lmms"
    assert sum(v for k, v in wildvision.items() if k.startswith("judgements_")) == \
        pytest.approx(100)

    records = [json.loads(line) for line in lines]
    assert len(records) == sum(r["n"] for r in results.values())
    assert set(records[0]) >= {"task", "id", "prompt", "prediction", "references", "score"}
    for name in results:
        mine = [r for r in records if r["task"] == name]
        if tasks.TASKS[name].score is not None:
            mean = sum(r["score"] for r in mine) / len(mine)
            assert mean == pytest.approx(results[name]["accuracy"])

    table = (out / "results.md").read_text()
    assert procs[0].stdout.endswith(table)
    assert table.startswith("| task | metric | eu | en |")
    for family in ("vqav2", "aokvqa_mc", "aokvqa_da", "pixmo_capqa", "wildvision", "demo_vqa"):
        assert f"| {family} |" in table
    assert (out / "results.wildvision_eu.annotation.csv").is_file()
    assert (out / "results.wildvision_eu.annotation_key.csv").is_file()


def test_one_and_two_processes_agree(runs):
    root, procs = runs
    one, one_lines, _ = read(root, "one")
    two, two_lines, _ = read(root, "two")
    assert two == {name: one[name] for name in SUBSET}
    assert two_lines == [line for line in one_lines if json.loads(line)["task"] in SUBSET]
    assert "| task |" in procs[1].stdout and "| task |" not in procs[2].stdout
