"""Every command-line tool handed the malformed inputs a user can hand it: exit 1, one line on
stderr that names the input, no traceback, and no output left behind that looks complete.

The text inputs are ``tests/bad_inputs/``; the binary ones are made here (`Corpus`): a PNG header
of 0×0 pixels and one of 30,000 × 30,000, a tiny LLaVA folder with its safetensors truncated,
parquet tables without the named columns, a checkpoint folder without its ``config.json``. The
tools run concurrently, a few at a time (most of each run is Python start-up)."""

from __future__ import annotations

import dataclasses
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import run_cli
from data_helpers import REPO
from PIL import Image

from basque_vlm.testing import checkpoints, tiny_models

BAD = Path(__file__).parent / "bad_inputs"
CONCURRENCY = 4


def png_header(width: int, height: int) -> bytes:
    """A PNG holding only its header (and an empty image): what a decoder checks first."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) \
        + chunk(b"IEND", b"")


@dataclasses.dataclass
class Corpus:
    """The inputs, in one folder: ``tests/bad_inputs/`` copied, and the binary ones made."""

    root: Path

    @classmethod
    def make(cls, root: Path) -> Corpus:
        shutil.copytree(BAD, root)
        (root / "file").write_text("a file, not a folder\n")
        corpus = cls(root)
        corpus.make_images()
        corpus.make_checkpoints()
        corpus.make_tables()
        return corpus

    def make_images(self) -> None:
        """``images/``: a good PNG and bad ones; ``NAME.json``: one LLaVA record showing each."""
        images = self.root / "images"
        images.mkdir()
        Image.new("RGB", (8, 8), (200, 30, 30)).save(images / "good.png")
        (self.root / "zero.png").write_bytes(png_header(0, 0))
        (self.root / "huge.png").write_bytes(png_header(30_000, 30_000))
        for name in ("not_an_image", "zero", "huge"):
            shutil.copy(self.root / f"{name}.png", images / f"{name}.png")
        for name in ("not_an_image", "zero", "huge", "good"):
            (self.root / f"{name}.json").write_text(
                '[{"id": "r1", "image": "%s.png", "conversations": [{"from": "human", '
                '"value": "<image>\\nZer dago?"}, {"from": "gpt", "value": "Ezer ez."}]}]\n'
                % name)

    def make_checkpoints(self) -> None:
        """``hf/`` (a tiny LLaVA folder) and ``ckpt/`` (its checkpoint), then the broken ones:
        ``hf_truncated/``, ``no_config/`` and one folder per ``config_*.json``."""
        tiny_models.save_llava(self.root / "hf")
        checkpoints.from_llava(self.root / "hf", self.root / "ckpt")
        truncated = shutil.copytree(self.root / "hf", self.root / "hf_truncated")
        for weights in truncated.glob("*.safetensors"):
            weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
        shutil.copytree(self.root / "ckpt", self.root / "no_config")
        (self.root / "no_config" / "config.json").unlink()
        for name in ("config_truncated", "config_wrong_types", "config_unknown_keys"):
            (self.root / name).mkdir()
            shutil.copy(self.root / f"{name}.json", self.root / name / "config.json")

    def make_tables(self) -> None:
        """A parquet table without an image column, and one cut short."""
        pq.write_table(pa.table({"question": ["Zer?"], "answer": ["Bai"]}),
                       self.root / "no_columns.parquet")
        data = (self.root / "no_columns.parquet").read_bytes()
        (self.root / "truncated.parquet").write_bytes(data[:40])

    def __truediv__(self, name: str) -> Path:
        return self.root / name


@dataclasses.dataclass(frozen=True)
class Case:
    """``tool`` run with ``args(corpus, out)``: its stderr line names ``needle(corpus, out)``,
    and nothing is left at ``out``."""

    name: str
    tool: str
    args: Callable[[Corpus, Path], list[str]]
    needle: Callable[[Corpus, Path], str]


def named(file: str) -> Callable[[Corpus, Path], str]:
    return lambda c, out: str(c / file)


def out_named(c: Corpus, out: Path) -> str:
    return str(out)


DEMO = f"--config={REPO}/configs/demo.py"
LLAVA = ["--prompt=hi", "--max_new_tokens=1"]

CASES = [
    # convert
    Case("convert_truncated_safetensors", "convert",
         lambda c, out: [f"--hf_dir={c / 'hf_truncated'}", f"--out={out}"],
         named("hf_truncated")),
    Case("convert_no_config", "convert",
         lambda c, out: [f"--hf_dir={c / 'images'}", f"--out={out}"], named("images")),
    Case("convert_unwritable_out", "convert",
         lambda c, out: [f"--hf_dir={c / 'hf'}", f"--out={c / 'file'}/ckpt"], named("file")),
    # export
    Case("export_checkpoint_without_config", "export",
         lambda c, out: [f"--checkpoint={c / 'no_config'}", f"--out={out}"], named("no_config")),
    Case("export_truncated_config", "export",
         lambda c, out: [f"--checkpoint={c / 'config_truncated'}", f"--out={out}"],
         named("config_truncated")),
    Case("export_config_of_wrong_types", "export",
         lambda c, out: [f"--checkpoint={c / 'config_wrong_types'}", f"--out={out}"],
         named("config_wrong_types")),
    Case("export_config_with_unknown_keys", "export",
         lambda c, out: [f"--checkpoint={c / 'config_unknown_keys'}", f"--out={out}"],
         named("config_unknown_keys")),
    # generate
    *[Case(f"generate_image_{name}", "generate",
           lambda c, out, name=name: [f"--checkpoint={c / 'ckpt'}", *LLAVA,
                                      f"--image={c / name}", f"--output_json={out}"],
           named(name))
      for name in ("not_an_image.png", "zero.png", "huge.png")],
    Case("generate_checkpoint_config_of_wrong_types", "generate",
         lambda c, out: [f"--checkpoint={c / 'config_wrong_types'}", *LLAVA,
                         f"--output_json={out}"], named("config_wrong_types")),
    Case("generate_checkpoint_without_config", "generate",
         lambda c, out: [f"--checkpoint={c / 'no_config'}", *LLAVA, f"--output_json={out}"],
         named("no_config")),
    Case("generate_negative_max_new_tokens", "generate",
         lambda c, out: [f"--checkpoint={c / 'no_config'}", "--prompt=hi",
                         "--max_new_tokens=-3", f"--output_json={out}"],
         lambda c, out: "--max_new_tokens"),
    # train
    Case("train_override_of_wrong_type", "train",
         lambda c, out: [DEMO, f"--workdir={out}", "--config.train.num_steps=many"],
         lambda c, out: "--config.train.num_steps"),
    Case("train_override_of_unknown_key", "train",
         lambda c, out: [DEMO, f"--workdir={out}", "--config.train.num_step=5"],
         lambda c, out: "num_step"),
    Case("train_missing_config_file", "train",
         lambda c, out: [f"--config={c / 'nothing.py'}", f"--workdir={out}"],
         named("nothing.py")),
    Case("train_unwritable_workdir", "train",
         lambda c, out: [DEMO, f"--workdir={c / 'file'}/run", "--config.train.num_steps=1",
                         "--config.eval.tasks="],
         named("file")),
    Case("train_data_root_empty", "train",
         lambda c, out: [DEMO, f"--workdir={out}", f"--config.data.root={c / 'images'}",
                         "--config.eval.tasks="],
         named("images")),
    # evaluate
    Case("evaluate_unknown_task", "evaluate",
         lambda c, out: [f"--checkpoint={c / 'no_config'}", "--tasks=no_such_task",
                         f"--out={out}"], lambda c, out: "no_such_task"),
    Case("evaluate_checkpoint_without_config", "evaluate",
         lambda c, out: [f"--checkpoint={c / 'no_config'}", "--tasks=demo_vqa_en",
                         f"--out={out}"], named("no_config")),
    Case("evaluate_unwritable_out", "evaluate",
         lambda c, out: [f"--checkpoint={c / 'ckpt'}", "--tasks=demo_vqa_en",
                         f"--out={c / 'file'}/results.json"], named("file")),
    # prepare_data
    *[Case(f"prepare_data_{name}", "prepare_data",
           lambda c, out, name=name: [f"--input={c / name}", f"--image_root={c / 'images'}",
                                      f"--out={out}", "--lang=eu"], named(name))
      for name in ("truncated.json", "truncated_line.jsonl", "empty.json", "wrong_types.json",
                   "unknown_keys.json")],
    *[Case(f"prepare_data_{name}", "prepare_data",
           lambda c, out, name=name: [f"--input={c / name}", f"--image_root={c / 'images'}",
                                      f"--out={out}", "--lang=eu",
                                      "--columns=question=question,answer=answer,image=image"],
           named(name))
      for name in ("no_columns.parquet", "truncated.parquet")],
    *[Case(f"prepare_data_image_{name}", "prepare_data",
           lambda c, out, name=name: [f"--input={c / (name + '.json')}",
                                      f"--image_root={c / 'images'}", f"--out={out}",
                                      "--lang=eu"], lambda c, out: "r1")
      for name in ("not_an_image", "zero", "huge")],
    Case("prepare_data_unwritable_out", "prepare_data",
         lambda c, out: [f"--input={c / 'good.json'}", f"--image_root={c / 'images'}",
                         f"--out={c / 'file'}/out", "--lang=eu"],
         named("file")),
    # data_stats
    Case("data_stats_override_of_wrong_type", "data_stats",
         lambda c, out: [DEMO, "--config.data.basque_ratio=most"],
         lambda c, out: "--config.data.basque_ratio"),
    Case("data_stats_data_root_empty", "data_stats",
         lambda c, out: [DEMO, f"--config.data.root={c / 'images'}", "--num_examples=2"],
         named("images")),
    # aot
    Case("aot_unknown_architecture", "aot",
         lambda c, out: ["--architecture=llama99_1t", "--notrain", "--topology=v5p-8"],
         lambda c, out: "llama99_1t"),
    Case("aot_unknown_topology", "aot",
         lambda c, out: ["--architecture=llama31_8b", "--notrain", "--topology=v99-3"],
         lambda c, out: "v99-3"),
    # translate
    *[Case(f"translate_{name}", "translate",
           lambda c, out, name=name: [f"--input={c / name}", f"--out={out}", "--target=eu",
                                      "--endpoint=http://127.0.0.1:9/v1", "--model_name=m"],
           named(name))
      for name in ("truncated.json", "truncated_line.jsonl", "empty.json")],
    # validate
    Case("validate_sample_truncated_input", "validate",
         lambda c, out: ["sample", f"--input={c / 'truncated_line.jsonl'}", f"--out={out}",
                         "--annotators=2", "--per_benchmark=2", "--overlap=0.5"],
         named("truncated_line.jsonl")),
    Case("validate_report_not_a_package", "validate",
         lambda c, out: ["report", f"--dir={c / 'images'}"], named("images")),
    # download_images
    Case("download_images_missing_column", "download_images",
         lambda c, out: [f"--input={c / 'no_columns.parquet'}", "--url_column=url",
                         f"--out={out}"], lambda c, out: "url"),
    Case("download_images_truncated_parquet", "download_images",
         lambda c, out: [f"--input={c / 'truncated.parquet'}", "--url_column=url",
                         f"--out={out}"], named("truncated.parquet")),
    # sweep
    Case("sweep_missing_sweep_file", "sweep",
         lambda c, out: ["plan", f"--sweep={c / 'nothing.py'}", f"--root={out}"],
         named("nothing.py")),
    Case("sweep_override_of_wrong_type", "sweep",
         lambda c, out: ["plan", f"--sweep={REPO}/configs/sweep_ratio.py",
                         "--sweep.ratios=half", f"--root={out}"],
         lambda c, out: "sweep.ratios"),
]


def run(tool: str, args: list[str]) -> subprocess.CompletedProcess:
    module = "basque_vlm.sweep" if tool == "sweep" else f"basque_vlm.{tool}"
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=run_cli.TIMEOUT_S)


@pytest.mark.slow  # a process per case, each importing JAX
def test_every_tool_rejects_bad_input_in_one_line(tmp_path, demo_root):
    corpus = Corpus.make(tmp_path / "corpus")
    outs = {case.name: tmp_path / "out" / case.name for case in CASES}
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(lambda case: run(case.tool, case.args(corpus, outs[case.name])),
                                CASES))
    failures = []
    for case, result in zip(CASES, results):
        try:
            run_cli.assert_one_line_error(result, case.tool, case.needle(corpus,
                                                                         outs[case.name]))
            assert result.returncode == 1, result.returncode
            assert "Traceback" not in result.stderr
            out = outs[case.name]
            assert not out.exists() or out.is_dir() and not any(out.iterdir()), out
        except AssertionError as e:
            failures.append(f"{case.name}: {e}")
    assert not failures, "\n".join(failures)
