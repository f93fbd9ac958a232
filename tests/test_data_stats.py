"""data_stats: the drawn stream's Basque share follows data.basque_ratio; the CLI's JSON line."""

import json
import subprocess
import sys

import pytest

from basque_vlm.data import pipeline, stats
from data_helpers import REPO, demo_config


@pytest.mark.parametrize("ratio", [0.0, 0.2, 0.5, 1.0])
def test_basque_share_follows_the_ratio(demo_root, ratio):
    stream = pipeline.build(demo_config(demo_root, basque_ratio=ratio).data)
    result = stats.collect(stream, 4000, stream.source_kinds)
    stream.close()
    counts = result["language_counts"]
    assert sum(counts.values()) == result["num_examples"] == 4000
    assert abs(counts.get("eu", 0) / 4000 - ratio) <= 0.015
    if ratio in (0.0, 1.0):
        assert counts.get("eu", 0) == 4000 * ratio and counts.get("en", 0) == 4000 * (1 - ratio)
    # configs/demo.py: a quarter captions (~20 supervised tokens), the rest questions (~3)
    assert result["kind_counts"] == {"multimodal": 3000, "caption": 1000}
    assert result["dropped"] == {}
    assert 0.1 < result["supervised_share"] < 0.3 and 0 <= result["padding_share"] < 0.5
    assert 25 < result["length_percentiles"]["p50"] <= result["length_percentiles"]["max"] <= 50


def test_cli_prints_the_stats_and_a_json_last_line(demo_root):
    result = subprocess.run(
        [sys.executable, "-m", "basque_vlm.data_stats", f"--config={REPO}/configs/demo.py",
         f"--config.data.root={demo_root}", "--config.data.basque_ratio=0.2",
         "--num_examples=500"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["language_counts"] == {"eu": 100, "en": 400}
    assert any(line.startswith("tokens") and "p90" in line for line in lines[:-1])


def test_cli_bad_ratio_fails_in_one_line(demo_root):
    result = subprocess.run(
        [sys.executable, "-m", "basque_vlm.data_stats", f"--config={REPO}/configs/demo.py",
         f"--config.data.root={demo_root}", "--config.data.basque_ratio=1.5"],
        capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert result.stderr.strip() == ("data_stats: data.basque_ratio must be a number in [0, 1], "
                                     "got 1.5")
