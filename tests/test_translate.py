"""`python -m basque_vlm.translate` against the OpenAI-compatible stub on 127.0.0.1 (and, marked
slow, a tiny random checkpoint): every input format written back in its own format with each
translation in its source's place, strings translated once, failures retried on a rerun, a
``kill -9`` resumed to the same bytes, bad input named in one line, the validation hand-off."""

from __future__ import annotations

import ast
import json
import os
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import run_cli
from translate_helpers import (PREFIX, Translator, args, fake, llava_records,
                               openai_records, read_jsonl, read_parquet, translate)

from basque_vlm.data.conversation import from_record
from basque_vlm.datagen import translation
from basque_vlm.datagen import translation_prompt as tp
from basque_vlm.datagen.translation_backends import ServerBackend
from basque_vlm.datagen.translation_journal import Journal
from basque_vlm.datagen.translation_quality import Checks
from basque_vlm.datagen.translation_rules import KEEP, MODEL, RULE, Part, split
from basque_vlm.eval import tasks
from basque_vlm.testing import eval_fixtures
from basque_vlm.runtime.openai_api import ChatClient
from basque_vlm.testing.openai_stub import Fault, OpenAIStub

RULED = {"yes": "bai", "no": "ez", "Yes": "Bai", "No": "Ez", "2": "2"}


def expected(text: str) -> str:
    return RULED.get(text, fake(text))


def samples(task_name: str, folder: Path) -> list[tasks.Sample]:
    task = tasks.TASKS[task_name]
    return [s for s in task.load(task, folder) if s is not None]  # None: a skipped row


# -- formats ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vqav2_run(tmp_path_factory):
    """A VQAv2 hub snapshot (``en`` and ``eu`` splits, two files each) translated."""
    root = tmp_path_factory.mktemp("vqav2")
    snapshot = eval_fixtures.write_snapshot(root / "vqa-v2-eu", eval_fixtures.vqa_v2_eu(7), 2)
    translator = Translator()
    with OpenAIStub(translator) as stub:
        summary = translate(stub.url, snapshot, root / "vqav2_eu", "--max_concurrency=3")
        requests = stub.requests
    return snapshot, root / "vqav2_eu", summary, translator, requests


def test_vqav2_rows_answers_and_untouched_columns(vqav2_run):
    snapshot, out, summary, _, _ = vqav2_run
    source = [r for f in sorted((snapshot / "data").glob("en-*")) for r in read_parquet(f)]
    data = out / "data" / "eu-00000-of-00001.parquet"
    assert [p.name for p in (out / "data").iterdir()] == [data.name]
    rows = read_parquet(data)
    assert len(rows) == len(source) == 7
    for before, after in zip(source, rows):
        assert after["question_id"] == before["question_id"]  # in input order
        assert after["image"] == before["image"]
        assert after["question"] == fake(before["question"])
        assert len(after["answers"]) == 10
        assert [a["answer"] for a in after["answers"]] == [
            expected(a["answer"]) for a in before["answers"]]
        assert [{k: v for k, v in a.items() if k != "answer"} for a in after["answers"]] == [
            {k: v for k, v in a.items() if k != "answer"} for a in before["answers"]]
        assert after["multiple_choice_answer"] == expected(before["multiple_choice_answer"])
        assert after["translation_flags"] == []
    schema = pq.read_schema(data)
    assert schema.names == [*pq.read_schema(next((snapshot / "data").glob("en-*"))).names,
                            "translation_flags"]
    assert summary["rows"] == 7 and summary["failed"] == 0 and summary["flagged"] == 0
    assert summary["failed_by_kind"] == {}
    # the questions, and the answers but for the digits (kept as they are); 6 distinct
    # questions and 3 distinct answer words for the model (yes and no by rule)
    answers = [a["answer"] for r in source for a in r["answers"]] + [
        r["multiple_choice_answer"] for r in source]
    assert summary["strings"] == 7 + sum(not a.isdigit() for a in answers)
    assert summary["by_rule"] == sum(a in ("yes", "no") for a in answers)
    assert (summary["distinct"], summary["translated"], summary["from_journal"]) == (9, 9, 0)
    assert summary["strings"] == summary["distinct"] + summary["reused"] + summary["by_rule"]


