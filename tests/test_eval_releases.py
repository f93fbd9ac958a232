"""The paper's released evaluation sets as published: hub snapshots holding both languages, each
task reading its own split only; string-encoded lists and indices; a column mapping for variant
releases; the WildVision id list; unknown layouts reported in one line."""

import dataclasses
import json

import pytest
import run_cli
from eval_helpers import evaluate

from basque_vlm.eval import id_list, metrics, runner, tasks
from basque_vlm.eval.taskdata import TaskDataError
from basque_vlm.testing import checkpoints, eval_fixtures, tiny_models

RELEASE_TASKS = [name for _, names, _ in eval_fixtures.RELEASES.values() for name in names]


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    return eval_fixtures.write_releases(tmp_path_factory.mktemp("releases"))


def questions(task_name, data_dir):
    samples, _ = runner.load_samples(tasks.TASKS[task_name], data_dir, None)
    return [s.question for s in samples], [s.id for s in samples]


def test_evaluate_scores_every_release_in_both_languages(tmp_path, releases):
    tiny_models.save_llava(tmp_path / "hf")
    ckpt = checkpoints.from_llava(tmp_path / "hf", tmp_path / "ckpt")
    out = tmp_path / "results.json"
    result = run_cli.run("evaluate", f"--checkpoint={ckpt}", f"--data_dir={releases}",
                         f"--tasks={','.join(RELEASE_TASKS)}", f"--out={out}", "--limit=3",
                         "--max_new_tokens=2", "--batch_size=6")
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())
    assert list(results) == RELEASE_TASKS
    for name, scores in results.items():
        assert scores["n"] == 3 and 0 <= scores["accuracy"] <= 1, (name, scores)
    records = [json.loads(line) for line in
               (tmp_path / "results.predictions.jsonl").read_text().splitlines()]
    for name in RELEASE_TASKS:
        lang = tasks.TASKS[name].lang
        prompts = [r["prompt"] for r in records if r["task"] == name]
        assert len(prompts) == 3
        assert all(p.split("\n")[0] in eval_fixtures.QUESTIONS[lang] for p in prompts), prompts
    choices = next(r for r in records if r["task"] == "aokvqa_mc_eu")
    assert choices["id"] == "q0" and choices["references"] == ["A. txakurra"]


def test_a_snapshot_serves_each_language_its_own_split(releases):
    for eu_name, en_name in [("vqav2_eu", "vqav2_en"), ("aokvqa_mc_eu", "aokvqa_mc_en"),
                             ("pixmo_capqa_eu", "pixmo_capqa_en")]:
        eu, en = questions(eu_name, releases)[0], questions(en_name, releases)[0]
        assert eu and set(eu) <= set(eval_fixtures.QUESTIONS["eu"])
        assert en and set(en) <= set(eval_fixtures.QUESTIONS["en"])
    # two files per split, read in order; the same questions in both languages
    assert questions("vqav2_eu", releases)[1] == ["1000", "1001", "1002", "1003"]
    assert questions("vqav2_en", releases)[1] == ["1000", "1001", "1002", "1003"]
    # A-OK-VQA-eu's splits differ in length
    assert len(questions("aokvqa_mc_en", releases)[1]) == 5
    assert len(questions("aokvqa_mc_eu", releases)[1]) == 3


def aokvqa_rows(encode):
    rows = eval_fixtures.aokvqa("eu", 6)
    return [{"image": eval_fixtures.hf_image(r["image"]), "question": r["question"],
             "choices": encode(r["choices"]),
             "correct_choice_idx": (str(r["correct_choice_idx"]) if encode is not list
                                    else r["correct_choice_idx"]),
             "question_id": r["question_id"]} for r in rows]


