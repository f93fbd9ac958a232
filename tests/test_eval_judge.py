"""The pairwise judge against a stub OpenAI-compatible server on 127.0.0.1, and the annotation
CSV round trip."""

import csv
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from basque_vlm.eval import judge

MODEL_TAG = "MODEL"


class StubJudge(BaseHTTPRequestHandler):
    """Replies by the question: "good" → the model's answer wins in both orders; "biased" →
    always [[A>B]]; "tie" → [[A=B]]; "silent" → no verdict; "confused" → two verdicts;
    "broken" → HTTP 500."""

    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StubJudge.requests.append({"path": self.path, "body": body,
                                   "auth": self.headers.get("Authorization")})
        text = body["messages"][1]["content"][0]["text"]
        question = text.split("[User request]\n")[1].split("\n")[0]
        model_is_a = text.split("[Answer of assistant A]\n")[1].startswith(MODEL_TAG)
        if question == "broken":
            self.send_error(500)
            return
        reply = {"good": "[[A>>B]]" if model_is_a else "[[B>>A]]", "biased": "[[A>B]]",
                 "tie": "My verdict: [[A=B]]", "silent": "Both are fine.",
                 "confused": "[[A>B]] or maybe [[B>A]]"}[question]
        data = json.dumps({"choices": [{"message": {"role": "assistant",
                                                    "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    StubJudge.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), StubJudge)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def image() -> Image.Image:
    return Image.fromarray(np.zeros((8, 8, 3), np.uint8))


def test_parse_verdict():
    assert judge.parse_verdict("... so [[B>>A]]") == "B>>A"
    assert judge.parse_verdict("[[ A=B ]] and again [[A=B]]") == "A=B"
    assert judge.parse_verdict("[[A>B]] [[B>A]]") is None
    assert judge.parse_verdict("A>B") is None


def test_http_judge_against_stub(server):
    questions = ["good", "good", "biased", "tie", "silent", "confused", "broken"]
    model = [f"{MODEL_TAG} answer {i}" for i in range(len(questions))]
    reference = ["reference answer"] * len(questions)
    http = judge.HttpJudge(server, "stub-judge", api_key="k", timeout=5, retries=2, workers=3)
    judged = judge.judge_pairs(http, questions, [image] * len(questions), model, reference)

    assert [j["score"] for j in judged] == [2, 2, 0, 0, None, None, None]
    # the biased judge prefers position A in both orders: the scores cancel out
    assert judged[2]["verdicts"] == ["A>B", "A>B"]
    result = judge.summarize(judged)
    assert result == {"win_rate": 0.5, "win_rate_tie_adjusted": 0.75, "mean_score": 1.0,
                      "judged": 4, "wins": 2, "ties": 2, "losses": 0, "malformed_verdicts": 6}
    assert http.errors == 2  # the broken question, in both orders, after the retries

    first = StubJudge.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer k"
    body = first["body"]
    assert body["model"] == "stub-judge" and body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": judge.INSTRUCTIONS}
    assert body["messages"][1]["content"][1]["image_url"]["url"].startswith(
        "data:image/png;base64,")


def test_model_as_b_first_then_as_a(server):
    http = judge.HttpJudge(server + "/chat/completions", "stub", retries=1)
    judge.judge_pairs(http, ["good"], [None], [f"{MODEL_TAG} x"], ["ref"])
    texts = [r["body"]["messages"][1]["content"][0]["text"] for r in StubJudge.requests]
    assert {t.split("[Answer of assistant B]\n")[1].startswith(MODEL_TAG) for t in texts} == {
        True, False}
    assert all(len(r["body"]["messages"][1]["content"]) == 1 for r in StubJudge.requests)


def test_unreachable_judge_counts_malformed():
    http = judge.HttpJudge("http://127.0.0.1:9/v1", "nobody", timeout=1, retries=1)
    judged = judge.judge_pairs(http, ["q"], [None], ["a"], ["b"])
    assert judge.summarize(judged)["malformed_verdicts"] == 2 and http.errors == 2


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