def test_vqav2_each_distinct_string_asked_once_with_the_default_prompt(vqav2_run):
    _, _, summary, translator, requests = vqav2_run
    assert set(translator.asked.values()) == {1}
    assert sorted(translator.asked) == sorted(
        set(eval_fixtures.QUESTIONS["en"]) | {"cat", "dog", "table"})
    request = requests[0]
    messages = request.body["messages"]
    assert messages[0] == {"role": "system", "content": tp.DEFAULT_SYSTEM.format(
        source="English", target="Basque")}
    shipped = tp.read_examples(tp.default_examples(tp.language("en"), tp.language("eu")))
    assert len(messages) == 2 + 2 * len(shipped)
    assert messages[1]["content"] == PREFIX + shipped[0].source
    assert messages[2] == {"role": "assistant", "content": shipped[0].target}
    assert (request.model, request.body["temperature"]) == ("stub-mt", 0)
    assert {r.max_tokens for r in requests} == {32}  # short strings: the smallest budgets


def test_vqav2_output_is_the_eu_split_evaluate_reads(vqav2_run):
    snapshot, out, _, _, _ = vqav2_run
    translated = samples("vqav2_eu", out)
    assert [s.question for s in translated] == [
        fake(q) for q in [eval_fixtures.QUESTIONS["en"][i % 6] for i in range(7)]]
    assert translated[0].target == [expected(a) for a in
                                    ["cat", "dog", "2", "yes", "no", "table"] * 2][:10]


def test_vqav2_validation_items_go_to_validate_sample(vqav2_run, tmp_path):
    _, out, _, _, _ = vqav2_run
    items = read_jsonl(out.with_name("vqav2_eu.items.jsonl"))
    assert {i["field"] for i in items} == {"question", "answers", "multiple_choice_answer"}
    assert all(i["benchmark"] == "vqav2_eu" for i in items)
    first = next(i for i in items if i["id"] == "1000" and i["field"] == "answers")
    # the distinct answers with something to translate: "2" is left out
    assert first["source"].splitlines() == ["cat", "dog", "yes", "no", "table"]
    assert first["target"].splitlines() == [expected(a) for a in first["source"].splitlines()]
    image = out.parent / first["image"]
    assert image.read_bytes() == eval_fixtures.png(0)
    result = run_cli.run("validate", "sample", f"--input={out.with_name('vqav2_eu.items.jsonl')}",
                         f"--out={tmp_path / 'sample'}", "--per_benchmark=5", "--annotators=2")
    run_cli.assert_ok(result)
    assert json.loads(result.stdout.splitlines()[-1])["items"] == 5


