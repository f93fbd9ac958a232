"""data_stats: the drawn stream's Basque share follows data.basque_ratio, per stage in the paper's
configs; the CLI's JSON line."""

import json
import subprocess
import sys

import pytest

from basque_vlm.data import pipeline, sources, stats
from basque_vlm.testing import eval_fixtures
from data_helpers import REPO, demo_config, load_config


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


def paper_stand_ins(root, stages):
    """Five tiny records per source of the 8B configs' stages (their own paths and kinds),
    prepared with `sources.prepare` under ``root``."""
    images = root / "raw" / "images"
    images.mkdir(parents=True)
    (images / "0.png").write_bytes(eval_fixtures.png(0, (48, 48)))
    for config in stages.values():
        for source in config.data.sources.values():
            lang = source.path.rsplit("_", 1)[1]
            image = source.kind != "text_only"
            records = [{"id": f"{source.path}-{i}", **({"image": "0.png"} if image else {}),
                        "conversations": [
                            {"from": "human", "value": ("<image>\n" if image else "") + "What?"},
                            {"from": "gpt", "value": f"Answer {i} ({lang})."}]}
                       for i in range(5)]
            raw = root / "raw" / f"{source.path}.json"
            raw.write_text(json.dumps(records))
            sources.prepare(raw, images, root / source.path, lang)
    return root


def test_the_paper_stages_draw_their_basque_shares(tmp_path, demo_root):
    stages = {stage: load_config("llama31_8b.py", stage) for stage in ("align", "instruct")}
    root = paper_stand_ins(tmp_path / "data", stages)
    common = [f"--config.data.root={root}", f"--config.data.tokenizer={demo_root / 'tokenizer'}",
              "--config.data.num_workers=0", "--config.data.global_batch_size=50",
              "--num_examples=500"]
    procs = {stage: subprocess.Popen(
        [sys.executable, "-m", "basque_vlm.data_stats",
         f"--config={REPO}/configs/llama31_8b.py:{stage}", *common],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO) for stage in stages}
    summaries = {}
    for stage, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        summaries[stage] = json.loads(out.strip().splitlines()[-1])
    # align: the captions, 80% Basque (the released models' cards)
    assert summaries["align"]["language_counts"] == {"en": 100, "eu": 400}
    assert summaries["align"]["kind_counts"] == {"caption": 500}
    # instruct: 10% text-only, and 20% Basque among the multimodal instructions (the paper's pick)
    instruct = summaries["instruct"]
    assert instruct["kind_counts"] == {"multimodal": 450, "text_only": 50}
    by_lang = {lang: sum(n for name, n in instruct["source_counts"].items()
                         if name.startswith("pixmo") and name.endswith(lang))
               for lang in ("eu", "en")}
    assert by_lang == {"eu": 90, "en": 360}
    assert instruct["dropped"] == {} and summaries["align"]["dropped"] == {}

