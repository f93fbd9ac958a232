"""`python -m basque_vlm.validate`: drawing the annotation packages from both input shapes
(seeded, overlap items in every package, bad input named by file and line), the annotation
server's JSON API across a ``kill -9``, the CSV round trip, and the report's statistics
against hand computation."""

from __future__ import annotations

import csv
import json
import math
import urllib.request
from pathlib import Path

import pytest
import run_cli
from validate_helpers import Server, predictions, translation_items, write_jsonl

from basque_vlm.datagen import agreement, corrections
from basque_vlm.datagen.annotations import ANSWERS, AnswerStore, Package, make_answer


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def sample(tmp_path: Path, out: str, *flags: str, per_benchmark: int = 10) -> Path:
    inputs = tmp_path / "inputs"
    if not inputs.exists():
        inputs.mkdir()
        translation_items(inputs, "vqav2_eu", 30)
        predictions(inputs, "demo_vqa_eu", 6)
    result = run_cli.run("validate", "sample",
                         f"--input={inputs / 'vqav2_eu.items.jsonl'},"
                         f"{inputs / 'demo_vqa_eu.predictions.jsonl'}",
                         f"--out={tmp_path / out}", f"--per_benchmark={per_benchmark}", *flags)
    run_cli.assert_ok(result)
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["out"] == str(tmp_path / out)
    return tmp_path / out


def test_sample_packages(tmp_path):
    root = sample(tmp_path, "s", "--annotators=4", "--overlap=0.25")
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["annotators"] == ["a1", "a2", "a3", "a4"]
    # 10 of 30 translation items (round(2.5) -> 3 for everyone); all 6 predictions (2 shared)
    assert manifest["benchmarks"] == {
        "vqav2_eu": {"kind": "translation", "available": 30, "sampled": 10, "overlap": 3},
        "demo_vqa_eu": {"kind": "prediction", "available": 6, "sampled": 6, "overlap": 2}}
    drawn = read_jsonl(root / "items.jsonl")
    assert len(drawn) == 16 and len({d["key"] for d in drawn}) == 16
    packages = {n: read_jsonl(root / n / "items.jsonl") for n in manifest["annotators"]}
    keys = {n: [i["key"] for i in items] for n, items in packages.items()}
    for d in drawn:
        holders = [n for n in keys if d["key"] in keys[n]]
        assert holders == (list(keys) if d["overlap"] else d["annotators"])
        assert len(holders) == (4 if d["overlap"] else 1)
    # the 11 other items dealt round-robin: 3, 3, 3, 2
    assert sorted(len(k) - 5 for k in keys.values()) == [2, 3, 3, 3]
    assert [p["items"] for p in manifest["packages"].values()] == [len(k) for k in keys.values()]
    items = {i["key"]: i for items in packages.values() for i in items}
    question = next(i for i in items.values() if i["kind"] == "translation" and i["image"])
    assert question["source"].startswith("How many") and question["text"].startswith("Zenbat")
    holder = next(n for n in keys if question["key"] in keys[n])
    assert (root / holder / question["image"]).read_bytes() == \
        (tmp_path / "inputs" / "img" / f"{('red', 'blue')[int(question['id'][1:]) % 4 // 2]}"
         ".png").read_bytes()
    output = next(i for i in items.values() if i["kind"] == "prediction")
    assert output["references"] == ["2", "bi"] and output["image"] is None
    assert output["source"] == "Zenbat zirkulu daude irudian?"
    record = next(d["record"] for d in drawn if d["key"] == output["key"])
    assert record["prediction"] == output["text"] and record["task"] == "demo_vqa_eu"


def test_sample_is_seeded(tmp_path):
    def drawn(root: Path) -> list:
        return [(d["key"], d["annotators"]) for d in read_jsonl(root / "items.jsonl")]

    first, again, other = (sample(tmp_path, out, *flags) for out, *flags in
                           [("s0",), ("s0b", "--seed=0"), ("s1", "--seed=1")])
    assert drawn(first) == drawn(again) != drawn(other)
    for name in ("a1", "a4"):
        assert (first / name / "items.jsonl").read_text() == \
            (again / name / "items.jsonl").read_text()


