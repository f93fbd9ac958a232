"""The command-line tools on a ``gs://`` workdir, as on a TPU slice, against the tests' Cloud
Storage server (`gcs_server`): ``train`` stopped by SIGTERM resumes to the same losses as an
uninterrupted run; ``evaluate``, ``export`` and ``generate`` read the workdir there; TensorBoard's
event files and ``metrics.jsonl`` are read back from it."""

import json
import signal
import time

import numpy as np
import pytest
import run_cli
from PIL import Image
from train_helpers import losses, tiny_flags, train_cli

from basque_vlm.runtime import paths
from basque_vlm.store import checkpoint
from basque_vlm.training import metrics, tensorboard

URL = "gs://bucket/workdirs/run"
STEPS = 12


def flags(root):
    return tiny_flags(root, train__num_steps=STEPS, train__checkpoint_every=STEPS)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


def wait_for_steps(url: str, proc, count: int, timeout: float = 200) -> None:
    """Until ``url``'s ``metrics.jsonl`` holds ``count`` records."""
    deadline = time.monotonic() + timeout
    path = paths.path(url) / metrics.METRICS_FILE
    while not (path.exists() and len(path.read_text().splitlines()) >= count):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)


def remote_losses(url: str) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metrics.read(url) if "loss" in r}


@pytest.mark.slow  # four runs' compilation, then three tools'
def test_train_sigterm_resume_and_every_reader_on_gs(gcs, demo_root, tmp_path):
    stopped = train_cli(URL, flags(demo_root))
    reference = train_cli(tmp_path / "reference", flags(demo_root))
    wait_for_steps(URL, stopped, 3)
    stopped.send_signal(signal.SIGTERM)
    out = finish(stopped)
    saved = checkpoint.workdir_steps(URL)
    assert len(saved) == 1 and 3 <= saved[0] < STEPS and \
        f"stopped by SIGTERM: saved step {saved[0]}" in out, (saved, out)
    assert gcs.names(f"workdirs/run/checkpoints/{saved[0]}/commit_success")

    finish(train_cli(URL, flags(demo_root)))
    finish(reference)
    got, want = remote_losses(URL), losses(tmp_path / "reference")
    assert sorted(got) == list(range(1, STEPS + 1))  # each step once
    np.testing.assert_allclose(got[STEPS], want[STEPS], rtol=1e-6)
    assert sorted(tensorboard.read_scalars(f"{URL}/tensorboard")["loss"]) == sorted(got)

    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    procs = [run_cli.start("evaluate", f"--checkpoint={URL}", "--tasks=demo_vqa_en",
                           "--limit=2", "--max_new_tokens=2", f"--out={URL}/eval.json"),
             run_cli.start("export", f"--checkpoint={URL}", f"--out={tmp_path / 'hf'}"),
             run_cli.start("generate", f"--checkpoint={URL}", "--prompt=Zer kolore?",
                           f"--image={image}", "--max_new_tokens=2",
                           f"--output_json={URL}/answer.json")]
    for result in map(run_cli.finish, procs):
        assert result.returncode == 0, result.stderr
    scores = json.loads(paths.path(f"{URL}/eval.json").read_text())
    assert set(scores) == {"demo_vqa_en"}
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "llava"
    assert len(json.loads(paths.path(f"{URL}/answer.json").read_text())["token_ids"]) <= 2
