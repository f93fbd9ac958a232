"""Small evaluation data files in the released Hugging Face schemas, written at test time.

Formats vary on purpose: parquet with the ``Image`` feature's ``{"bytes", "path"}`` struct,
JSONL and JSON lists with image paths relative to the file, and the paper's releases
(``RELEASES``) as a hub snapshot lays them out: both languages' splits in one folder,
``data/{split}-0000i-of-0000n.parquet``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

FILE_TASKS = ("vqav2_en", "vqav2_eu", "aokvqa_mc_en", "aokvqa_mc_eu", "aokvqa_da_en",
              "pixmo_capqa_en", "pixmo_capqa_eu", "wildvision_en", "wildvision_eu")
QUESTIONS = {"en": ["What is in the image?", "What colour is the cat?", "How many dogs are there?",
                    "Is it raining?", "What is on the table?", "Who is sitting?"],
             "eu": ["Zer dago irudian?", "Zer koloretakoa da katua?", "Zenbat txakur daude?",
                    "Euria ari al du?", "Zer dago mahai gainean?", "Nor dago eserita?"]}
YES_NO = {"en": ["yes", "No", "Yes, it is.", "maybe"],
          "eu": ["bai", "Ez", "Bai, hala da.", "agian"]}


def png(seed: int, size: tuple[int, int] = (30, 40)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def hf_image(seed: int) -> dict:
    return {"bytes": png(seed), "path": f"{seed}.png"}


def write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_json(path: Path, rows: list[dict], image_dir: str = "images") -> Path:
    """``rows`` whose ``image`` is a seed: the PNG goes to ``image_dir/`` beside the file, the
    rows to a JSONL file (``.jsonl``) or a JSON list (``.json``)."""
    (path.parent / image_dir).mkdir(parents=True, exist_ok=True)
    out = []
    for row in rows:
        name = f"{image_dir}/{row['image']}.png"
        (path.parent / name).write_bytes(png(row["image"]))
        out.append({**row, "image": name})
    if path.suffix == ".json":
        path.write_text(json.dumps(out, ensure_ascii=False, indent=1))
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
    return path


def vqav2(lang: str, n: int) -> list[dict]:
    """lmms-lab/VQAv2's schema: ``answers`` as ``{"answer", "answer_confidence", "answer_id"}``."""
    words = ["cat", "dog", "2", "yes", "no", "table"]
    return [{"question_id": 1000 + i, "question": QUESTIONS[lang][i % 6],
             "answers": [{"answer": words[(i + j) % 6], "answer_confidence": "yes",
                          "answer_id": j + 1} for j in range(10)],
             "multiple_choice_answer": words[i % 6], "image": hf_image(i)} for i in range(n)]


def aokvqa(lang: str, n: int) -> list[dict]:
    """HuggingFaceM4/A-OKVQA's schema (image as a seed for ``write_json``)."""
    options = {"en": ["dog", "cat", "hot dog", "bird"], "eu": ["txakurra", "katua", "hegaztia",
                                                               "zaldia"]}[lang]
    return [{"question_id": f"q{i}", "question": QUESTIONS[lang][i % 6],
             "choices": options[i % 2:] + options[:i % 2], "correct_choice_idx": i % 4,
             "direct_answers": ["dog"] * 4 + ["cat"] * 6, "difficult_direct_answer": i % 5 == 4,
             "rationales": ["because"], "image": 100 + i} for i in range(n)]


def pixmo(lang: str, n: int) -> list[dict]:
    return [{"question": QUESTIONS[lang][3], "answer": YES_NO[lang][i % 4],
             "image": hf_image(200 + i)} for i in range(n)]


def wildvision(lang: str, n: int) -> list[dict]:
    """lmms-lab's WildVision-Bench: ``instruction``, the reference model's column."""
    return [{"question_id": f"w{i}", "instruction": QUESTIONS[lang][i % 6] + " Describe it.",
             "claude-3-sonnet-20240229": "A cat sits on a table.", "image": 300 + i}
            for i in range(n)]