@pytest.mark.parametrize("encode", [str, json.dumps], ids=["python_literal", "json"])
def test_string_choices_score_exactly_as_the_list_form(tmp_path, encode):
    def answers(samples):
        return ["ABCD"[s.target] if i % 3 == 0 else s.choices[s.target] if i % 3 == 1 else "?"
                for i, s in enumerate(samples)]

    for form, rows in (("lists", aokvqa_rows(list)), ("strings", aokvqa_rows(encode))):
        eval_fixtures.write_snapshot(tmp_path / form / "aokvqa_mc_eu", {"eu": rows})
    as_lists = evaluate("aokvqa_mc_eu", tmp_path / "lists", answers)
    as_strings = evaluate("aokvqa_mc_eu", tmp_path / "strings", answers)
    assert as_strings[0] == as_lists[0] == {"accuracy": pytest.approx(4 / 6), "n": 6,
                                            "prompt": "eu", "unparsed": 2}
    assert as_strings[1] == as_lists[1]
    assert as_strings[2].prompts == as_lists[2].prompts


def test_a_mixed_folder_never_mixes(tmp_path):
    folder = tmp_path / "vqav2_en"
    eval_fixtures.write_snapshot(folder, {"eu": eval_fixtures.vqav2("eu", 2),
                                          "validation": eval_fixtures.vqav2("en", 3),
                                          "en": eval_fixtures.vqav2("en", 4)})
    eval_fixtures.write_parquet(folder / "notes.parquet", eval_fixtures.vqav2("eu", 1))
    assert len(questions("vqav2_en", tmp_path)[0]) == 4        # its language's split first
    (folder / "data" / "en-00000-of-00001.parquet").unlink()
    assert len(questions("vqav2_en", tmp_path)[0]) == 3        # else the English original's
    assert questions("vqav2_en", tmp_path)[0][0] == "What is in the image?"
    eval_fixtures.write_snapshot(tmp_path / "pixmo_capqa_en",
                                 {"train": eval_fixtures.pixmo("en", 2)})
    with pytest.raises(TaskDataError) as error:
        runner.load_samples(tasks.TASKS["pixmo_capqa_en"], tmp_path, None)
    assert str(error.value) == (f"{tmp_path / 'pixmo_capqa_en'}: holds the splits train, not "
                                "the task's (en); see README, 'Evaluation data'")


def test_a_folder_without_split_files_reads_every_file(tmp_path):
    for name in ("a.parquet", "data/b.parquet"):
        eval_fixtures.write_parquet(tmp_path / "pixmo_capqa_eu" / name,
                                    eval_fixtures.pixmo("eu", 2))
    assert len(questions("pixmo_capqa_eu", tmp_path)[0]) == 4


def test_columns_json_reads_a_variant_release(tmp_path):
    folder = tmp_path / "aokvqa_mc_eu"
    rows = [{"irudia": r["image"], "galdera": r["question"], "aukerak": r["choices"],
             "zuzena": r["correct_choice_idx"], "id": r["question_id"]}
            for r in aokvqa_rows(str)]
    eval_fixtures.write_snapshot(folder, {"eu": rows})
    (folder / "columns.json").write_text(json.dumps(
        {"image": "irudia", "question": "galdera", "choices": "aukerak",
         "correct_choice_idx": "zuzena"}))
    samples, _ = runner.load_samples(tasks.TASKS["aokvqa_mc_eu"], tmp_path, None)
    assert [s.id for s in samples] == [f"q{i}" for i in range(6)]
    assert samples[1].choices == ("katua", "hegaztia", "zaldia", "txakurra")
    assert samples[1].target == 1


@pytest.mark.parametrize("content, needle", [
    ('{"choice": "aukerak"}', ("unknown field(s) choice; this task reads image, id, question, "
                               "choices, correct_choice_idx")),
    ('["aukerak"]', 'expected {"field": "column", ...}'),
    ('{"choices": 3}', 'expected {"field": "column", ...}'),
    ("{oops", "not JSON")])
def test_bad_columns_json_is_one_line_error(tmp_path, content, needle):
    folder = tmp_path / "aokvqa_mc_eu"
    eval_fixtures.write_snapshot(folder, {"eu": aokvqa_rows(str)})
    (folder / "columns.json").write_text(content)
    with pytest.raises(TaskDataError) as error:
        runner.load_samples(tasks.TASKS["aokvqa_mc_eu"], tmp_path, None)
    message = str(error.value)
    assert message.startswith(f"{folder / 'columns.json'}: ") and needle in message
    assert "\n" not in message