def test_benchmark_kinds_in_their_own_formats(tmp_path):
    """A-OK-VQA as released (choices and index as strings) and as a JSONL of lists with
    rationales and image paths; PixMo-CapQA's yes/no; WildVision as a JSON list."""
    release = eval_fixtures.write_snapshot(
        tmp_path / "aokvqa-release", {"en": eval_fixtures.a_ok_vqa_eu(3)["en"]})
    aokvqa = eval_fixtures.write_json(tmp_path / "aokvqa" / "val.jsonl",
                                      eval_fixtures.aokvqa("en", 3))
    pixmo = eval_fixtures.write_parquet(tmp_path / "pixmo" / "test.parquet",
                                        eval_fixtures.pixmo("en", 4))
    wildvision = eval_fixtures.write_json(tmp_path / "wildvision" / "test500.json",
                                          eval_fixtures.wildvision("en", 2))
    outs = {name: tmp_path / "out" / name for name in ("aokvqa_release", "aokvqa_mc_eu",
                                                       "pixmo_capqa_eu", "wildvision_eu")}
    with OpenAIStub(Translator()) as stub:
        procs = run_cli.run_all("translate", [
            args(stub.url, release, outs["aokvqa_release"]),
            args(stub.url, aokvqa.parent, outs["aokvqa_mc_eu"]),
            args(stub.url, pixmo, outs["pixmo_capqa_eu"], "--kind=yes_no"),
            args(stub.url, wildvision, outs["wildvision_eu"])])
    for proc in procs:
        run_cli.assert_ok(proc)

    released = read_parquet(outs["aokvqa_release"] / "data" / "eu-00000-of-00001.parquet")
    assert len(released) == 4
    for before, after in zip(eval_fixtures.a_ok_vqa_eu(3)["en"], released):
        assert isinstance(after["choices"], str)  # the input's encoding: a Python literal
        assert after["choices"] == str([fake(c) for c in ast.literal_eval(before["choices"])])
        assert after["correct_choice_idx"] == before["correct_choice_idx"]
        assert after["image"] == before["image"]

    lines = read_jsonl(outs["aokvqa_mc_eu"] / "data" / "eu-00000-of-00001.jsonl")
    for before, after in zip(eval_fixtures.aokvqa("en", 3), lines):
        assert after["choices"] == [fake(c) for c in before["choices"]]
        assert after["rationales"] == [fake(r) for r in before["rationales"]]
        assert after["direct_answers"] == before["direct_answers"]  # not the kind's field
        assert (outs["aokvqa_mc_eu"] / "data" / after["image"]).read_bytes() == \
            eval_fixtures.png(before["image"])
    loaded = samples("aokvqa_mc_eu", outs["aokvqa_mc_eu"])
    assert [s.choices for s in loaded] == [tuple(line["choices"]) for line in lines]

    answers = [r["answer"] for r in read_parquet(outs["pixmo_capqa_eu"] / "data" /
                                                 "eu-00000-of-00001.parquet")]
    assert answers == ["bai", "Ez", fake("Yes, it is."), fake("maybe")]
    # bai, Ez, and the fake translation of "Yes, it is." (it still says yes); not "maybe"
    assert len(samples("pixmo_capqa_eu", outs["pixmo_capqa_eu"])) == 3

    data = outs["wildvision_eu"] / "data" / "eu-00000-of-00001.json"
    assert data.read_text().startswith("[")
    rows = json.loads(data.read_text())
    for before, after in zip(eval_fixtures.wildvision("en", 2), rows):
        assert after["instruction"] == fake(before["instruction"])
        assert after["claude-3-sonnet-20240229"] == fake(before["claude-3-sonnet-20240229"])
        assert after["question_id"] == before["question_id"]
    assert [s.target for s in samples("wildvision_eu", outs["wildvision_eu"])] == [
        r["claude-3-sonnet-20240229"] for r in rows]


def test_llava_conversations_keep_placeholders_roles_and_order(tmp_path):
    llava = llava_records(tmp_path / "in")
    chat = openai_records(tmp_path / "in")
    out, chat_out = tmp_path / "out" / "train_eu.json", tmp_path / "out" / "chat_eu.jsonl"
    with OpenAIStub(Translator()) as stub:
        procs = run_cli.run_all("translate", [args(stub.url, llava, out),
                                              args(stub.url, chat, chat_out)])
    for proc in procs:
        run_cli.assert_ok(proc)
    records = json.loads(out.read_text())
    assert [r["id"] for r in records] == ["a", "b", "c"]
    a, b, c = records
    assert [t["value"] for t in a["conversations"]] == [
        "You are helpful.", "<image>\n" + fake("What colour is it?"), fake("It is red."),
        fake("Are you sure?"), "Bai"]
    assert [t["from"] for t in a["conversations"]] == ["system", "human", "gpt", "human", "gpt"]
    assert a["lang"] == "eu" and a["image"] == "img/red.png"
    assert b["conversations"][0]["value"] == \
        f"{fake('Compare')} <image> {fake('with')} <image>{fake(', please.')}"
    assert b["conversations"][1]["value"] == fake("The first has 3 sides and the second 4.")
    assert c["conversations"][1]["value"] == "  " + fake("It is red.") + "\n"
    for record in records:
        from_record(record)  # as prepare_data reads it: placeholders match the images
    chat_records = read_jsonl(chat_out)
    assert chat_records[0]["messages"][0]["content"] == [
        {"type": "image"}, {"type": "text", "text": fake("Describe the picture.")}]
    assert chat_records[1]["messages"][1]["content"] == "Ez"
    items = read_jsonl(tmp_path / "out" / "train_eu.items.jsonl")
    assert {(i["id"], i["field"]) for i in items} == {
        ("a", "conversations.1.value"), ("a", "conversations.2.value"),
        ("a", "conversations.3.value"), ("a", "conversations.4.value"),
        ("b", "conversations.0.value"), ("b", "conversations.1.value"),
        ("c", "conversations.0.value"), ("c", "conversations.1.value")}
    assert {i["image"] for i in items if i["id"] in "ab"} == {"../in/img/red.png"}


