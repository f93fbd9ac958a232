"""Inputs for `python -m basque_vlm.validate` (translation items with images, evaluate
predictions) and its annotation server, started as a user starts it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import run_cli
from PIL import Image


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def translation_items(folder: Path, benchmark: str, count: int) -> Path:
    """``count`` translation items of ``benchmark``; every other one with an image (two
    distinct image files, so that copies are shared)."""
    (folder / "img").mkdir(exist_ok=True)
    for colour in ("red", "blue"):
        Image.new("RGB", (24, 16), colour).save(folder / "img" / f"{colour}.png")
    return write_jsonl(folder / f"{benchmark}.items.jsonl", [
        {"benchmark": benchmark, "id": f"q{i}", "field": "question",
         "source": f"How many things are there, {i}?", "target": f"Zenbat gauza daude, {i}?",
         "image": f"img/{('red', 'blue')[i % 4 // 2]}.png" if i % 2 == 0 else None}
        for i in range(count)])


def predictions(folder: Path, task: str, count: int) -> Path:
    """``count`` records as ``evaluate`` writes them to ``OUT_STEM.predictions.jsonl``."""
    return write_jsonl(folder / f"{task}.predictions.jsonl", [
        {"task": task, "index": i, "id": f"s{i}", "prompt": "Zenbat zirkulu daude irudian?",
         "prediction": str(i % 3), "references": ["2", "bi"], "score": float(i % 3 == 2)}
        for i in range(count)])


class Server:
    """``validate serve --port=0`` in a subprocess; ``url`` from its first stdout line."""

    def __init__(self, root: Path, annotator: str):
        self.proc = run_cli.start("validate", "serve", f"--dir={root}",
                                  f"--annotator={annotator}", "--port=0")
        line = self.proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if match is None:
            self.proc.kill()
            raise AssertionError(f"no URL in {line!r}; stderr: {self.proc.stderr.read()}")
        self.url = match.group(1)
        self.first_line = line

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.load(response)

    def post(self, path: str, body: Any, content_type: str = "application/json"
             ) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(),
                                         {"Content-Type": content_type}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def answer(self, key: str, verdict: str, correction: str = "", comment: str = ""
               ) -> dict[str, Any]:
        status, body = self.post("api/answer", {"key": key, "verdict": verdict,
                                                "correction": correction, "comment": comment})
        assert status == 200, body
        return body

    def kill(self) -> None:
        """``kill -9``: no chance to clean up."""
        self.proc.kill()
        self.proc.communicate(timeout=10)

    def stop(self) -> subprocess.CompletedProcess:
        """Ctrl-C."""
        self.proc.send_signal(signal.SIGINT)
        return run_cli.finish(self.proc)