def write_all(data_dir: Path, n: int = 6) -> Path:
    """Fixture files for every file-based task under ``data_dir/<task>/``."""
    for lang in ("en", "eu"):
        write_parquet(data_dir / f"vqav2_{lang}" / f"{lang}-00000-of-00001.parquet",
                      vqav2(lang, n))
        write_json(data_dir / f"aokvqa_mc_{lang}" / "val.jsonl", aokvqa(lang, n))
        write_parquet(data_dir / f"pixmo_capqa_{lang}" / "test.parquet", pixmo(lang, n))
        write_json(data_dir / f"wildvision_{lang}" / "test500.json",
                   wildvision(lang, max(2, n // 2)))
    write_json(data_dir / "aokvqa_da_en" / "val.jsonl", aokvqa("en", n))
    return data_dir


# -- the paper's releases, as `hf download REPO --repo-type dataset --local-dir DIR` writes them


def vqa_v2_eu(n: int) -> dict[str, list[dict]]:
    """lukasArana/vqa-v2-eu: the same questions (same ids and images) in ``en`` and ``eu``."""
    return {lang: vqav2(lang, n) for lang in ("en", "eu")}


def a_ok_vqa_eu(n: int) -> dict[str, list[dict]]:
    """lukasArana/A-OK-VQA-eu: ``image``, ``question``, ``choices`` (a string: the Python literal
    of the list), ``correct_choice_idx`` (a string), ``question_id``; no direct answers. Its
    ``en`` split is longer than ``eu`` (2,501 and 2,499 rows): here ``n + 1`` and ``n - 1``."""
    def release(row: dict) -> dict:
        return {"image": hf_image(row["image"]), "question": row["question"],
                "choices": str(row["choices"]),
                "correct_choice_idx": str(row["correct_choice_idx"]),
                "question_id": row["question_id"]}

    return {"en": [release(r) for r in aokvqa("en", n + 1)],
            "eu": [release(r) for r in aokvqa("eu", n - 1)]}


def pixmo_cap_qa_eu(n: int) -> dict[str, list[dict]]:
    """lukasArana/Pixmo-cap-qa-eu: ``image``, ``question``, ``answer`` (yes/no, bai/ez)."""
    return {lang: [{"image": r["image"], "question": r["question"], "answer": r["answer"]}
                   for r in pixmo(lang, n)] for lang in ("en", "eu")}


# repo → (its rows by split, the Basque and English tasks it serves, files per split)
RELEASES = {
    "lukasArana/vqa-v2-eu": (vqa_v2_eu, ("vqav2_eu", "vqav2_en"), 2),
    "lukasArana/A-OK-VQA-eu": (a_ok_vqa_eu, ("aokvqa_mc_eu", "aokvqa_mc_en"), 1),
    "lukasArana/Pixmo-cap-qa-eu": (pixmo_cap_qa_eu, ("pixmo_capqa_eu", "pixmo_capqa_en"), 1),
}


def write_snapshot(folder: Path, splits: dict[str, list[dict]], shards: int = 1) -> Path:
    """``splits`` as a hub snapshot: each split in ``shards`` parquet files
    ``data/{split}-0000i-of-0000n.parquet``, the card and the download cache beside them."""
    cache = folder / ".cache" / "huggingface" / "download" / "data"
    cache.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        size = -(-len(rows) // shards)
        for i in range(shards):
            name = f"{split}-{i:05d}-of-{shards:05d}.parquet"
            write_parquet(folder / "data" / name, rows[i * size:(i + 1) * size])
            (cache / f"{name}.metadata").write_text("0\n0\n0\n")
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n"
                                      + "".join(f"  - split: {s}\n    path: data/{s}-*\n"
                                                for s in splits) + "---\n")
    return folder


def write_releases(data_dir: Path, n: int = 4) -> Path:
    """Each of ``RELEASES`` downloaded once, into its Basque task's folder; its English task's
    folder is a link to the same snapshot (README, "Evaluation data")."""
    for rows, (eu_task, en_task), shards in RELEASES.values():
        write_snapshot(data_dir / eu_task, rows(n), shards)
        (data_dir / en_task).symlink_to(eu_task, target_is_directory=True)
    return data_dir
