"""Shared by the launch/ tests: the scripts run as a user runs them (bash, dry run), the gcloud
commands they should print, and a gcloud that cannot act should one ever run for real."""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
NAME, ZONE, PROJECT = "tpu1", "us-east5-a", "proj"
TARGET = [f"--name={NAME}", f"--zone={ZONE}", f"--project={PROJECT}"]
REPO = "https://github.com/example/basque_vlm.git"
WORKDIR = "gs://my-bucket/workdirs/llama31_8b_align"
TRAIN = ["python", "-m", "basque_vlm.train", "--config=configs/llama31_8b.py:align",
         f"--workdir={WORKDIR}"]

# Every subprocess sees a gcloud that cannot act, should a command ever run for real: an empty
# configuration (no account), no GCE metadata credentials, the TPU and Compute APIs on a closed
# port.
GCLOUD_CONFIG = tempfile.mkdtemp(prefix="gcloud_noauth_")
atexit.register(shutil.rmtree, GCLOUD_CONFIG, ignore_errors=True)
NO_GCLOUD_ACCESS = {
    "CLOUDSDK_CONFIG": GCLOUD_CONFIG, "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
    "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
    "CLOUDSDK_API_ENDPOINT_OVERRIDES_TPU": "http://127.0.0.1:9/",
    "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": "http://127.0.0.1:9/"}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BVLM_", "CLOUDSDK_", "GOOGLE_"))}
    env.update(NO_GCLOUD_ACCESS)
    env.update(extra)
    return env


def launch(script: str, *args: str, state_dir: Path | None = None, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = clean_env(**({"BVLM_LAUNCH_DIR": str(state_dir)} if state_dir else {}), **(env or {}))
    return subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=60)


def dry(script: str, *args: str, state_dir: Path | None = None, notes: bool = False
        ) -> list[str]:
    """The commands a dry run prints (its `# ...` notes too when ``notes``)."""
    r = launch(script, "--dry_run", *args, state_dir=state_dir)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if notes or not line.startswith("#")]


def gcloud(*words: str) -> str:
    return shlex.join(["gcloud", "compute", "tpus", *words])


def ssh(workers: str, command: str, *extra: str) -> str:
    return gcloud("tpu-vm", "ssh", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
                  f"--worker={workers}", f"--command={command}", *extra)


def describe(fmt: str, kind: str = "tpu-vm") -> str:
    return gcloud(kind, "describe", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
                  f"--format={fmt}")


def fetch_code_text() -> str:
    """launch/common.sh's fetch_code on one line, as the scripts send it to the workers."""
    r = subprocess.run(["bash", "-c", f"source {LAUNCH}/common.sh; function_text fetch_code"],
                       capture_output=True, text=True, check=True, env=clean_env())
    return r.stdout.strip()


def bootstrap(commit: str, repo: str = REPO,
              tail: str = "bash launch/worker.sh setup --python=python3.11",
              token: bool = False) -> str:
    fetch = ["fetch_code", "basque_vlm", repo, commit] + [".bvlm_git_token"] * token
    return f"set -euo pipefail; {fetch_code_text()}; {shlex.join(fetch)}; {tail}"


def worker(*words: str) -> str:
    return "cd basque_vlm 2>/dev/null || cd /opt/basque_vlm && bash launch/worker.sh " + \
        shlex.join(words)


def status(run_name: str) -> str:
    return worker("status", f"--run_name={run_name}") + " || echo BVLM_STATUS state=nocode"


def delete_self(grace: int = 1800) -> list[str]:
    """run.sh's flags for worker 0: delete the slice when the run ends."""
    delete = (gcloud("queued-resources", "delete", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
                     "--force", "--quiet", "--async") + " || " +
              gcloud("tpu-vm", "delete", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
                     "--quiet", "--async"))
    return [f"--on_end={delete}", f"--grace={grace}"]


def remote_command(line: str) -> str:
    return next(w for w in shlex.split(line) if w.startswith("--command="))[len("--command="):]


def on_worker(home: Path, command: str, worker_id: int = 0, **env: str
              ) -> subprocess.CompletedProcess:
    """Runs a --command string as gcloud's ssh would: bash, in the login directory."""
    return subprocess.run(["bash", "-c", command], cwd=home, capture_output=True, text=True,
                          timeout=120, env=clean_env(HOME=str(home),
                                                     BVLM_WORKER_ID=str(worker_id), **env))


def git(*args: str, cwd: Path | str = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()


def repo_with_this_launch(path: Path) -> tuple[Path, str]:
    """A clone of this repository whose last commit holds this checkout's launch/ (which may not
    be committed yet): (its path, that commit)."""
    git("clone", "--quiet", str(ROOT), str(path))
    for script in LAUNCH.iterdir():
        shutil.copy2(script, path / "launch" / script.name)
    git("add", "launch", cwd=path)
    git("-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "--quiet",
        "--allow-empty", "-m", "launch/ under test", cwd=path)
    return path, git("rev-parse", "HEAD", cwd=path)


def checkout_in(home: Path, repo: Path, name: str = "basque_vlm") -> Path:
    """A worker's checkout of ``repo`` in ``home``, with this test's Python as its .venv."""
    git("clone", "--quiet", str(repo), str(home / name))
    (home / name / ".venv").symlink_to(Path(sys.executable).parent.parent)
    return home / name
