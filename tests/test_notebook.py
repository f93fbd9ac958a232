"""The Colab inference demo (``notebooks/inference_demo.ipynb``) executed with nbclient: on a tiny
random checkpoint, on the demo model it trains itself (its default), and on Python 3.13 (today's
Colab) in a fresh venv where its install cell installs the project; and the library calls behind
it (``basque_vlm.infer.assistant``, ``.hub``).

nbclient, nbformat and ipykernel are test requirements: imported plainly, so that a missing one
fails the tests instead of skipping them.
"""

import ast
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import jax
import nbformat
import numpy as np
import pytest
import torch
from flax import nnx
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell
from PIL import Image

from basque_vlm import generate
from basque_vlm.data.image import open_image
from basque_vlm.hf import hub
from basque_vlm.infer.assistant import Assistant
from basque_vlm.store import checkpoint
from basque_vlm.testing import checkpoints, tiny_models

ROOT = Path(__file__).parents[1]
NOTEBOOK = ROOT / "notebooks" / "inference_demo.ipynb"
NEW = 8
QUESTIONS = ["Zer kolore du zirkuluak?", "What colour is the circle?"]
FOLLOW_UP = "Eta zer forma du objektu urdinak?"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random LLaVA folder, its project checkpoint, the torch model and a tiny image."""
    root = tmp_path_factory.mktemp("notebook")
    torch_model, processor = tiny_models.save_llava(root / "hf", "clip", "default")
    ckpt = checkpoints.from_llava(root / "hf", root / "ckpt")
    image = root / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 45, 3), np.uint8)).save(image)
    return {"root": root, "hf": root / "hf", "ckpt": ckpt, "image": image,
            "torch_model": torch_model, "processor": processor}


def read_notebook() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def cell(nb: nbformat.NotebookNode, cell_id: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.get("id") == cell_id)


def inject(nb: nbformat.NotebookNode, **params) -> None:
    """Sets parameters as papermill would: assignments after the `parameters` cell's own, each
    of a name that cell defines (a misspelt parameter fails here, not silently in the run)."""
    [params_cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    defined = {t.id for node in ast.parse(params_cell.source).body
               if isinstance(node, ast.Assign) for t in node.targets}
    assert set(params) <= defined, f"not parameters of the notebook: {set(params) - defined}"
    params_cell.source += "\n\n# Injected by tests/test_notebook.py\n" + "".join(
        f"{name} = {value!r}\n" for name, value in params.items())


def stdout(c: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in c.outputs
                   if o.output_type == "stream" and o.name == "stdout")


def test_committed_notebook_is_clean():
    nb = read_notebook()
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), \
        "commit the notebook with its outputs cleared"
    assert [c for c in code if "parameters" in c.metadata.get("tags", [])] == [code[0]]
    assert nb.metadata.kernelspec.name == "python3"
    ids = [c.get("id") for c in nb.cells]
    assert len(set(ids)) == len(ids) and None not in ids


def on_tiny(tiny, tmp_path) -> nbformat.NotebookNode:
    """The notebook set to ask the tiny checkpoint, with the test's own last cell: what the
    notebook computed, for the checks."""
    nb = read_notebook()
    inject(nb, CHECKPOINT=str(tiny["ckpt"]), SKIP_DOWNLOAD=True, IMAGE=str(tiny["image"]),
           QUESTIONS=QUESTIONS, CHAT_TURNS=[QUESTIONS[0], FOLLOW_UP], MAX_NEW_TOKENS=NEW,
           CONVERTED_DIR=str(tmp_path / "converted"))
    nb.cells.append(new_code_cell(
        "import json\nprint(json.dumps({'answers': answers, 'turns': chat.turns, "
        "'messages': chat.messages, 'ckpt': str(ckpt)}))", id="test-probe"))
    return nb


def execute(nb: nbformat.NotebookNode, folder: Path) -> None:
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                   resources={"metadata": {"path": str(folder)}}).execute()


def assert_no_errors(nb: nbformat.NotebookNode) -> None:
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, errors


def test_notebook_runs_on_a_tiny_checkpoint(tiny, tmp_path):
    nb = on_tiny(tiny, tmp_path)
    execute(nb, tmp_path)

    assert_no_errors(nb)
    assert "already installed" in stdout(cell(nb, "install"))
    assert f"backend: {jax.default_backend()}" in stdout(cell(nb, "install"))
    assert not (tmp_path / "converted").exists()  # a project checkpoint is used as it is
    # the weights on every device (8 simulated CPU devices here), the model copied to each
    assert f"mesh: {{'data': {jax.device_count()}, 'fsdp': 1, 'tensor': 1}}" in \
        stdout(cell(nb, "load"))
    assert any("image/png" in o.get("data", {}) for o in cell(nb, "image").outputs)
    probe = json.loads(stdout(cell(nb, "test-probe")))
    assert probe["ckpt"] == str(tiny["ckpt"])

    # The questions: printed, non-empty, and the `generate` CLI's answers.
    answers = probe["answers"]
    printed = stdout(cell(nb, "questions"))
    for question in QUESTIONS:
        assert answers[question].strip()
        assert f"Q: {question}\nA: {answers[question]}\n" in printed
        expected = generate.run(str(tiny["ckpt"]), question, str(tiny["image"]), NEW, 0.0, 1.0, 0)
        assert answers[question] == expected["text"]

    # The chat: the first turn is the same question, so the same answer; the follow-up is
    # transformers' greedy answer to the whole conversation, the first answer included.
    (q1, a1), (q2, a2) = probe["turns"]
    assert (q1, a1, q2) == (QUESTIONS[0], answers[QUESTIONS[0]], FOLLOW_UP)
    assert a2.strip()
    assert f"user: {FOLLOW_UP}\nassistant: {a2}\n" in stdout(cell(nb, "chat"))
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q1}]},
        {"role": "assistant", "content": [{"type": "text", "text": a1}]},
        {"role": "user", "content": [{"type": "text", "text": q2}]}]
    assert probe["messages"] == conversation + [
        {"role": "assistant", "content": [{"type": "text", "text": a2}]}]
    assert a2 == transformers_answer(tiny, conversation)


@pytest.mark.slow  # trains the demo model
def test_the_default_trains_the_demo_model_then_reuses_it(demo_root, tmp_path):
    """`CHECKPOINT = "demo"`, the default, downloads nothing: it trains the demo model into
    DEMO_WORKDIR (a few steps here), and a second run uses what is there."""
    workdir = tmp_path / "workdir" / "demo"
    params = dict(DEMO_WORKDIR=str(workdir), DEMO_STEPS=2, QUESTIONS=QUESTIONS[:1],
                  CHAT_TURNS=[FOLLOW_UP], MAX_NEW_TOKENS=3)
    nb = read_notebook()
    assert 'CHECKPOINT = "demo"' in nb.cells[1].source
    inject(nb, **params)
    execute(nb, tmp_path)
    assert_no_errors(nb)
    assert "training the demo model for 2 steps" in stdout(cell(nb, "download"))
    assert checkpoint.workdir_steps(workdir) == [2]
    assert f"Q: {QUESTIONS[0]}\nA: " in stdout(cell(nb, "questions"))

    nb = read_notebook()
    inject(nb, **params)
    execute(nb, tmp_path)
    assert_no_errors(nb)
    assert stdout(cell(nb, "download")) == f"source: {workdir}\n"  # not trained again


def python_313() -> Path:
    found = sorted(Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")).glob(
        "versions/3.13*/bin/python3.13"))
    if not found:
        pytest.skip("no Python 3.13 (pyenv install 3.13)")
    return found[-1]


# Runs in the Python 3.13 venv: executes the notebook (argv 1) in a kernel of that venv, in the
# folder argv 3, and writes it with its outputs to argv 2.
DRIVER = """
import sys
import nbformat
from nbclient import NotebookClient

