"""Training input pipeline throughput: prepared ArrayRecord data → padded batches, on this machine.

Realistic samples: a 640×480 photo-like JPEG (the same generator as ``image_preprocess.py``), CLIP
preprocessing to 336×336 (576 image tokens), a question and a long answer (≈1,000 tokens in all),
Basque and English sources mixed 50/50, global batches of 32 padded to length buckets. Measures the
full pipeline (read, mix, render + tokenize, decode, preprocess, batch) with its background work in
threads or in Grain worker processes, and each stage alone on one core. The last stdout line is
JSON.

    python benchmarks/data_pipeline.py [--samples=1024] [--batch_size=32]
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags
from image_preprocess import photo_like_jpeg

from basque_vlm.data import mixture, pipeline, sources
from basque_vlm.data.chat import collate
from basque_vlm.data.image import open_image, preprocess
from basque_vlm.demo import synthetic
from basque_vlm.runtime import cli

flags.DEFINE_integer("samples", 1024, "samples per timed pipeline run")
flags.DEFINE_integer("batch_size", 32, "global batch size")
flags.DEFINE_integer("records", 256, "records per language")
FLAGS = flags.FLAGS

CONFIGS = {"threads_1": dict(num_workers=0, num_threads=1),
           "threads_2": dict(num_workers=0, num_threads=2),
           "workers_2": dict(num_workers=2, num_threads=1)}


def words(rng: np.random.Generator, count: int) -> str:
    syllables = ["ba", "ko", "tze", "ra", "gin", "eta", "the", "in", "ter", "ment", "al", "zu",
                 "ka", "ri", "on", "ly", "sta", "ur", "be", "go"]
    return " ".join("".join(rng.choice(syllables, rng.integers(1, 4))) for _ in range(count))


def make_data(root: Path) -> dict[str, float]:
    """JPEGs, LLaVA JSON per language, a tokenizer, and the prepared datasets; prepare's rate."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    jpeg = photo_like_jpeg()
    texts = []
    for lang in ("eu", "en"):
        records = []
        for i in range(FLAGS.records):
            (root / "images" / f"{lang}{i}.jpg").write_bytes(jpeg)
            question, answer = words(rng, rng.integers(8, 20)), words(rng, rng.integers(100, 250))
            texts += [question, answer]
            records.append({"id": f"{lang}{i}", "image": f"{lang}{i}.jpg", "conversations": [
                {"from": "human", "value": f"<image>\n{question}?"},
                {"from": "gpt", "value": f"{answer}."}]})
        (root / f"{lang}.json").write_text(json.dumps(records))
    synthetic.write_tokenizer(root / "tokenizer", texts, vocab_size=8192, image_size=336)
    start = time.perf_counter()
    for lang in ("eu", "en"):
        sources.prepare(root / f"{lang}.json", root / "images", root / lang, lang)
    return {"prepare_records_per_s": 2 * FLAGS.records / (time.perf_counter() - start)}


def data_config(root: Path, **overrides) -> dict:
    return {"root": str(root), "tokenizer": "tokenizer", "tokens_per_image": 576,
            "sources": {"bench_eu": {"path": "eu"}, "bench_en": {"path": "en"}},
            "basque_ratio": 0.5, "max_length": 2048, "length_buckets": (1024, 1536),
            "max_images": 1, "global_batch_size": FLAGS.batch_size, "seed": 0, "prefetch": 4,
            **overrides}


def cpu_seconds() -> float:
    """User + system time of this process and its finished children (Grain workers)."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pipeline_rate(data: dict) -> tuple[dict[str, float], dict]:
    """Samples/s after the first batch (which pays for start-up), CPU time per sample (counting
    start-up and batches prefetched but not consumed: worker time is only known once they exit),
    and one batch."""
    cpu = cpu_seconds()
    stream = pipeline.build(data)
    first = next(stream)
    steps = max(FLAGS.samples // FLAGS.batch_size, 1)
    start = time.perf_counter()
    for _ in range(steps):
        next(stream)
    rate = steps * FLAGS.batch_size / (time.perf_counter() - start)
    stream.close()
    cpu_ms = 1e3 * (cpu_seconds() - cpu) / ((steps + 1) * FLAGS.batch_size)
    return {"samples_per_s": round(rate, 1), "cpu_ms_per_sample": round(cpu_ms, 2)}, first


def per_sample_ms(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return 1e3 * (time.perf_counter() - start) / len(items)


def stage_costs(data: dict) -> dict[str, float]:
    """Each stage alone, in this process (one core), in ms per sample."""
    n = min(256, 2 * FLAGS.records)
    plan = mixture.plan(data)
    stream = mixture.dataset(plan, 0)
    source = sources.ConversationSource(plan.leaves[0].sources[0].path)
    spec = pipeline.batch_spec(data)
    make_batch = pipeline.MakeBatch(spec)
    renderer = pipeline.load_renderer(spec.tokenizer_dir, spec.tokens_per_image,
                                      spec.max_length)
    records = [stream[k] for k in range(n)]
    images = [open_image(r.images[0]) for r in records[:64]]
    examples = [renderer.render(r.conversation) for r in records]
    batches = [records[i:i + FLAGS.batch_size] for i in range(0, n, FLAGS.batch_size)]
    costs = {
        "read_record": per_sample_ms(lambda i: source[i], range(len(source))),
        "mix_and_read": per_sample_ms(lambda k: stream[k], range(n, 2 * n)),
        "render_tokenize": per_sample_ms(lambda r: renderer.render(r.conversation), records),
        "jpeg_decode": per_sample_ms(lambda r: open_image(r.images[0]), records[:64]),
        "preprocess_336": per_sample_ms(lambda im: preprocess(im, spec.image_spec), images),
        "collate": per_sample_ms(lambda i: collate(examples[i:i + 1], 2048, renderer.pad_id),
                                 range(n)),
    }
    batch_ms = per_sample_ms(make_batch, batches) / FLAGS.batch_size
    costs["make_batch_total"] = batch_ms
    costs["tokens_per_sample"] = float(np.mean([len(e.input_ids) for e in examples]))
    return {k: round(v, 3) for k, v in costs.items()}


def main(argv):
    del argv
    cli.quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result = {"load_average_1m_at_start": os.getloadavg()[0], "cpus": os.cpu_count()}
        result |= make_data(root)
        result["stage_ms_per_sample_one_core"] = stage_costs(data_config(root))
        result["pipeline"] = {}
        for name, overrides in CONFIGS.items():
            result["pipeline"][name], batch = pipeline_rate(data_config(root, **overrides))
            print(f"{name}: {result['pipeline'][name]}", flush=True)
        result["batch_shapes"] = {k: list(v.shape) for k, v in batch.items()}
        result["padding_share"] = round(float(1 - batch["attention_mask"].mean()), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