def test_generic_jsonl_fields_and_custom_prompt(tmp_path):
    source = tmp_path / "notes.jsonl"
    rows = [{"n": 1, "question": "Where is it?", "meta": {"notes": ["In the box.", "Hidden."],
                                                          "score": 3}},
            {"n": 2, "question": "Where is it?", "meta": {"notes": [], "score": 4}}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = tmp_path / "prompt.txt"
    template.write_text("{source_code}>{target_code} {text}\n")
    asked = []

    def respond(request):
        asked.append(request.text)
        return fake(request.text.removeprefix("en>gl "))

    with OpenAIStub(respond) as stub:
        result = run_cli.run("translate", f"--input={source}", f"--out={tmp_path / 'gl.jsonl'}",
                             "--target=Galician", f"--endpoint={stub.url}", "--model_name=m",
                             "--fields=question,meta.notes", f"--prompt={template}",
                             "--nolanguage_check")
        systems = {r.system for r in stub.requests}
    run_cli.assert_ok(result)
    out = read_jsonl(tmp_path / "gl.jsonl")
    assert out[0] == {"n": 1, "question": fake("Where is it?"),
                      "meta": {"notes": [fake("In the box."), fake("Hidden.")], "score": 3},
                      "translation_flags": []}
    assert out[1]["question"] == fake("Where is it?")
    assert sorted(asked) == ["en>gl Hidden.", "en>gl In the box.", "en>gl Where is it?"]
    assert systems == {tp.DEFAULT_SYSTEM.format(source="English", target="Galician")}


# -- failures, resume -------------------------------------------------------------------------


def test_failures_are_flagged_counted_and_retried_by_a_rerun(tmp_path):
    source = eval_fixtures.write_parquet(tmp_path / "vqa" / "en-00000-of-00001.parquet",
                                         eval_fixtures.vqav2("en", 6))
    out = tmp_path / "vqav2_eu"
    questions = eval_fixtures.QUESTIONS["en"]
    faults = {questions[0]: Fault(status=500, times=2),       # retried, then fine
              questions[1]: Fault(status=500, times=3),       # fails all 3 tries, fine on rerun
              questions[2]: Fault(malformed=True, times=1),   # not retried
              questions[3]: Fault(delay_s=3, times=3)}        # times out 3 times
    translator = Translator(faults)
    with OpenAIStub(translator) as stub:
        first = run_cli.run("translate", *args(stub.url, source, out, "--request_timeout=0.4"))
        asked_first = dict(translator.asked)
        second = translate(stub.url, source, out)
        asked_second = {k: v - asked_first.get(k, 0) for k, v in translator.asked.items()}
    assert first.returncode == 0
    assert first.stderr.strip().splitlines() == [
        "translate: 3 strings failed (http 500: 1, malformed reply: 1, timeout: 1); their rows "
        "keep the source text, flagged 'failed'; run the same command again to retry them"]
    summary = json.loads(first.stdout.splitlines()[-1])
    assert (summary["failed"], summary["failed_by_kind"], summary["flagged"]) == (
        3, {"http 500": 1, "malformed reply": 1, "timeout": 1}, 3)
    assert asked_first[questions[0]] == 3 and asked_first[questions[2]] == 1
    assert {k: v for k, v in asked_second.items() if v} == {
        questions[1]: 1, questions[2]: 1, questions[3]: 1}
    assert (second["failed"], second["flagged"], second["translated"]) == (0, 0, 3)
    rows = read_parquet(out / "data" / "eu-00000-of-00001.parquet")
    assert [r["question"] for r in rows] == [fake(questions[i]) for i in range(6)]


def test_failed_rows_keep_the_source_flagged(tmp_path):
    source = eval_fixtures.write_parquet(tmp_path / "pixmo.parquet", eval_fixtures.pixmo("en", 2))
    out = tmp_path / "pixmo_eu"
    question = eval_fixtures.QUESTIONS["en"][3]
    with OpenAIStub(Translator({question: Fault(status=503)})) as stub:
        result = run_cli.run("translate", *args(stub.url, source, out))
    assert result.returncode == 0, result.stderr
    rows = read_parquet(out / "data" / "eu-00000-of-00001.parquet")
    assert [(r["question"], r["answer"], r["translation_flags"]) for r in rows] == [
        (question, "bai", ["failed:question"]), (question, "Ez", ["failed:question"])]
    flags = read_jsonl(tmp_path / "pixmo_eu.flags.jsonl")
    assert flags[0] == {"row": 1, "id": None, "where": f"{source} row 1", "flags": [
        {"flag": "failed", "field": "question", "source": question, "target": question}]}


def test_kill_9_then_rerun_gives_the_uninterrupted_bytes(tmp_path):
    rows = [{**row, "question": f"Question number {i}: {row['question']}"}
            for i, row in enumerate(eval_fixtures.vqav2("en", 40))]
    source = eval_fixtures.write_parquet(tmp_path / "in" / "en-00000-of-00001.parquet", rows)
    whole, killed = tmp_path / "whole" / "vqav2_eu", tmp_path / "killed" / "vqav2_eu"
    journal = killed.with_name("vqav2_eu.journal.jsonl")
    translator = Translator(delay=0.05)
    with OpenAIStub(translator) as stub:
        common = ("--max_concurrency=2", "--validation_rows=10")
        uninterrupted = run_cli.start("translate", *args(stub.url, source, whole, *common))
        proc = run_cli.start("translate", *args(stub.url, source, killed, *common))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
                not journal.exists() or len(journal.read_text().splitlines()) < 10):
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        done_before = journal.read_text().count("\n") - 1
        assert 9 <= done_before < 43 and not (killed / "data").exists()
        run_cli.assert_ok(run_cli.finish(uninterrupted))
        asked_before = sum(translator.asked.values())
        resumed = translate(stub.url, source, killed, *common)
        asked_again = sum(translator.asked.values()) - asked_before
    assert resumed["from_journal"] == done_before
    assert resumed["translated"] == asked_again == resumed["distinct"] - done_before
    for name in ("vqav2_eu/data/eu-00000-of-00001.parquet", "vqav2_eu.flags.jsonl",
                 "vqav2_eu.items.jsonl"):
        assert (killed.parent / name).read_bytes() == (whole.parent / name).read_bytes(), name
    assert sorted(p.name for p in killed.parent.iterdir()) == [
        "vqav2_eu", "vqav2_eu.flags.jsonl", "vqav2_eu.images", "vqav2_eu.items.jsonl",
        "vqav2_eu.journal.jsonl"]