def test_sample_names_and_image_root(tmp_path):
    images = tmp_path / "images" / "demo_vqa_eu"
    images.mkdir(parents=True)
    from PIL import Image
    Image.new("RGB", (8, 8), "green").save(images / "s3.jpg")
    preds = predictions(tmp_path, "demo_vqa_eu", 6)
    out = tmp_path / "s"
    result = run_cli.run("validate", "sample", f"--input={preds}", f"--out={out}",
                         "--annotator_names=ana,jon", f"--image_root={tmp_path / 'images'}",
                         "--overlap=1")
    run_cli.assert_ok(result)
    assert "demo_vqa_eu (prediction): 6 of 6 items drawn, 6 for every annotator" in result.stdout
    shown = {i["id"]: i["image"] for i in read_jsonl(out / "jon" / "items.jsonl")}
    assert shown["s3"].startswith("images/") and shown["s3"].endswith(".jpg")
    assert (out / "jon" / shown["s3"]).is_file()
    assert [v for k, v in shown.items() if k != "s3"] == [None] * 5


def test_sample_bad_input(tmp_path):
    ok = {"benchmark": "b", "id": "1", "source": "s", "target": "t", "image": None}
    prediction = {"task": "t", "index": 0, "id": "1", "prompt": "p", "prediction": "x",
                  "references": []}
    files = {
        "notjson": ["{", "x"],
        "shape": [{"question": "q"}],
        "field": [ok, {**ok, "id": "2"}, {**ok, "id": "3", "target": 7}],
        "image": [ok, {**ok, "id": "2", "image": "missing.png"}],
        "mixed": [ok, {**prediction}],
        "again": [ok, {**ok, "source": "other"}],
        "good": [ok],
        "references": [prediction, {**prediction, "id": "2", "references": "x"}],
    }
    paths = {}
    for name, records in files.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                                for r in records))
        paths[name] = path
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    cases = [
        (["--input=" + str(paths["notjson"])], ["notjson.jsonl line 1", "not valid JSON"]),
        (["--input=" + str(paths["shape"])], ["shape.jsonl line 1", "neither"]),
        (["--input=" + str(paths["field"])], ["field.jsonl line 3", "target"]),
        (["--input=" + str(paths["image"])], ["image.jsonl line 2", "missing.png"]),
        (["--input=" + str(paths["mixed"])], ["mixed.jsonl line 2", "translation"]),
        (["--input=" + str(paths["again"])], ["again.jsonl line 2", "b/1", "line 1"]),
        (["--input=" + str(paths["references"])], ["references.jsonl line 2", "references"]),
        (["--input=" + str(tmp_path / "absent.jsonl")], ["absent.jsonl"]),
        (["--input=" + str(paths["good"]), "--overlap=1.5"], ["--overlap"]),
        (["--input=" + str(paths["good"]), "--per_benchmark=0"], ["--per_benchmark"]),
        (["--input=" + str(paths["good"]), "--annotator_names=a,a"], ["distinct"]),
        (["--input=" + str(paths["good"]), "--annotator_names=x/y"], ["x/y"]),
        (["--input=" + str(paths["good"]), "--annotators=3", "--annotator_names=a,b"],
         ["--annotators=3", "2 names"]),
        (["--per_benchmark=5"], ["sample needs --input"]),
    ]
    results = run_cli.run_all("validate", [["sample", f"--out={tmp_path / 'out'}", *args]
                                           for args, _ in cases])
    results.append(run_cli.run("validate", "sample", f"--input={paths['good']}",
                               f"--out={tmp_path / 'full'}"))
    cases.append(([], ["full", "not an empty folder"]))
    for (_, needles), result in zip(cases, results):
        line = run_cli.assert_one_line_error(result, "validate", *needles)
        assert "Traceback" not in result.stderr, line
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_serve_saves_every_answer_across_kill_9(tmp_path):
    root = sample(tmp_path, "s", "--annotators=2", "--overlap=0.5")
    server = Server(root, "a1")
    try:
        assert server.first_line.startswith("a1: 0/")
        items = server.get("api/items")["items"]
        keys = [i["key"] for i in items]
        state = server.get("api/state")
        assert (state["done"], state["total"], state["next"]) == (0, len(items), 0)
        server.answer(keys[0], "reject", "Zenbat gauza?", "too literal")
        server.answer(keys[1], "accept")
        reply = server.answer(keys[0], "accept", comment="on second thought")  # supersedes
        assert (reply["done"], reply["next"]) == (2, 2)
        server.answer(keys[3], "reject")
        assert server.post("api/answer", {"key": "nope", "verdict": "accept"})[0] == 400
        assert server.post("api/answer", {"key": keys[2], "verdict": "maybe"})[0] == 400
        assert server.post("api/answer", {"key": keys[2], "verdict": "accept"},
                           content_type="text/plain")[0] == 415
        busy = run_cli.run("validate", "serve", f"--dir={root}", "--annotator=a2",
                           f"--port={server.url.rstrip('/').rsplit(':', 1)[1]}")
        run_cli.assert_one_line_error(busy, "validate", "cannot serve on --host=127.0.0.1")
        image = next(i["image"] for i in items if i["image"])
        with urllib.request.urlopen(server.url + image) as response:
            assert response.headers["Content-Type"] == "image/png"
            assert response.read() == (root / "a1" / image).read_bytes()
    finally:
        server.kill()
    server = Server(root, "a1")
    try:
        assert server.first_line.startswith(f"a1: 3/{len(keys)} answered")
        state = server.get("api/state")
        assert (state["done"], state["next"]) == (3, 2)  # resumes at the first unanswered
        assert state["answers"][keys[0]]["verdict"] == "accept"
        assert state["answers"][keys[0]]["comment"] == "on second thought"
        assert state["answers"][keys[0]]["correction"] == ""
        for key in keys:
            if key not in state["answers"]:
                server.answer(key, "accept")
        state = server.get("api/state")
        assert (state["done"], state["next"]) == (len(keys), len(keys))
    finally:
        stopped = server.stop()
    assert stopped.returncode == 0 and stopped.stderr == ""
    assert json.loads(stopped.stdout.splitlines()[-1]) == {
        "annotator": "a1", "done": len(keys), "total": len(keys)}
    assert len((root / "a1" / ANSWERS).read_text().splitlines()) == len(keys) + 1  # superseded


