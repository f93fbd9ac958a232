"""The mixture: exact low-discrepancy shares, per-leaf epochs, and clear config errors."""

import json
from fractions import Fraction

import numpy as np
import pytest
from data_helpers import demo_config

from basque_vlm.data import mixture, sources


def shares_of(tree, positions, leaf):
    select = mixture.Interleave(tree)
    return np.asarray([select[k][0] == leaf for k in range(positions)], np.int64)


def window_counts(hits, window):
    cumulative = np.concatenate([[0], np.cumsum(hits)])
    return cumulative[window:] - cumulative[:-window]


@pytest.mark.parametrize("ratio", [0.0, 0.2, 0.37, 0.5, 0.999, 1.0])
def test_basque_share_is_exact_over_every_window(ratio):
    r = Fraction(ratio).limit_denominator(1_000_000)
    tree = ((Fraction(1), ((r, 0), (1 - r, 1))),) if 0 < ratio < 1 else \
        ((Fraction(1), ((Fraction(1), 0 if ratio else 1),)),)
    hits = shares_of(tree, 20_000, 0)
    counts = window_counts(hits, 2000)
    assert np.abs(counts - 2000 * ratio).max() <= 1
    if ratio in (0.0, 1.0):
        assert hits.sum() == 20_000 * ratio


def test_nested_shares_and_ranks():
    """Text 10%, then multimodal split 20% Basque: each leaf's ranks count up 0, 1, 2, ..."""
    tree = ((Fraction(1, 10), 0),
            (Fraction(9, 10), ((Fraction(1, 5), 1), (Fraction(4, 5), 2))))
    select = mixture.Interleave(tree)
    picks = [select[k] for k in range(10_000)]
    for leaf in range(3):
        ranks = [rank for l, rank in picks if l == leaf]
        assert ranks == list(range(len(ranks)))
    leaves = np.asarray([l for l, _ in picks])
    assert np.abs(window_counts(leaves == 0, 2000) - 200).max() <= 1
    multimodal = leaves[leaves > 0]
    assert np.abs(window_counts(multimodal == 1, 2000) - 400).max() <= 1


def test_plan_and_leaf_epochs(demo_root):
    data = demo_config(demo_root, basque_ratio=0.25).data
    plan = mixture.plan(data)
    assert [(leaf.kind, leaf.lang) for leaf in plan.leaves] == [
        ("multimodal", "eu"), ("multimodal", "en"), ("caption", "eu"), ("caption", "en")]
    assert plan.source_kinds == {"demo_vqa_eu": "multimodal", "demo_vqa_en": "multimodal",
                                 "demo_caption_eu": "caption", "demo_caption_en": "caption"}
    size = plan.leaves[0].sources[0].size
    leaf = mixture._leaf_dataset(plan.leaves[0], seed=7)
    first = [leaf[i].conversation.id for i in range(size)]
    second = [leaf[size + i].conversation.id for i in range(size)]
    assert sorted(first) == sorted(second) and len(set(first)) == size  # each record once
    assert first != second  # reshuffled each epoch
    assert all(leaf[i].source == "demo_vqa_eu" and leaf[i].conversation.lang == "eu"
               for i in range(20))

    stream = mixture.dataset(plan, seed=0)
    again = mixture.dataset(mixture.plan(data), seed=0)
    langs = [stream[k].conversation.lang for k in range(400)]
    assert langs.count("eu") == 100
    assert [stream[k].conversation.id for k in range(50)] == \
           [again[k].conversation.id for k in range(50)]
    other_seed = mixture.dataset(plan, seed=1)
    assert [stream[k].conversation.id for k in range(50)] != \
           [other_seed[k].conversation.id for k in range(50)]


