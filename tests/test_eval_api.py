"""The OpenAI-compatible client and an API model under test, against the stub server on 127.0.0.1:
retries, failures by kind, bounded concurrency; and ``evaluate --endpoint`` end to end on every
task of the evaluation fixtures, judged by a second stub."""

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
import run_cli
from PIL import Image

from basque_vlm.eval import runner, tasks, wildvision_lmms
from basque_vlm.eval.api_model import ApiGenerator
from basque_vlm.eval.taskdata import decode_image
from basque_vlm.runtime.openai_api import ChatClient, Failure
from basque_vlm.testing import eval_fixtures
from basque_vlm.testing.openai_stub import Fault, OpenAIStub, Request, table

FAST = {"backoff": 0.001, "max_retries": 2}


def ask(client: ChatClient, text: str) -> str | Failure:
    return client.complete([{"role": "user", "content": text}], max_tokens=5)


def test_retried_successes_and_failures_by_kind(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    faults = {"flaky": Fault(status=500, times=2), "busy": Fault(status=429, times=1),
              "down": Fault(status=503), "refused": Fault(status=400),
              "garbled": Fault(malformed=True), "slow": Fault(delay_s=30)}
    with OpenAIStub(table({}, faults, default="fine")) as stub:
        client = ChatClient(stub.url, "m", timeout=10, **FAST)
        assert ask(client, "flaky") == "fine" and ask(client, "busy") == "fine"
        down, refused, garbled = (ask(client, t) for t in ("down", "refused", "garbled"))
        slow = ask(ChatClient(stub.url, "m", timeout=0.3, **FAST), "slow")
        tries = {t: max(r.attempt for r in stub.requests if r.text == t) for t in faults}
    assert (down.kind, down.attempts) == ("http 503", 3)
    assert (refused.kind, refused.attempts) == ("http 400", 1)  # a client error: not retried
    assert (garbled.kind, garbled.attempts) == ("malformed reply", 1)
    assert (slow.kind, slow.attempts) == ("timeout", 3)
    assert tries == {"flaky": 3, "busy": 2, "down": 3, "refused": 1, "garbled": 1, "slow": 3}
    assert stub.requests[0].authorization == "Bearer EMPTY"  # no key set: the placeholder
    nobody = ask(ChatClient("http://127.0.0.1:9/v1", "m", **FAST), "hello")
    assert (nobody.kind, nobody.attempts) == ("connection", 3)


def test_the_stub_refuses_what_is_not_a_png_data_url():
    with OpenAIStub(table({}, default="fine")) as stub:
        jpeg = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}
        reply = ChatClient(stub.url, "m", **FAST).complete(
            [{"role": "user", "content": [jpeg, {"type": "text", "text": "hi"}]}])
    assert (reply.kind, reply.attempts) == ("http 400", 1)


def test_bounded_concurrency_in_order_with_progress(monkeypatch):
    monkeypatch.setenv("MY_KEY", "secret")
    texts = [f"q{i}" for i in range(12)]
    late = {t: Fault(delay_s=0.05 * (12 - i)) for i, t in enumerate(texts)}  # the first last
    done = []
    with OpenAIStub(table({t: t.upper() for t in texts}, late)) as stub:
        client = ChatClient(stub.url + "/chat/completions", "m", api_key_env="MY_KEY",
                            max_concurrency=3)
        replies = client.complete_all(([{"role": "user", "content": t}] for t in texts),
                                      done.append, max_tokens=3, temperature=0)
    assert replies == [t.upper() for t in texts]
    assert stub.max_in_flight == 3 and done == list(range(1, 13))
    assert {(r.authorization, r.max_tokens, r.body["temperature"]) for r in stub.requests} == {
        ("Bearer secret", 3, 0)}


def test_api_generator_prompts_image_first_and_marks_failures():
    image = Image.fromarray(np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3))
    with OpenAIStub(table({"with image": "a", "text only": "b"},
                          {"lost": Fault(status=500)})) as stub:
        answers = ApiGenerator(ChatClient(stub.url, "vlm", **FAST))(
            ["with image", "text only", "lost"], [lambda: image, None, None], 7)
    assert answers == ["a", "b", ""]
    assert not isinstance(answers[0], runner.Unanswered)
    assert (answers[2].kind, answers[2].detail.startswith("http 500 after 3 tries")) == (
        "http 500", True)
    first = next(r for r in stub.requests if r.text == "with image")
    assert [p["type"] for p in first.content] == ["image_url", "text"]
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(image))
    assert (first.model, first.max_tokens, first.body["temperature"]) == ("vlm", 7, 0)