# -- bad input --------------------------------------------------------------------------------


def bad_inputs(folder: Path) -> dict[str, tuple[Path, dict, str]]:
    """Inputs the tool refuses: name → (input, make_job options, what the error says)."""
    folder.mkdir(exist_ok=True)
    no_answers = eval_fixtures.write_parquet(folder / "q.parquet",
                                             [{"question": "Why?", "image": None}])
    garbage = folder / "broken.parquet"
    garbage.write_bytes(b"PAR1 not really")
    bad_json = folder / "bad.jsonl"
    bad_json.write_text('{"question": "a", "answer": "yes"}\n{"question": \n')
    wrong_type = folder / "wrong.jsonl"
    wrong_type.write_text('{"question": "a", "answer": "yes"}\n{"question": 3, "answer": "no"}\n')
    bad_llava = folder / "llava.json"
    bad_llava.write_text(json.dumps([{"id": "x", "conversations": [
        {"from": "alien", "value": "hi"}]}]))
    return {
        "missing column": (no_answers, {"kind": "vqav2"},
                           f"{no_answers}: no column 'answers' for --kind=vqav2"),
        "unreadable parquet": (garbage, {}, f"{garbage}: not a readable parquet file"),
        "bad JSON": (bad_json, {"kind": "yes_no"}, f"{bad_json} line 2: invalid JSON"),
        "wrong type": (wrong_type, {}, f"{wrong_type} line 2: question holds int"),
        "bad record": (bad_llava, {}, f"{bad_llava} line 1: record 'x': unknown speaker"),
        "split of a file": (no_answers, {"split_name": "test", "fields": ["question"]},
                            "--split=test: --input"),
    }