nb = nbformat.read(sys.argv[1], as_version=4)
try:
    NotebookClient(nb, timeout=1800, kernel_name="python3", allow_errors=False,
                   resources={"metadata": {"path": sys.argv[3]}}).execute()
finally:
    nbformat.write(nb, sys.argv[2])
"""


@pytest.mark.slow
def test_notebook_on_python_3_13_installs_what_it_needs(tiny, tmp_path):
    """Today's Colab runs Python 3.13: in a fresh 3.13 venv holding only the notebook runner, the
    install cell installs the project from this checkout with the pinned versions (no torch),
    and the notebook gives the answers it gives on 3.11. 1.5 minutes here with pip's cache warm,
    3 the first time: most of it pip installing the runtime requirements."""
    venv = tmp_path / "venv313"
    subprocess.run([str(python_313()), "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    runner = ["nbclient==0.11.0", "nbformat==5.11.1", "ipykernel==7.4.0"]
    subprocess.run([str(python), "-m", "pip", "install", "-q", *runner], check=True)

    nb = on_tiny(tiny, tmp_path)
    inject(nb, INSTALL_FROM=str(ROOT), JAX_EXTRA="")
    (tmp_path / "in.ipynb").write_text(nbformat.writes(nb))
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    started = time.perf_counter()
    r = subprocess.run([str(python), str(tmp_path / "driver.py"), str(tmp_path / "in.ipynb"),
                        str(tmp_path / "out.ipynb"), str(tmp_path)], capture_output=True,
                       text=True, env=env, timeout=1800)
    print(f"notebook on 3.13, install included: {time.perf_counter() - started:.0f} s")
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert r.returncode == 0, r.stderr[-3000:] + json.dumps(
        [o for c in out.cells for o in c.get("outputs", []) if o.output_type == "error"])[:3000]
    assert_no_errors(out)
    installed = stdout(cell(out, "install"))
    assert installed.startswith("Python 3.13.") and "already installed" not in installed
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True,
                            check=True).stdout.lower()
    assert "jax==0.10.2" in freeze and "jaxlib==0.10.2" in freeze and "torch" not in freeze
    probe = json.loads(stdout(cell(out, "test-probe")))
    for question in QUESTIONS:
        expected = generate.run(str(tiny["ckpt"]), question, str(tiny["image"]), NEW, 0.0, 1.0,
                                0)
        assert probe["answers"][question] == expected["text"]


def transformers_answer(tiny, conversation: list[dict]) -> str:
    processor = tiny["processor"]
    inputs = processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
        return_tensors="pt", processor_kwargs={"images": [Image.open(tiny["image"])]})
    with torch.no_grad():
        out = tiny["torch_model"].generate(**inputs, do_sample=False, max_new_tokens=NEW)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    eos = checkpoint.load_config(tiny["ckpt"]).eos_token_ids
    new = new[:next((i + 1 for i, t in enumerate(new) if t in eos), len(new))]
    return processor.tokenizer.decode(new, skip_special_tokens=True)


def test_hub_repo_is_taken_from_the_cache_and_imported_once(tiny, tmp_path):
    # A Hub cache as huggingface_hub lays it out; SKIP_DOWNLOAD's path (local_files_only).
    commit = "1" * 40
    repo = tmp_path / "hub" / "models--basque-vlm--tiny-llava"
    shutil.copytree(tiny["hf"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert hub.is_repo_id("basque-vlm/tiny-llava") and not hub.is_repo_id(str(tiny["ckpt"]))
    folder = hub.download("basque-vlm/tiny-llava", cache_dir=tmp_path / "hub",
                          local_files_only=True)
    assert folder == (repo / "snapshots" / commit).resolve()

    logs = []
    ckpt = hub.checkpoint_dir(folder, tmp_path / "converted", log=logs.append)
    assert ckpt.parent == tmp_path / "converted"
    assert ckpt.name.startswith("models--basque-vlm--tiny-llava-")
    assert sorted(p.name for p in ckpt.parent.iterdir()) == [ckpt.name]  # no .partial left
    expected = checkpoint.load_params(tiny["ckpt"])
    jax.tree.map(np.testing.assert_array_equal, checkpoint.load_params(ckpt), expected)
    assert checkpoint.load_config(ckpt) == checkpoint.load_config(tiny["ckpt"])

    logs.clear()
    assert hub.checkpoint_dir(folder, tmp_path / "converted", log=logs.append) == ckpt
    assert logs == [f"{folder} was already imported: {ckpt}"]
    assert hub.checkpoint_dir(tiny["ckpt"], tmp_path / "unused") == tiny["ckpt"]
    with pytest.raises(checkpoint.CheckpointNotFound, match="download it first"):
        hub.checkpoint_dir("basque-vlm/not-downloaded", tmp_path / "unused")
    with pytest.raises(checkpoint.CheckpointNotFound, match="nor in the Hugging Face cache"):
        hub.download("basque-vlm/not-downloaded", cache_dir=tmp_path / "hub",
                     local_files_only=True)
    assert not (tmp_path / "unused").exists()


def test_assistant_text_only_and_images_from_files(tiny, tmp_path):
    assistant = Assistant(tiny["ckpt"], max_new_tokens=NEW)
    text = assistant.answer("What is the capital of France?")
    assert text == generate.run(str(tiny["ckpt"]), "What is the capital of France?", None, NEW,
                                0.0, 1.0, 0)
    chat = assistant.chat()
    first = chat.ask("What is the capital of France?")
    assert first == text["text"]
    chat.ask("Zer moduz?")
    assert chat.messages[:3] == [{"role": "user", "content": "What is the capital of France?"},
                                 {"role": "assistant", "content": first},
                                 {"role": "user", "content": "Zer moduz?"}]
    chat.reset()
    assert chat.messages == []
    image = open_image(tiny["image"])
    assert image.mode == "RGB" and image.size == (45, 30)
    with pytest.raises(FileNotFoundError, match="image file not found"):
        open_image(tmp_path / "missing.png")


def test_assistant_in_bfloat16(tiny):
    """What ``dtype="auto"`` picks on a GPU or TPU, here forced on CPU."""
    assistant = Assistant(tiny["ckpt"], dtype="bfloat16")
    assert "compute bfloat16" in repr(assistant)
    params = jax.tree.leaves(nnx.state(assistant.model, nnx.Param))
    assert {a.dtype for a in params} == {jax.numpy.dtype("bfloat16")}
    result = assistant.answer(QUESTIONS[0], max_new_tokens=2)  # text only: a quicker compile
    assert 1 <= len(result["token_ids"]) <= 2 and isinstance(result["text"], str)
    with pytest.raises(ValueError, match="dtype must be one of"):
        Assistant(tiny["ckpt"], dtype="float16")