def test_align_stage_captions(demo_root):
    """caption_ratio=1: the stream is captions only, split by language like the instructions."""
    data = demo_config(demo_root, caption_ratio=1.0, basque_ratio=0.2).data
    for source in data.sources.values():
        source.kind = "caption"
    plan = mixture.plan(data)
    assert [(leaf.kind, leaf.lang) for leaf in plan.leaves] == [("caption", "eu"),
                                                                ("caption", "en")]
    stream = mixture.dataset(plan, seed=0)
    records = [stream[k] for k in range(500)]
    assert {r.kind for r in records} == {"caption"}
    assert sum(r.conversation.lang == "eu" for r in records) == 100


def test_only_english_sources_are_fine_at_ratio_zero(demo_root):
    data = demo_config(demo_root, basque_ratio=0.0).data
    del data.sources["demo_vqa_eu"], data.sources["demo_caption_eu"]
    plan = mixture.plan(data)
    assert [(leaf.kind, leaf.lang) for leaf in plan.leaves] == [("multimodal", "en"),
                                                                ("caption", "en")]


@pytest.mark.parametrize("key, value", [("basque_ratio", 1.5), ("basque_ratio", -0.1),
                                        ("basque_ratio", "half"), ("text_only_ratio", 2.0)])
def test_ratio_out_of_range(demo_root, key, value):
    data = demo_config(demo_root).data.to_dict()  # a ConfigDict would refuse "half" itself
    data[key] = value
    with pytest.raises(ValueError, match=rf"data\.{key} must be a number in \[0, 1\]"):
        mixture.plan(data)


def test_language_without_source(demo_root):
    data = demo_config(demo_root, basque_ratio=0.2).data
    del data.sources["demo_vqa_eu"]
    with pytest.raises(ValueError, match=r"data\.basque_ratio asks for multimodal samples in "
                                         r"'eu', but data\.sources has no multimodal source "
                                         r"with lang 'eu'"):
        mixture.plan(data)


def test_text_share_without_text_source(demo_root):
    data = demo_config(demo_root, text_only_ratio=0.1).data
    with pytest.raises(ValueError, match=r"data\.text_only_ratio asks for text_only samples"):
        mixture.plan(data)


def test_missing_source(demo_root, tmp_path):
    data = demo_config(demo_root).data
    data.sources.demo_vqa_eu.path = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"data\.sources\.demo_vqa_eu\.path: .*nowhere: not a "
                                         r"prepared dataset"):
        mixture.plan(data)


def test_empty_source(demo_root, tmp_path):
    writer = sources.DatasetWriter(tmp_path / "empty", "empty", 1 << 20)
    writer.finish({"lang": "eu", "source": "none"})
    data = demo_config(demo_root).data
    data.sources.demo_vqa_eu.path = str(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"data\.sources\.demo_vqa_eu\.path: .*empty: the "
                                         r"dataset is empty"):
        mixture.plan(data)


def test_another_target_language(demo_root, tmp_path):
    """``data.target_lang=gl``: ``data.basque_ratio`` is the Galician share; a Basque source is
    then refused."""
    raw = demo_root / "raw"
    records = json.loads((raw / "train_eu.json").read_text())[:50]
    (tmp_path / "gl.json").write_text(json.dumps([{**r, "lang": "gl"} for r in records]))
    sources.prepare(tmp_path / "gl.json", raw / "images", tmp_path / "train_gl", "gl")
    data = demo_config(demo_root, basque_ratio=0.25, caption_ratio=0.0, target_lang="gl").data
    data.sources = {"gl": {"path": str(tmp_path / "train_gl"), "kind": "multimodal"},
                    "en": {"path": "datasets/train_en", "kind": "multimodal"}}
    plan = mixture.plan(data)
    assert sorted(leaf.lang for leaf in plan.leaves) == ["en", "gl"]
    data.sources["eu"] = {"path": "datasets/train_eu", "kind": "multimodal"}
    with pytest.raises(ValueError, match=r"data\.sources\.eu: lang 'eu'; the multimodal "
                                         r"mixture takes \('gl', 'en'\)"):
        mixture.plan(data)