def test_answers_cut_short_by_a_crash(tmp_path):
    root = sample(tmp_path, "s", "--annotators=1")
    package = Package.load(root, "a1")
    store = AnswerStore(package)
    first, second = package.items[0].key, package.items[1].key
    store.save(make_answer(first, "accept"))
    with open(root / "a1" / ANSWERS, "a") as f:
        f.write('{"key": "' + second + '", "verd')  # the process died mid-line
    assert Package.load(root, "a1").answers().keys() == {first}
    store = AnswerStore(Package.load(root, "a1"))  # drops the torn line before appending
    store.save(make_answer(second, "reject"))
    assert {k: a.verdict for k, a in Package.load(root, "a1").answers().items()} == {
        first: "accept", second: "reject"}
    path = root / "a1" / ANSWERS
    path.write_text(path.read_text().rstrip("\n"))  # a whole answer, its newline lost
    store = AnswerStore(Package.load(root, "a1"))
    store.save(make_answer(first, "reject"))
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == [
        first, second, first]
    (root / "a1" / ANSWERS).write_text('{"key": "x", "verdict": "accept"}\n')
    with pytest.raises(ValueError, match="answers.jsonl line 1: item 'x' is not in"):
        Package.load(root, "a1").answers()


def test_csv_export_and_import(tmp_path):
    root = sample(tmp_path, "s", "--annotators=2", "--overlap=0.5")
    store = AnswerStore(Package.load(root, "a2"))
    keys = [i.key for i in store.package.items]
    store.save(make_answer(keys[0], "accept"))
    sheet = tmp_path / "a2.csv"
    result = run_cli.run("validate", "serve", f"--dir={root}", "--annotator=a2",
                         f"--export_csv={sheet}")
    run_cli.assert_ok(result)
    assert json.loads(result.stdout.splitlines()[-1])["exported"] == len(keys)
    with open(sheet, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["key"] for r in rows] == keys and rows[0]["verdict"] == "accept"
    assert rows[1]["text"] == store.package.items[1].text
    rows[1].update(verdict="Reject", correction="Zenbat gauza daude?", comment="word order")
    rows[2].update(verdict="accept")

    def write(path: Path, rows: list[dict]) -> Path:
        with open(path, "w", encoding="utf-8-sig", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return path

    bad_verdict = write(tmp_path / "bad.csv", [*rows[:3], {**rows[3], "verdict": "maybe"}])
    no_verdict = write(tmp_path / "bad2.csv", [rows[0], {**rows[1], "verdict": ""}])
    unknown = write(tmp_path / "bad3.csv", [rows[0], rows[1], {**rows[2], "key": "nope/1"}])
    results = run_cli.run_all("validate", [
        ["serve", f"--dir={root}", "--annotator=a2", f"--import_csv={p}"]
        for p in (bad_verdict, no_verdict, unknown, tmp_path / "absent.csv")])
    for result, needles in zip(results, (["bad.csv row 5", "maybe"],
                                         ["bad2.csv row 3", "needs a verdict"],
                                         ["bad3.csv row 4", "nope/1"], ["absent.csv"])):
        run_cli.assert_one_line_error(result, "validate", *needles)
    assert len(Package.load(root, "a2").answers()) == 1  # nothing saved from a bad file
    result = run_cli.run("validate", "serve", f"--dir={root}", "--annotator=a2",
                         f"--import_csv={write(tmp_path / 'good.csv', rows)}")
    run_cli.assert_ok(result)
    assert json.loads(result.stdout.splitlines()[-1])["imported"] == 2  # row 2 is unchanged
    answers = Package.load(root, "a2").answers()
    assert (answers[keys[1]].verdict, answers[keys[1]].correction, answers[keys[1]].via) == (
        "reject", "Zenbat gauza daude?", "csv")
    assert keys[3] not in answers


def test_agreement_by_hand():
    table = [list("AAAA"), list("AAAR"), list("AARR"), list("RRRR"), list("AAAA")]
    # Fleiss: P_i = (sum_j n_ij^2 - 4) / 12 = 1, 1/2, 1/3, 1, 1 -> mean 23/30; category shares
    # p_A = 13/20, p_R = 7/20 -> P_e = (169 + 49) / 400 = 109/200;
    # kappa = (23/30 - 109/200) / (1 - 109/200) = (133/600) / (273/600) = 19/39.
    assert agreement.fleiss_kappa(table) == pytest.approx(19 / 39, abs=1e-12)
    # Krippendorff (nominal), coincidences o_ck = sum_u pairs_u(c, k) / (m_u - 1):
    # o_AR = o_RA = 3/3 + 4/3 = 7/3, n_A = 13, n_R = 7, n = 20;
    # alpha = 1 - (n - 1) * (o_AR + o_RA) / (2 n_A n_R) = 1 - 19 * (14/3) / 182 = 20/39.
    assert agreement.krippendorff_alpha(table) == pytest.approx(20 / 39, abs=1e-12)
    # A sixth item judged by two (A, R) adds o_AR = o_RA = 1 / (2 - 1); one judged by a single
    # annotator pairs with nobody: n_A = 14, n_R = 8, n = 22,
    # alpha = 1 - 21 * (20/3) / (2 * 14 * 8) = 1 - 140/224 = 3/8.
    missing = table + [["A", "R", None, None], [None, "A", None, None]]
    assert agreement.krippendorff_alpha(missing) == pytest.approx(3 / 8, abs=1e-12)
    # agreeing pairs: 6 + 3 + 2 + 6 + 6 of 30; with the sixth item 23 of 31
    assert agreement.observed_agreement(table) == pytest.approx(23 / 30)
    assert agreement.observed_agreement(missing) == pytest.approx(23 / 31)
    assert agreement.fleiss_kappa([list("AAAA")] * 3) is None  # one category throughout
    assert agreement.krippendorff_alpha([list("AA"), ["A", None]]) is None
    assert agreement.krippendorff_alpha([["A", None], [None, "R"]]) is None  # nothing paired


def test_wilson_by_hand():
    z = 1.959963984540054
    # 8 of 10: centre (0.8 + z²/20) / (1 + z²/10), half z / (1 + z²/10) * sqrt(0.016 + z²/400)
    lo, hi = agreement.wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((0.4901624, 0.9433178), abs=1e-6)
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    assert (lo + hi) / 2 == pytest.approx(centre)
    assert agreement.wilson_interval(0, 5) == pytest.approx((0.0, 0.4344825), abs=1e-6)
    assert agreement.wilson_interval(5, 5) == pytest.approx((0.5655175, 1.0), abs=1e-6)
    assert agreement.wilson_interval(0, 0) is None


def test_correction_rule():
    def answers(*votes: tuple[str, str]) -> dict:
        return {f"a{i}": make_answer("k", v, c) for i, (v, c) in enumerate(votes)}

    tie = corrections.resolve("orig", answers(("accept", "X"), ("reject", "X"),
                                              ("accept", ""), ("accept", "orig")))
    assert (tie.text, tie.status, tie.proposals) == ("orig", "tie", {"X": ["a0", "a1"]})
    won = corrections.resolve("orig", answers(("reject", "Y"), ("reject", "Y"), ("accept", ""),
                                              ("reject", "Z")))
    assert (won.text, won.status) == ("Y", "corrected")
    assert corrections.resolve("orig", answers(("accept", ""))).status == "unchanged"
    assert corrections.resolve("orig", {}).status == "unanswered"
    assert corrections.decision(answers(("accept", ""), ("reject", ""))) == "split"


def test_report_by_hand(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    items = translation_items(inputs, "vqav2_eu", 7)
    root = tmp_path / "s"
    # 7 items, round(0.7 * 7) = 5 judged by all four, the other 2 dealt to a1 and a2
    run_cli.assert_ok(run_cli.run("validate", "sample", f"--input={items}", f"--out={root}",
                                  "--per_benchmark=7", "--overlap=0.7"))
    drawn = read_jsonl(root / "items.jsonl")
    shared = [d["key"] for d in drawn if d["overlap"]]
    single = [(d["key"], d["annotators"][0]) for d in drawn if not d["overlap"]]
    assert len(shared) == 5 and [a for _, a in single] == ["a1", "a2"]
    table = ["AAAA", "AAAR", "AARR", "RRRR", "AAAA"]      # the table of test_agreement_by_hand
    fixes = {1: {"a1": "X", "a2": "X"},                   # 2 for X, 2 unchanged: a tie
             2: {"a1": "Y", "a3": "Y", "a4": "Y"}}        # 3 for Y: corrected
    stores = {n: AnswerStore(Package.load(root, n)) for n in ("a1", "a2", "a3", "a4")}
    for i, (key, row) in enumerate(zip(shared, table)):
        for name, vote in zip(stores, row):
            stores[name].save(make_answer(key, "accept" if vote == "A" else "reject",
                                          fixes.get(i, {}).get(name, "")))
    stores["a1"].save(make_answer(single[0][0], "accept", "Z"))
    stores["a2"].save(make_answer(single[1][0], "reject"))

    result = run_cli.run("validate", "report", f"--dir={root}")
    run_cli.assert_ok(result)
    out = root / "report"
    report = json.loads((out / "report.json").read_text())
    overall = report["acceptance"]["all"]
    # 20 judgements of the shared items (13 accepted) + a1's accept + a2's reject
    assert (overall["judgements"], overall["accepted"], overall["unanswered"]) == (22, 14, 0)
    z2 = 1.959963984540054 ** 2
    p, n = 14 / 22, 22
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = math.sqrt(z2) / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    assert overall["rate"] == pytest.approx(14 / 22)
    assert overall["wilson_95"] == pytest.approx([centre - half, centre + half])
    assert report["acceptance"]["by_benchmark"]["vqav2_eu"]["rate"] == pytest.approx(14 / 22)
    a1 = report["acceptance"]["by_annotator"]["a1"]   # A A A R A + accept
    assert (a1["items"], a1["judgements"], a1["accepted"]) == (6, 6, 5)
    a4 = report["acceptance"]["by_annotator"]["a4"]   # A R R R A
    assert (a4["items"], a4["accepted"], a4["rate"]) == (5, 2, 0.4)
    agreed = report["agreement"]["all"]
    assert (agreed["items"], agreed["complete"]) == (5, 5)
    assert agreed["fleiss_kappa"] == pytest.approx(19 / 39)
    assert agreed["krippendorff_alpha"] == pytest.approx(20 / 39)
    assert agreed["observed_agreement"] == pytest.approx(23 / 30)
    assert report["corrections"] == {"file": "corrected.jsonl", "corrected": 2,
                                     "ties": [shared[1]]}
    fixed = {r["validation"]["key"]: r for r in read_jsonl(out / "corrected.jsonl")}
    assert len(fixed) == 7
    assert fixed[shared[2]]["target"] == "Y"
    assert fixed[shared[2]]["validation"]["original"].startswith("Zenbat gauza daude")
    assert fixed[shared[2]]["validation"]["decision"] == "split"
    assert fixed[shared[1]]["validation"]["status"] == "tie"
    assert fixed[shared[1]]["validation"]["proposals"] == {"X": ["a1", "a2"]}
    assert fixed[single[0][0]]["target"] == "Z"
    assert fixed[single[1][0]]["validation"] == {
        "key": single[1][0], "verdicts": {"a2": "reject"}, "decision": "rejected",
        "status": "unchanged"}
    text = (out / "report.md").read_text()
    assert "| vqav2_eu | translation | 7 | 22 | 14 | 63.6% |" in text
    assert "| **all** | 5 | 5 | 76.7% | 0.487 | 0.513 |" in text
    assert (out / "acceptance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["acceptance"] == {"vqav2_eu": pytest.approx(14 / 22)}
    assert summary["corrected"] == 2


def test_report_bad_input(tmp_path):
    root = sample(tmp_path, "s", "--annotators=2")
    write_jsonl(root / "a2" / ANSWERS, [{"key": "vqav2_eu/zzz", "verdict": "accept"}])
    results = run_cli.run_all("validate", [
        ["report", f"--dir={tmp_path}"], ["report", f"--dir={root}"],
        ["serve", f"--dir={root}", "--annotator=a9"], ["report"], ["reprt", f"--dir={root}"]])
    needles = [["no manifest.json"], ["a2/answers.jsonl line 1", "vqav2_eu/zzz"],
               ["annotator 'a9'", "packages: a1, a2"], ["report needs --dir"], ["reprt"]]
    for result, needle in zip(results, needles):
        run_cli.assert_one_line_error(result, "validate", *needle)
    (root / "a2" / ANSWERS).unlink()
    run_cli.assert_one_line_error(run_cli.run("validate", "report", f"--dir={root}"),
                                  "validate", "no answers")