@pytest.mark.parametrize("name", ["missing column", "unreadable parquet", "bad JSON",
                                  "wrong type", "bad record", "split of a file"])
def test_bad_input_is_named_by_file_and_row(tmp_path, name):
    source, options, message = bad_inputs(tmp_path)[name]
    backend = ServerBackend(ChatClient("http://127.0.0.1:9/v1", "m"),
                            tp.Prompt(tp.language("en"), tp.language("eu")), 64)
    with pytest.raises(ValueError) as raised:
        job = translation.make_job(source, tmp_path / f"out{source.suffix}", tp.language("en"),
                                   tp.language("eu"), checks=Checks("eu", language_check=False),
                                   **options)
        translation.run(job, backend, log=lambda line: None)
    assert message in str(raised.value)


def test_bad_input_fails_in_one_line_naming_it(tmp_path):
    source, _, message = bad_inputs(tmp_path)["missing column"]
    url = "http://127.0.0.1:9/v1"
    results = run_cli.run_all("translate", [
        args(url, source, tmp_path / "o1", "--kind=vqav2"),
        args(url, source, tmp_path / "o2", "--model=ckpt"),
        args(url, source, tmp_path / "o3", "--target=xx")])
    for result, needles in zip(results, [(message,), ("give exactly one model",),
                                         ("--target=xx", "--target_name")], strict=True):
        run_cli.assert_one_line_error(result, "translate", *needles)


def test_a_journal_of_other_settings_is_refused(tmp_path):
    path = tmp_path / "out.journal.jsonl"
    settings = {"source": "en", "target": "eu", "model": "stub-mt"}
    journal = Journal(path, settings)
    journal.add("k1", "bat")
    journal.close()
    with open(path, "a") as f:
        f.write('{"key": "k2", "te')  # a line cut short by a kill
    again = Journal(path, settings)
    assert again.done == {"k1": "bat"}
    again.add("k2", "bi")
    again.close()
    assert Journal(path, settings).done == {"k1": "bat", "k2": "bi"}
    with pytest.raises(ValueError, match="out.journal.jsonl was made with other settings "
                                         "\\(model: 'stub-mt' → 'another'\\); delete it"):
        Journal(path, {**settings, "model": "another"})


# -- the pieces -------------------------------------------------------------------------------


def test_rules_split_placeholders_numbers_and_yes_no():
    rule = (tp.YES_NO["en"], tp.YES_NO["gl"])
    assert split("<image>\nIs it red?", rule) == [Part(KEEP, "<image>\n"),
                                                   Part(MODEL, "Is it red?")]
    assert split(" YES! ", rule) == [Part(KEEP, " "), Part(RULE, "SI!"), Part(KEEP, " ")]
    assert split("No.", rule) == [Part(RULE, "Non.")]
    assert split("No way", rule) == [Part(MODEL, "No way")]
    assert split("3.5 <image> 10:30", rule) == [Part(KEEP, "3.5"), Part(KEEP, " <image> "),
                                                Part(KEEP, "10:30")]
    assert split("yes") == [Part(MODEL, "yes")]