# -- evaluate --endpoint, end to end ----------------------------------------------------------

MULTIMODAL = [t for t in eval_fixtures.FILE_TASKS if t in tasks.TASKS]
# (task, sample index) → what the server does first: transient errors end in a reply, permanent
# ones in a failure counted in the results
FAULTS = {("vqav2_en", 0): Fault(status=500, times=2), ("vqav2_eu", 1): Fault(status=429, times=1),
          ("wildvision_eu", 0): Fault(status=503, times=1),
          ("aokvqa_mc_en", 2): Fault(status=500), ("pixmo_capqa_en", 0): Fault(malformed=True)}
FAILED = {("aokvqa_mc_en", 2): "http 500", ("pixmo_capqa_en", 0): "malformed reply"}


def pixels(image: Image.Image) -> str:
    return hashlib.sha1(np.asarray(image.convert("RGB")).tobytes()).hexdigest()


def model_answer(task: tasks.Task, i: int, sample: tasks.Sample) -> str:
    """Right for even samples, wrong for odd ones (WildVision: a good or a poor answer)."""
    right = i % 2 == 0
    if task.family == "wildvision":
        return "A good, detailed answer." if right else "No idea."
    if sample.choices:
        return "ABCD"[sample.target if right else (sample.target + 1) % len(sample.choices)]
    target = sample.target if isinstance(sample.target, str) else sample.target[0]
    return target if right else "zebra"


def judge_reply(request: Request) -> str:
    """lmms-eval style: the model (assistant B) wins when its answer is a good one."""
    answer_b = request.text.split("<|The Start of Assistant B's Answer|>\n")[1]
    return "Fine. [[B>A]]" if answer_b.startswith("A good") else "[[A>>B]]"


@pytest.fixture(scope="module")
def endpoint_run(tmp_path_factory):
    """Every multimodal fixture task answered by a stub model (with injected failures) and
    judged by a stub judge, through the CLI."""
    root = tmp_path_factory.mktemp("endpoint")
    data = eval_fixtures.write_all(root / "data")
    expected, by_request = {}, {}
    for name in MULTIMODAL:
        task = tasks.TASKS[name]
        samples, _ = runner.load_samples(task, data, None)
        for i, sample in enumerate(samples):
            key = (task.prompt(sample, task.lang), pixels(decode_image(sample.image, "")))
            assert key not in by_request  # every request tells its sample
            answer = model_answer(task, i, sample)
            by_request[key] = (name, i, answer)
            expected[name, i] = (sample, "" if (name, i) in FAILED else answer)

    def respond(request: Request) -> str | Fault:
        name, i, answer = by_request[request.text, pixels(request.images[0])]
        fault = FAULTS.get((name, i))
        if fault is not None and (fault.times is None or request.attempt <= fault.times):
            return fault
        return answer

    out = root / "out" / "results.json"
    with OpenAIStub(respond) as model, OpenAIStub(judge_reply) as judge:
        proc = run_cli.run("evaluate", f"--endpoint={model.url}", "--model_name=stub-vlm",
                           f"--tasks={','.join(MULTIMODAL)}", f"--data_dir={data}", f"--out={out}",
                           f"--judge_url={judge.url}", "--judge_model=stub-judge",
                           "--max_concurrency=4", "--retry_backoff=0.001", "--max_retries=2")
    assert proc.returncode == 0, proc.stderr
    return proc, out, expected, by_request, model.requests, judge.requests


