"""Local lm-evaluation-harness tasks for the tests: task YAMLs over JSONL files written at test
time, which lm-eval reads with the ``datasets`` JSON loader (no network).

    local_mc_eu, local_mc_en   multiple choice (acc, acc_norm), tagged ``local_mc_tasks``
    local_mc                   a group of the two, averaged by size
    local_gen_en               generate_until (stops at "." or after 6 tokens; exact_match)
    local_rolling_eu           loglikelihood_rolling (word and byte perplexity, bits per byte)
"""

from __future__ import annotations

import json
from pathlib import Path

MC = {
    "eu": [("Zer dago irudian?", ["Katu bat", "Txakur bat", "Paris"], 0),
           ("Euskal Herriko hiriburua ez da", [" Paris", " bat", " bi hiru"], 0),
           ("Bai ala ez?", [" Bai", " ez", " hiru"], 1)],
    "en": [("What is in the image?", ["A cat", "A dog", "Paris"], 0),
           ("The capital of France is", [" Paris", " one", " two three"], 0),
           ("Yes or no?", [" yes", " no", " seven eight"], 1),
           ("one two three", [" four", " five", " ten"], 0)],
}
TEXTS = ["Zer dago irudian? Katu bat dago mahai gainean.",
         "Bai, ez, yes, no, one two three four five six seven eight nine ten.",
         "The capital of France is Paris."]


def _dataset(data: Path, cache: Path) -> str:
    """The YAML lines that read ``data`` as the task's test split."""
    return (f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            f"  cache_dir: {cache}\ntest_split: test\n")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def write_tasks(root: Path) -> Path:
    """The tasks above, their data and a ``datasets`` cache under ``root``; returns the folder
    to give lm-eval as its include path."""
    tasks = root / "tasks"
    tasks.mkdir(parents=True)
    cache = root / "datasets_cache"
    for lang, rows in MC.items():
        data = _jsonl(root / f"mc_{lang}.jsonl", [{"question": q, "choices": c, "answer": a}
                                                  for q, c, a in rows])
        (tasks / f"local_mc_{lang}.yaml").write_text(
            f"task: local_mc_{lang}\ntag: local_mc_tasks\n" + _dataset(data, cache) +
            "output_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
            "doc_to_choice: '{{choices}}'\ndoc_to_target: answer\n"
            "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    (tasks / "local_mc.yaml").write_text(
        "group: local_mc\ntask: [local_mc_eu, local_mc_en]\naggregate_metric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    weight_by_size: true\n")
    data = _jsonl(root / "gen_en.jsonl", [{"question": q, "answer": c[a]}
                                          for q, c, a in MC["en"]])
    (tasks / "local_gen_en.yaml").write_text(
        "task: local_gen_en\n" + _dataset(data, cache) +
        "output_type: generate_until\ndoc_to_text: '{{question}}'\ndoc_to_target: answer\n"
        "generation_kwargs:\n  until: ['.']\n  max_gen_toks: 6\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n")
    data = _jsonl(root / "text_eu.jsonl", [{"text": t} for t in TEXTS])
    (tasks / "local_rolling_eu.yaml").write_text(
        "task: local_rolling_eu\n" + _dataset(data, cache) +
        "output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n"
        "  - metric: bits_per_byte\n")
    return tasks
