"""Task loaders on fixture files in the released schemas, scoring through the runner with
scripted answers, and bad task files reported in one line naming the file and row."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import run_cli
from eval_helpers import evaluate

from basque_vlm.eval import metrics, runner, tasks
from basque_vlm.eval.taskdata import TaskDataError
from basque_vlm.testing import checkpoints, eval_fixtures, tiny_models


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, demo_root):
    data = eval_fixtures.write_all(tmp_path_factory.mktemp("eval_data"))
    return data


def right_on_even(samples, right, wrong):
    return [right(s) if i % 2 == 0 else wrong(s) for i, s in enumerate(samples)]


def test_vqav2_scores_and_prompt(data_dir):
    # each fixture answer appears twice among the ten annotators' answers: 0.6 when right
    result, records, scripted = evaluate("vqav2_en", data_dir, lambda samples: right_on_even(
        samples, lambda s: s.target[0].capitalize() + ".", lambda s: "banana"))
    assert result == {"accuracy": pytest.approx(0.3), "n": 6, "prompt": "en"}
    assert scripted.prompts[0] == ("What is in the image?\nAnswer the question using a single "
                                   "word or phrase.")
    assert records[0]["references"][:2] == ["cat", "dog"] and records[0]["id"] == "1000"


def test_basque_prompt_and_override(data_dir):
    _, _, eu = evaluate("vqav2_eu", data_dir, ["x"] * 6)
    assert eu.prompts[0] == ("Zer dago irudian?\nErantzun galderari hitz bakar batez edo esaldi "
                             "labur batez.")
    result, _, en = evaluate("vqav2_eu", data_dir, ["x"] * 6, prompt_lang="en")
    assert en.prompts[0].endswith("\nAnswer the question using a single word or phrase.")
    assert result["prompt"] == "en"


@pytest.mark.parametrize("lang,instruction", [
    ("en", "\nAnswer with the option's letter from the given choices directly."),
    ("eu", "\nErantzun zuzenean emandako aukeretako letrarekin.")])
def test_multiple_choice(data_dir, lang, instruction):
    result, records, scripted = evaluate(f"aokvqa_mc_{lang}", data_dir, lambda samples: [
        "ABCD"[s.target] + "." if i % 3 == 0 else s.choices[s.target] if i % 3 == 1
        else "?" for i, s in enumerate(samples)])
    assert result == {"accuracy": pytest.approx(4 / 6), "n": 6, "prompt": lang, "unparsed": 2}
    first = scripted.prompts[0]
    assert first.endswith(instruction) and "\nA. " in first and "\nD. " in first
    assert records[0]["choice"] == "ABCD"[records[0]["index"] % 4]


def test_direct_answer_skips_difficult_questions(data_dir):
    result, records, _ = evaluate("aokvqa_da_en", data_dir, lambda samples: right_on_even(
        samples, lambda s: "cat", lambda s: "Cat"))
    assert result == {"accuracy": pytest.approx(3 / 5), "n": 5, "prompt": "en", "skipped": 1}
    assert "q4" not in {r["id"] for r in records}


@pytest.mark.parametrize("lang,yes,no", [("en", "Yes.", "No"), ("eu", "Bai, hala da.", "Ez")])
def test_yes_no(data_dir, lang, yes, no):
    def answers(samples):
        truth = [metrics.parse_yes_no(s.target) for s in samples]
        return [(yes if t else no) if i % 2 == 0 else (no if t else yes)
                for i, t in enumerate(truth)]

    result, _, _ = evaluate(f"pixmo_capqa_{lang}", data_dir, answers)
    assert result == {"accuracy": pytest.approx(3 / 5), "n": 5, "prompt": lang, "skipped": 1,
                      "unparsed": 0}


@pytest.mark.parametrize("lang", ["en", "eu"])
def test_demo_tasks_read_the_heldout_split(data_dir, lang):
    result, records, scripted = evaluate(f"demo_vqa_{lang}", data_dir, lambda samples:
                                         right_on_even(samples, lambda s: s.target.lower(),
                                                       lambda s: "-"), limit=4)
    assert result == {"accuracy": 0.5, "n": 4, "prompt": lang}
    assert "<image>" not in scripted.prompts[0] and scripted.prompts[0].endswith("?")
    assert records[0]["id"].startswith("heldout-") and records[0]["id"].endswith(lang)


def test_open_ended_is_not_scored_by_the_runner(data_dir):
    result, records, _ = evaluate("wildvision_eu", data_dir, ["Katu bat."] * 3)
    assert result == {"n": 3, "prompt": "eu"}
    assert records[0]["references"] == ["A cat sits on a table."]


def test_vqa_answers_as_plain_strings(tmp_path, demo_root):
    rows = [{"question": "Zer?", "answers": ["katua"] * 10, "image": eval_fixtures.hf_image(0)}]
    eval_fixtures.write_parquet(tmp_path / "vqav2_eu" / "eu.parquet", rows)
    result, _, _ = evaluate("vqav2_eu", tmp_path, ["Katua."])
    assert result["accuracy"] == 1.0


@pytest.mark.parametrize("case", ["missing_column", "missing_image", "bad_index", "bad_json",
                                  "empty_folder", "wrong_type"])
def test_bad_files_raise_naming_file_and_row(tmp_path, demo_root, case):
    folder = tmp_path / "aokvqa_mc_en"
    rows = eval_fixtures.aokvqa("en", 3)
    if case == "missing_column":
        del rows[1]["choices"]
    elif case == "bad_index":
        rows[1]["correct_choice_idx"] = 7
    elif case == "wrong_type":
        rows[1]["question"] = 3
    path = eval_fixtures.write_json(folder / "val.jsonl", rows) if case != "empty_folder" else None
    if case == "missing_image":
        (folder / "images" / "101.png").unlink()
    elif case == "bad_json":
        lines = path.read_text().splitlines()
        path.write_text("\n".join([lines[0], "{oops", *lines[2:]]) + "\n")
    elif case == "empty_folder":
        folder.mkdir()
    with pytest.raises(TaskDataError) as error:
        runner.load_samples(tasks.TASKS["aokvqa_mc_en"], tmp_path, None)
    message = str(error.value)
    assert str(folder) in message and "\n" not in message
    if case != "empty_folder":
        assert "val.jsonl line 2:" in message, message
    expected = {"missing_column": "missing column 'choices'", "missing_image": "101.png",
                "bad_index": "correct_choice_idx 7", "bad_json": "invalid JSON",
                "empty_folder": "no .parquet", "wrong_type": "column 'question' holds int"}
    assert expected[case] in message


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    tiny_models.save_llava(root / "hf")
    return checkpoints.from_llava(root / "hf", root / "ckpt")


def test_cli_bad_task_files_are_one_line_errors(tmp_path, ckpt):
    data = tmp_path / "data"
    broken = eval_fixtures.vqav2("en", 3)
    del broken[2]["answers"]
    eval_fixtures.write_parquet(data / "vqav2_en" / "val.parquet", broken)
    rows = eval_fixtures.pixmo("eu", 3)
    rows[1]["image"] = {"bytes": b"not an image", "path": None}
    eval_fixtures.write_parquet(data / "pixmo_capqa_eu" / "test.parquet", rows)
    table = pa.Table.from_pylist([{"question": "q", "answer": "yes"}])
    pq.write_table(table, data / "pixmo_capqa_eu" / "zz_no_image.parquet")
    common = [f"--checkpoint={ckpt}", f"--data_dir={data}", f"--out={tmp_path / 'r.json'}"]
    results = run_cli.run_all("evaluate", [
        [*common, "--tasks=vqav2_en"],
        [*common, "--tasks=pixmo_capqa_eu", "--limit=3"],
        [*common, "--tasks=pixmo_capqa_eu"],
        [*common, "--tasks=vqav2_eu"],
        [*common, "--tasks=vqav2_en,nope"],
    ])
    run_cli.assert_one_line_error(results[0], "evaluate", "val.parquet row 3",
                                  "missing column 'answers'")
    run_cli.assert_one_line_error(results[1], "evaluate", "test.parquet row 2",
                                  "unreadable image")
    run_cli.assert_one_line_error(results[2], "evaluate", "zz_no_image.parquet row 1",
                                  "missing column 'image'")
    run_cli.assert_one_line_error(results[3], "evaluate", "vqav2_eu: no such folder")
    run_cli.assert_one_line_error(results[4], "evaluate", "unknown task(s) ['nope']")
    assert not (tmp_path / "r.json").exists()