def test_languages_and_prompts(tmp_path):
    assert tp.language("Galician") == tp.Language("gl", "Galician")
    assert tp.language("oc", "Occitan") == tp.Language("oc", "Occitan")
    with pytest.raises(ValueError, match="--target_name"):
        tp.language("Occitan")
    assert tp.yes_no_words(tp.language("cy")) == ("ie", "na")
    assert tp.yes_no_words(tp.language("oc", "Occitan")) is None
    assert tp.yes_no_words(tp.language("eu"), "model") is None
    assert tp.yes_no_words(tp.language("eu"), "ba, ez") == ("ba", "ez")
    bad = tmp_path / "bad.txt"
    for text, needle in (("{text} {lang}", "unknown placeholder"), ("no text", "needs {text}"),
                         ("{text", "literal brace")):
        bad.write_text(text)
        with pytest.raises(ValueError, match=needle):
            tp.read_template(bad)
    prompt = tp.Prompt(tp.language("en"), tp.language("eu"),
                       examples=(tp.Example("red", "gorria"),))
    assert prompt.single("blue") == (
        tp.DEFAULT_SYSTEM.format(source="English", target="Basque")
        + "\n\nExamples:\n\nEnglish: red\nBasque: gorria\n\n" + PREFIX + "blue")
    assert prompt.fingerprint() != tp.Prompt(tp.language("en"), tp.language("gl")).fingerprint()


def test_quality_flags():
    checks = Checks("eu")
    source = "A cat is sitting on the table next to 2 cups."
    assert checks(source, "Katu bat dago mahai gainean eserita, 2 kikararen ondoan.") == []
    assert checks(source, source) == ["identical", "language"]
    assert checks(source, "  ") == ["empty"]
    assert checks(source, "Katu bat, 2.") == ["length_ratio"]
    assert checks(source, "Katu bat dago mahai gainean eserita, 3 kikararen ondoan.") == \
        ["numbers"]
    assert checks("<image>\nWhat is it?", "Zer da?") == ["placeholders"]
    assert checks("pizza", "pizza") == []  # one word: names and loanwords stay
    assert not Checks("ast").checks_language  # a language py3langid does not know


# -- the checkpoint backend -------------------------------------------------------------------


@pytest.mark.slow
def test_checkpoint_backend_end_to_end_and_resume(tmp_path):
    from basque_vlm.testing import checkpoints, tiny_models

    tiny_models.save_llava(tmp_path / "hf")
    ckpt = checkpoints.from_llava(tmp_path / "hf", tmp_path / "ckpt")
    llava = llava_records(tmp_path / "in")
    out = tmp_path / "train_eu.json"
    common = [f"--input={llava}", f"--out={out}", "--target=eu", f"--model={ckpt}",
              "--max_new_tokens=8", "--batch_size=2", "--examples=", "--nolanguage_check"]
    first = run_cli.run("translate", *common, "--limit=2")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.splitlines()[-1])
    assert summary["rows"] == 2 and summary["translated"] == summary["distinct"] > 0
    journal = read_jsonl(tmp_path / "train_eu.journal.jsonl")
    assert journal[0]["settings"]["backend"] == "checkpoint"
    assert len(journal) == 1 + summary["distinct"]
    second = run_cli.run("translate", *common)
    assert second.returncode == 0, second.stderr
    resumed = json.loads(second.stdout.splitlines()[-1])
    assert resumed["from_journal"] == summary["distinct"] and resumed["rows"] == 3
    records = json.loads(out.read_text())
    assert [r["id"] for r in records] == ["a", "b", "c"]
    for record in records:
        assert [t["from"] for t in record["conversations"]] == [
            t["from"] for t in json.loads(llava.read_text())[records.index(record)]
            ["conversations"]]
        from_record(record)
    assert records[0]["conversations"][1]["value"].startswith("<image>\n")
    assert records[0]["conversations"][4]["value"] == "Bai"
