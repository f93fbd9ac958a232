"""The pairwise judge against a stub OpenAI-compatible server on 127.0.0.1, lmms-eval's WildVision
protocol on scripted judge replies, and the annotation CSV round trip."""

import csv

import numpy as np
import pytest
from PIL import Image

from basque_vlm.eval import judge, wildvision_lmms
from basque_vlm.runtime.openai_api import ChatClient
from basque_vlm.testing.openai_stub import Fault, OpenAIStub, Request

MODEL_TAG = "MODEL"


def judge_reply(request: Request) -> str | Fault:
    """Replies by the question: "good" → the model's answer wins in both orders; "biased" →
    always [[A>B]]; "tie" → [[A=B]]; "silent" → no verdict; "confused" → two verdicts;
    "broken" → HTTP 500."""
    question = request.text.split("[User request]\n")[1].split("\n")[0]
    model_is_a = request.text.split("[Answer of assistant A]\n")[1].startswith(MODEL_TAG)
    if question == "broken":
        return Fault(status=500)
    return {"good": "[[A>>B]]" if model_is_a else "[[B>>A]]", "biased": "[[A>B]]",
            "tie": "My verdict: [[A=B]]", "silent": "Both are fine.",
            "confused": "[[A>B]] or maybe [[B>A]]"}[question]


@pytest.fixture()
def stub():
    with OpenAIStub(judge_reply) as server:
        yield server


def image() -> Image.Image:
    return Image.fromarray(np.zeros((8, 8, 3), np.uint8))


def test_parse_verdict():
    assert judge.parse_verdict("... so [[B>>A]]") == "B>>A"
    assert judge.parse_verdict("[[ A=B ]] and again [[A=B]]") == "A=B"
    assert judge.parse_verdict("[[A>B]] [[B>A]]") is None
    assert judge.parse_verdict("A>B") is None


def test_http_judge_against_stub(stub, monkeypatch):
    questions = ["good", "good", "biased", "tie", "silent", "confused", "broken"]
    model = [f"{MODEL_TAG} answer {i}" for i in range(len(questions))]
    reference = ["reference answer"] * len(questions)
    monkeypatch.setenv("STUB_JUDGE_KEY", "k")
    http = judge.HttpJudge(ChatClient(stub.url, "stub-judge", api_key_env="STUB_JUDGE_KEY",
                                      timeout=5, max_retries=1, backoff=0.001,
                                      max_concurrency=3))
    judged = judge.judge_pairs(http, questions, [image] * len(questions), model, reference)

    assert [j["score"] for j in judged] == [2, 2, 0, 0, None, None, None]
    # the biased judge prefers position A in both orders: the scores cancel out
    assert judged[2]["verdicts"] == ["A>B", "A>B"]
    result = judge.summarize(judged)
    assert result == {"win_rate": 0.5, "win_rate_tie_adjusted": 0.75, "mean_score": 1.0,
                      "judged": 4, "wins": 2, "ties": 2, "losses": 0, "malformed_verdicts": 6}
    # the broken question, in both orders, after its retry
    assert [(f.kind, f.attempts) for f in http.failures] == [("http 500", 2)] * 2

    first = stub.requests[0]
    assert first.path == "/v1/chat/completions" and first.authorization == "Bearer k"
    assert first.model == "stub-judge" and first.body["temperature"] == 0
    assert first.body["messages"][0] == {"role": "system", "content": judge.INSTRUCTIONS}
    assert [p["type"] for p in first.content] == ["text", "image_url"]
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(image()))


def test_model_as_b_first_then_as_a(stub):
    http = judge.HttpJudge(ChatClient(stub.url + "/chat/completions", "stub", max_retries=0))
    judge.judge_pairs(http, ["good"], [None], [f"{MODEL_TAG} x"], ["ref"])
    texts = [r.text for r in stub.requests]
    assert {t.split("[Answer of assistant B]\n")[1].startswith(MODEL_TAG) for t in texts} == {
        True, False}
    assert all(r.image_bytes == [] for r in stub.requests)