@pytest.mark.parametrize("column, value, needle", [
    ("choices", 3, "column 'choices' holds int 3, expected a list"),
    ("choices", "dog, cat", "column 'choices' holds str 'dog, cat', expected a list"),
    ("choices", "['dog' 'cat' 'bird']", "column 'choices' holds str \"['dog' 'cat' 'bird']\""),
    ("choices", "[1, 2]", "column 'choices' must be a non-empty list of strings"),
    ("correct_choice_idx", "two", ("column 'correct_choice_idx' holds str 'two', expected "
                                   "an index")),
    ("correct_choice_idx", "7", "correct_choice_idx 7 is not an index of the 4 choices"),
    ("correct_choice_idx", 1.0, "column 'correct_choice_idx' holds float 1.0")])
def test_unknown_layouts_name_file_row_column_and_type(tmp_path, column, value, needle):
    rows = aokvqa_rows(str)
    rows[1][column] = value
    eval_fixtures.write_json(tmp_path / "aokvqa_mc_eu" / "eu.jsonl",
                             [{**r, "image": i} for i, r in enumerate(rows)])
    with pytest.raises(TaskDataError) as error:
        runner.load_samples(tasks.TASKS["aokvqa_mc_eu"], tmp_path, None)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'aokvqa_mc_eu' / 'eu.jsonl'} line 2: ")
    assert needle in message and "\n" not in message


def listed(tmp_path, name, *ids):
    path = tmp_path / "ids.txt"
    path.write_text("# the fixture's pairs\n\n" + "".join(f"{i}\n" for i in ids))
    return dataclasses.replace(tasks.TASKS[name],
                               load=id_list.only_listed(tasks.load_open_ended, path))


def test_wildvision_keeps_the_listed_ids_in_both_languages(tmp_path):
    for lang in ("en", "eu"):
        eval_fixtures.write_json(tmp_path / f"wildvision_{lang}" / "test.json",
                                 eval_fixtures.wildvision(lang, 5))
    for lang in ("en", "eu"):
        result, records, _ = evaluate(listed(tmp_path, f"wildvision_{lang}", "w3", "w1"),
                                      tmp_path, ["Katu bat."] * 2)
        assert result == {"n": 2, "prompt": lang, "skipped": 3}
        assert [r["id"] for r in records] == ["w1", "w3"]
    result, _, _ = evaluate(listed(tmp_path, "wildvision_eu"), tmp_path, ["-"] * 5)
    assert result == {"n": 5, "prompt": "eu"}  # an empty list keeps every row
    with pytest.raises(TaskDataError) as error:
        runner.load_samples(listed(tmp_path, "wildvision_eu", "w1", "w7", "w9"), tmp_path, None)
    assert str(error.value) == (f"{tmp_path / 'wildvision_eu'}: 2 of the 3 ids listed in "
                                f"{tmp_path / 'ids.txt'} are not in the data (w7, w9)")


def test_the_shipped_wildvision_list_is_empty_and_keeps_every_row(tmp_path):
    # No ids are shipped: a user fills the list from the release (README, "Evaluation data").
    assert id_list.read_ids(id_list.WILDVISION_IDS) == frozenset()
    for lang in ("en", "eu"):
        eval_fixtures.write_json(tmp_path / f"wildvision_{lang}" / "test.json",
                                 eval_fixtures.wildvision(lang, 3))
        samples, skipped = runner.load_samples(tasks.TASKS[f"wildvision_{lang}"], tmp_path, None)
        assert (len(samples), skipped) == (3, 0)


def test_yes_no_release_answers_parse(releases):
    samples, skipped = runner.load_samples(tasks.TASKS["pixmo_capqa_eu"], releases, None)
    assert [metrics.parse_yes_no(s.target) for s in samples] == [True, False, True]
    assert skipped == 1