def test_endpoint_scores_every_task_with_the_same_scorers(endpoint_run):
    proc, out, expected, _, _, _ = endpoint_run
    results = json.loads(out.read_text())
    assert list(results) == MULTIMODAL
    records = [json.loads(line) for line in
               out.with_name("results.predictions.jsonl").read_text().splitlines()]
    assert len(records) == len(expected)
    for name in MULTIMODAL:
        task, result = tasks.TASKS[name], results[name]
        mine = [r for r in records if r["task"] == name]  # in sample order
        assert [r["prediction"] for r in mine] == [expected[name, i][1] for i in range(len(mine))]
        assert [r.get("failed") for r in mine] == [FAILED.get((name, i)) for i in range(len(mine))]
        assert result["model"] == "stub-vlm" and result["endpoint"].startswith("http://127.0.0.1:")
        assert result["n"] == len(mine)
        if task.score is not None:
            assert result["accuracy"] == pytest.approx(sum(
                task.score(expected[name, i][1], expected[name, i][0])[0]
                for i in range(len(mine))) / len(mine))
            assert result["max_new_tokens"] == task.max_new_tokens
    assert (results["aokvqa_mc_en"]["failed"], results["aokvqa_mc_en"]["failures"]) == (
        1, {"http 500": 1})
    assert (results["pixmo_capqa_en"]["failed"], results["pixmo_capqa_en"]["failures"]) == (
        1, {"malformed reply": 1})
    assert not any("failed" in results[n] for n in MULTIMODAL
                   if n not in ("aokvqa_mc_en", "pixmo_capqa_en"))
    assert "aokvqa_mc_en: 1 of its requests to the model failed" in proc.stderr
    assert proc.stdout.endswith(out.with_name("results.md").read_text())


def test_endpoint_requests_carry_the_task_prompt_image_and_budget(endpoint_run):
    _, _, expected, by_request, requests, _ = endpoint_run
    tries = Counter()
    for request in requests:
        name, i, _ = by_request[request.text, pixels(request.images[0])]
        task = tasks.TASKS[name]
        budget = wildvision_lmms.ANSWER_TOKENS if task.score is None else task.max_new_tokens
        assert (request.model, request.max_tokens, request.body["temperature"]) == (
            "stub-vlm", budget, 0)
        assert [p["type"] for p in request.content] == ["image_url", "text"]
        tries[name, i] += 1
    assert set(tries) == set(expected)
    assert tries["vqav2_en", 0] == 3 and tries["vqav2_eu", 1] == 2
    assert tries["aokvqa_mc_en", 2] == 3 and tries["pixmo_capqa_en", 0] == 1
    assert sum(tries.values()) == len(expected) + 2 + 1 + 1 + 2


def test_endpoint_wildvision_judged_as_lmms_eval(endpoint_run):
    _, out, expected, _, _, judge_requests = endpoint_run
    results = json.loads(out.read_text())
    for name in ("wildvision_en", "wildvision_eu"):
        # three samples: 0 and 2 good answers (Better, +1), 1 a poor one (Worse++, −2)
        assert {k: results[name][k] for k in ("judge", "protocol", "max_new_tokens")} == {
            "judge": "stub-judge", "protocol": "lmms", "max_new_tokens": 4096}
        assert results[name]["raw_scores"] == pytest.approx(0.0)
        assert results[name]["win_rates"] == pytest.approx(200 / 3)
        assert results[name]["win_rate"] == pytest.approx(2 / 3)
        assert results[name]["judgements_worse_plus"] == pytest.approx(100 / 3)
    assert len(judge_requests) == 6  # once per sample
    for request in judge_requests:
        assert request.system == wildvision_lmms.INSTRUCTIONS
        assert (request.model, request.max_tokens) == ("stub-judge", 1024)
        assert [p["type"] for p in request.content] == ["text", "image_url"]
    samples = {(t, i): s for (t, i), (s, _) in expected.items() if t.startswith("wildvision")}
    texts = {r.text for r in judge_requests}
    for (name, i), sample in samples.items():
        answer = expected[name, i][1]
        assert wildvision_lmms.TEMPLATE.format(question=sample.question, a=sample.target,
                                               b=answer) in texts


def test_endpoint_bad_flags_fail_in_one_line(tmp_path):
    both, nameless = run_cli.run_all("evaluate", [
        ["--checkpoint=ckpt", "--endpoint=http://127.0.0.1:9/v1", "--model_name=m",
         "--tasks=vqav2_en", f"--out={tmp_path / 'r.json'}"],
        ["--endpoint=http://127.0.0.1:9/v1", "--tasks=vqav2_en", f"--out={tmp_path / 'r.json'}"]])
    run_cli.assert_one_line_error(both, "evaluate", "exactly one model")
    run_cli.assert_one_line_error(nameless, "evaluate", "--endpoint needs --model_name")