def test_unreachable_judge_counts_malformed():
    http = judge.HttpJudge(ChatClient("http://127.0.0.1:9/v1", "nobody", timeout=1,
                                      max_retries=1, backoff=0.001))
    judged = judge.judge_pairs(http, ["q"], [None], ["a"], ["b"])
    assert judge.summarize(judged)["malformed_verdicts"] == 2
    assert [(f.kind, f.attempts) for f in http.failures] == [("connection", 2)] * 2


# lmms-eval's protocol on scripted replies: (reply, the judgement lmms-eval reads from it)
SCRIPT = [("Mine first... My final verdict is: [[B>>A]]", "Better++"),
          ("[[B>A]]", "Better"),
          ("B is better [[B>A]], as said: [[B>A]]", "Better"),
          ("My final verdict is tie: [[A=B]]", "Tie"),
          ("[[A>B]]", "Worse"),
          ("[[A>>B]]", "Worse++"),
          ("Both answers are fine.", "Unclear"),
          # labels that disagree: the whole reply is read, and "A>B" is looked for first
          ("[[A>B]] or maybe [[B>A]]", "Worse"),
          ("", "Unclear"),  # a failed judge request
          ("Overall B>>A, clearly.", "Better++")]  # no label: the whole reply is read


def test_lmms_protocol_reproduces_lmms_evals_aggregate():
    asked = []

    def scripted(pairs):
        asked.extend(pairs)
        return [reply for reply, _ in SCRIPT]

    n = len(SCRIPT)
    judged = wildvision_lmms.judge_samples(scripted, [f"q{i}" for i in range(n)], [image] * n,
                                           [f"model {i}" for i in range(n)],
                                           [f"reference {i}" for i in range(n)])
    assert [j["judgement"] for j in judged] == [judgement for _, judgement in SCRIPT]
    assert [j["score"] for j in judged] == [2, 1, 1, 0, -1, -2, 0, -1, 0, 2]
    # judged once each, the reference as assistant A, the model as B
    assert [(p.a, p.b) for p in asked] == [(f"reference {i}", f"model {i}") for i in range(n)]
    assert asked[0].instructions == wildvision_lmms.INSTRUCTIONS
    assert asked[0].text().startswith("<|User Prompt|>\nq0\n\n<|The Start of Assistant A's")

    # by hand: 10 samples; Better++ 2, Better 2, Tie 1, Worse 2, Worse++ 1, Unclear 2;
    # scores 2+1+1+0-1-2+0-1+0+2 = 2
    assert wildvision_lmms.summarize(judged) == pytest.approx({
        "win_rate": 0.4, "raw_scores": 0.2, "win_rates": 40.0,
        "judgements_better": 20.0, "judgements_better_plus": 20.0,
        "judgements_worse": 20.0, "judgements_worse_plus": 10.0,
        "judgements_tie": 10.0, "judgements_unclear": 20.0})


def test_lmms_labels_outside_the_five_are_unclear():
    assert wildvision_lmms.read_judgement("[[A>>>B]]") == ("Unclear", 0)
    assert wildvision_lmms.read_judgement("[[B]] so B>A") == ("Unclear", 0)  # the label is read


def test_annotation_csv_round_trip(tmp_path):
    path = tmp_path / "wildvision_eu.annotation.csv"
    judge.export_annotation(path, ["w0", "w1", "w2"], ["q0", "q1", "q2"], [image, None, image],
                            ["model 0", "model 1", "model 2"], ["ref 0", "ref 1", "ref 2"])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["question"] for r in rows] == ["q0", "q1", "q2"]
    assert (tmp_path / rows[0]["image"]).is_file() and rows[1]["image"] == ""
    # annotators prefer the model's answer in item 1, the reference in 2, a tie in 3
    for row in rows:
        model_is_a = row["answer_a"].startswith("model")
        row["verdict"] = {"1": "A>B" if model_is_a else "B>A",
                          "2": "B>>A" if model_is_a else "A>>B", "3": "A=B"}[row["item"]]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, judge.ANNOTATION_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    result = judge.score_annotation(path)
    assert (result["wins"], result["ties"], result["losses"]) == (1, 1, 1)
    assert result["mean_score"] == pytest.approx(-1 / 3)
