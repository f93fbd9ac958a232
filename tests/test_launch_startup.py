"""launch/: what a slice does by itself, and the checks before it bills.

- submit.sh: a slice whose startup script sets up and runs the command at every boot; the
  script runs here, whole, with what would reach apt, pip, systemd, gcsfuse or Google Cloud
  printed instead (BVLM_DRY_RUN=1);
- the end of a run: worker 0 deletes the slice at once after exit 0, after the grace period after
  a failure (launch/stop.sh cancels it), never after a SIGTERM; recover.sh reads how the run
  ended before it creates anything;
- the slice presets and the fit check (`python -m basque_vlm.aot` on the worker), Python and data
  in the preflight;
- a private repository's token: read once from a file, never echoed nor stored; retries with
  backoff; apt waiting for the dpkg lock.
"""

import base64
import http.server
import os
import re
import shlex
import subprocess
import threading
import time
from functools import partial

import pytest
from launch_helpers import (COMMIT, LAUNCH, NAME, PROJECT, REPO, TARGET, TRAIN, WORKDIR, ZONE,
                            checkout_in, clean_env, delete_self, describe, dry, gcloud, git,
                            launch, on_worker, remote_command, repo_with_this_launch, ssh, worker)

INSTRUCT = ["python", "-m", "basque_vlm.train", "--config=configs/llama31_8b.py:instruct",
            f"--workdir={WORKDIR}"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return repo_with_this_launch(tmp_path_factory.mktemp("repo") / "basque_vlm")


def dry_lines(text: str) -> list[list[str]]:
    """The commands a worker-side dry run printed (`DRY ...`), as words."""
    return [shlex.split(line)[1:] for line in text.splitlines() if line.startswith("DRY ")]


# ----------------------------------------------------------------------- submit.sh, startup

# A command that only prints (its --workdir is where the logs go)
PRINT = ("python", "-c", "print('trained')", f"--workdir={WORKDIR}")


def submit(repo_path, commit, state_dir, *extra, command=PRINT):
    args = [*TARGET, "--accelerator=v6e-8", "--spot", "--queued", f"--repo={repo_path}",
            f"--commit={commit}", "--data=gs://my-bucket/basque_vlm", "--data_mode=gcsfuse",
            "--wheelhouse=gs://my-bucket/wheels", *extra, "--", *command]
    lines = dry("submit.sh", *args, state_dir=state_dir, notes=True)
    return lines, state_dir / NAME / "startup-train.sh"


def test_submit_creates_a_slice_that_runs_by_itself(repo, tmp_path):
    repo_path, commit = repo
    lines, script = submit(repo_path, commit, tmp_path, command=INSTRUCT)
    notes = [line for line in lines if line.startswith("#")]
    commands = [line for line in lines if not line.startswith("#")]
    assert commands == [
        gcloud("queued-resources", "create", NAME, f"--node-id={NAME}", f"--zone={ZONE}",
               f"--project={PROJECT}", "--accelerator-type=v6e-8",
               "--runtime-version=v2-alpha-tpuv6e", "--spot",
               f"--metadata-from-file=startup-script={script}", "--valid-until-duration=24h"),
        describe("value(state.state)", "queued-resources")]
    delete = delete_self()[0].removeprefix("--on_end=")
    assert any(n.startswith("# when the run ends, worker 0 runs") and n.endswith(delete)
               for n in notes)
    assert "# preset for v6e-8 (instruct): --config.train.microbatches=4 (launch/common.sh " \
           "PRESETS)" in notes
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert f"BVLM_COMMIT={commit}\n" in text and "BVLM_TOPOLOGY=v6e-8\n" in text
    assert f"BVLM_COMMAND=({shlex.join(INSTRUCT)} --config.train.microbatches=4)\n" in text
    assert f"--logs_to={WORKDIR}/logs/train" in text


def test_the_startup_script_sets_up_runs_and_ends_the_run(repo, tmp_path):
    """The startup script as every worker runs it at boot, here: the code fetched at the commit,
    the environment from the wheelhouse (built and uploaded the first time), the data mounted
    with caches by a systemd unit, the command run, its logs and end state shipped, the slice
    deleted; at the next boot nothing runs again."""
    repo_path, commit = repo
    _, script = submit(repo_path, commit, tmp_path / "state")
    home = tmp_path / "opt"
    checkout_in(home, repo_path)  # an earlier boot's checkout: fetched, not cloned
    env = clean_env(BVLM_HOME=str(home), BVLM_WORKER_ID="0", BVLM_DRY_RUN="1")
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert git("rev-parse", "HEAD", cwd=home / "basque_vlm") == commit
    runs = home / "basque_vlm_runs" / "train"
    startup = dry_lines((runs / "startup.log").read_text())
    wheel = next(c for c in startup if c[:4] == [".venv/bin/python", "-m", "pip", "wheel"])
    key = next(w for w in wheel if w.startswith("--wheel-dir=")).rsplit("/", 1)[1]
    assert ["gcloud", "storage", "rsync", "--recursive", f"{home}/basque_vlm_wheels/{key}",
            f"gs://my-bucket/wheels/{key}/wheels"] in startup
    assert any(c[:5] == [".venv/bin/python", "-m", "pip", "install", "-q"] and "--no-index" in c
               for c in startup)
    unit = (runs / "startup.log").read_text().split(
        "DRY write /etc/systemd/system/bvlm-data-data-basque_vlm.service:\n")[1]
    assert ("ExecStart=/usr/bin/gcsfuse --foreground --implicit-dirs -o ro -o allow_other "
            "--type-cache-max-size-mb=-1 --stat-cache-max-size-mb=-1 "
            "--kernel-list-cache-ttl-secs=-1 --metadata-cache-ttl-secs=-1 --only-dir basque_vlm "
            "my-bucket /data/basque_vlm") in unit
    assert ["systemctl", "enable", "--now", "bvlm-data-data-basque_vlm.service"] in startup

    log = (runs / "worker-0.log").read_text()
    assert "\ntrained\n" in log and "=== " in log
    logs = f"{WORKDIR}/logs/train"
    shipped = dry_lines(log)
    assert ["gcloud", "storage", "rm", "--quiet", f"{logs}/state"] == shipped[0]
    assert any(c[-1].startswith(f"{logs}/worker-0-") for c in shipped)
    assert any(c[-1].startswith(f"{logs}/startup-0-") for c in shipped)
    assert ["gcloud", "storage", "cp", "--no-user-output-enabled", "-", f"{logs}/state"] in shipped
    assert shipped[-1] == ["bash", "-c", delete_self()[0].removeprefix("--on_end=")]

    again = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    assert "ended with exit 0 on an earlier boot: nothing to do" in again.stdout
    assert (runs / "worker-0.log").read_text() == log


def test_a_startup_that_fails_ends_the_run_as_a_failure(repo, tmp_path):
    repo_path, commit = repo
    _, script = submit(repo_path, commit, tmp_path / "state", "--grace=0",
                       "--data_mode=copy")  # an unknown commit below: nothing can be fetched
    script.write_text(script.read_text().replace(f"BVLM_COMMIT={commit}", f"BVLM_COMMIT={COMMIT}"))
    home = tmp_path / "opt"
    env = clean_env(BVLM_HOME=str(home), BVLM_WORKER_ID="0", BVLM_DRY_RUN="1")
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0
    assert "the startup failed" in r.stdout
    assert ["bash", "-c", delete_self()[0].removeprefix("--on_end=")] in dry_lines(r.stdout)


# --------------------------------------------------------------------------- the end of a run

@pytest.fixture(scope="module")
def worker_home(repo, tmp_path_factory):
    home = tmp_path_factory.mktemp("worker_home")
    checkout_in(home, repo[0])
    return home


def start(home, run_name, code, grace, marker):
    on_end = f"echo deleted > {marker}"
    line = worker("start", f"--run_name={run_name}", f"--on_end={on_end}", f"--grace={grace}",
                  "--", "python", "-c", f"raise SystemExit({code})")
    r = on_worker(home, line)
    assert r.returncode == 0, r.stderr
    return home / "basque_vlm_runs" / run_name / "worker-0.log"


def wait_for(predicate, seconds=30):
    for _ in range(seconds * 10):
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_worker_0_deletes_the_slice_at_once_after_exit_0(worker_home, tmp_path):
    marker = tmp_path / "deleted"
    log = start(worker_home, "done", 0, 600, marker)
    assert wait_for(marker.exists)
    assert "=== " in log.read_text() and "exit 0" in log.read_text()


def test_after_a_failure_the_grace_period_then_the_deletion(worker_home, tmp_path):
    marker = tmp_path / "deleted"
    log = start(worker_home, "failed", 3, 2, marker)
    status = worker("status", "--run_name=failed")
    assert wait_for(lambda: "state=exited code=3" in on_worker(worker_home, status).stdout)
    assert not marker.exists()  # the grace period
    assert wait_for(marker.exists)
    assert "exit 3: in 2 s this runs: echo deleted" in log.read_text()


def test_stop_cancels_the_deletion_in_the_grace_period(worker_home, tmp_path):
    marker = tmp_path / "deleted"
    log = start(worker_home, "cancelled", 3, 600, marker)
    assert wait_for(lambda: "in 600 s this runs" in log.read_text())
    r = on_worker(worker_home, worker("stop", "--run_name=cancelled", "--timeout=20"))
    assert r.stdout == "BVLM_STOPPED worker=0 run=cancelled state=exited code=3\n"
    assert "cancelled by a signal" in log.read_text() and not marker.exists()


def fake_gcloud(tmp_path, answers: dict[str, str]) -> dict[str, str]:
    """A `gcloud` on PATH that answers by the words in its command line, and logs its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cases = "".join(f"  *{shlex.quote(key)}*) echo {shlex.quote(value)} ;;\n"
                    for key, value in answers.items())
    (bin_dir / "gcloud").write_text(f'#!/bin/bash\necho "$*" >> {tmp_path}/calls\n'
                                    f'case "$*" in\n{cases}  *) exit 1 ;;\nesac\n')
    (bin_dir / "gcloud").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize("state, code, said", [("exited:0", 0, "has finished"),
                                               ("exited:1", 1, "failed")])
def test_recover_does_not_bring_back_a_run_that_ended(tmp_path, state, code, said):
    env = fake_gcloud(tmp_path, {"tpu-vm describe": "PREEMPTED", "storage cat": state})
    r = launch("recover.sh", *TARGET, "--accelerator=v5p-8", "--spot", f"--repo={REPO}",
               f"--commit={COMMIT}", "--", *TRAIN, env=env)
    assert r.returncode == code, r.stderr
    assert f"run train {said}" in r.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[:4] for c in calls] == [["compute", "tpus", "tpu-vm", "describe"],
                                              ["storage", "cat", f"{WORKDIR}/logs/train/state"]]


def test_recover_a_submitted_run(repo, tmp_path):
    repo_path, commit = repo
    args = [*TARGET, "--startup", "--queued", "--accelerator=v6e-8", "--spot",
            f"--repo={repo_path}", f"--commit={commit}", "--run_name=instruct", "--", *INSTRUCT]
    lines = dry("recover.sh", *args, state_dir=tmp_path)
    script = tmp_path / NAME / "startup-instruct.sh"
    assert lines == [
        describe("value(state.state)", "queued-resources"),
        f"gcloud storage cat {WORKDIR}/logs/instruct/state",
        gcloud("queued-resources", "delete", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
               "--force", "--quiet"),
        gcloud("queued-resources", "create", NAME, f"--node-id={NAME}", f"--zone={ZONE}",
               f"--project={PROJECT}", "--accelerator-type=v6e-8",
               "--runtime-version=v2-alpha-tpuv6e", "--spot",
               f"--metadata-from-file=startup-script={script}", "--valid-until-duration=24h"),
        describe("value(state.state)", "queued-resources")]
    assert "--config.train.microbatches=4" in script.read_text()
    # a healthy slice whose workers are still setting up: the startup script's job
    r = launch("recover.sh", "--dry_run", *args[:-len(INSTRUCT) - 1], "--assume_state=ACTIVE",
               "--", *INSTRUCT, state_dir=tmp_path)
    assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith(gcloud("tpu-vm", "ssh"))


# -------------------------------------------------------------------------- presets, the fit

@pytest.mark.parametrize("accelerator, config, added", [
    ("v6e-8", "configs/llama31_8b.py:instruct", ["--config.train.microbatches=4"]),
    ("v6e-8", "configs/latxa31_8b.py:align", ["--config.train.microbatches=2"]),
    ("v6e-8", "configs/llama31_8b.py", ["--config.train.microbatches=2"]),  # align by default
    ("v5litepod-16", "configs/llama31_8b.py:instruct", ["--config.train.microbatches=8"]),
    ("v5p-8", "configs/llama31_8b.py:instruct", []),
    ("v5p-32", "configs/llama31_8b.py:instruct", []),
    ("v6e-8", "configs/demo.py", []),
])
def test_the_slice_preset_goes_into_the_train_command(accelerator, config, added):
    command = ["python", "-m", "basque_vlm.train", f"--config={config}", f"--workdir={WORKDIR}"]
    (line,) = dry("run.sh", *TARGET, f"--accelerator={accelerator}", "--keep", "--", *command)
    assert line == ssh("all", worker("start", "--run_name=train", f"--logs_to={WORKDIR}/logs/train",
                                     "--", *command, *added))


def test_the_user_s_own_micro_batches_are_kept():
    command = [*INSTRUCT, "--config.train.microbatches=8"]
    (line,) = dry("run.sh", *TARGET, "--accelerator=v6e-8", "--keep", "--", *command)
    assert remote_command(line).endswith(shlex.join(command))


def test_the_fit_check_compiles_the_command_s_train_step(worker_home):
    """On the worker: `python -m basque_vlm.aot` for the slice with the command's config and
    overrides (and nothing else of the command); a command that is not a train is let through."""
    command = ["python", "-m", "basque_vlm.train", "--config=configs/demo.py",
               "--workdir=/tmp/unused", "--config.train.num_steps=3"]
    fit = worker("fit", "--topology=v5e-8", "--", *command)
    printed = on_worker(worker_home, fit, BVLM_DRY_RUN="1")
    assert dry_lines(printed.stdout) == [[".venv/bin/python", "-m", "basque_vlm.aot",
                                          "--topology=v5e-8", "--nodecode",
                                          "--config=configs/demo.py",
                                          "--config.train.num_steps=3"]]
    real = on_worker(worker_home, fit)
    assert real.returncode == 0, real.stdout + real.stderr
    assert re.search(r"^BVLM_FIT fits=true peak_gib=[0-9.]+ hbm_gib=15\.75 rows=8x1 remat=\w+$",
                     real.stdout, re.M), real.stdout
    skipped = on_worker(worker_home, worker("fit", "--topology=v5e-8", "--", "python", "-m",
                                            "basque_vlm.evaluate", "--config=x"))
    assert skipped.returncode == 0 and skipped.stdout.endswith("BVLM_FIT fits=skipped\n")


def test_preflight_checks_the_fit_on_every_worker():
    lines = dry("preflight.sh", *TARGET, "--accelerator=v6e-8", "--data=gs://my-bucket/bv=/data/x",
                "--", *INSTRUCT)
    assert remote_command(lines[1]) == worker(
        "probe", "--data_dir=/data/x", "--topology=v6e-8", "--", *INSTRUCT,
        "--config.train.microbatches=4")


PROBE = {"worker": "0", "host": "h", "commit": COMMIT, "dirty": "0", "packages": "a" * 16,
         "jax": "0.10.2", "jaxlib": "0.10.2", "libtpu": "0.0.42.1", "python": "3.11.7",
         "tpu_holders": "-", "runs": "-", "py_procs": "0", "data_missing": "-", "fit": "-"}


def verdict(tmp_path, *answers):
    folder = tmp_path / f"answers{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    for i, fields in enumerate(answers):
        line = "BVLM_PROBE " + " ".join(f"{k}={v}" for k, v in {**PROBE, **fields}.items())
        (folder / f"{i}.log").write_text(line + "\n")
    r = launch("preflight.sh", f"--from_dir={folder}")
    return r.returncode, r.stdout.splitlines()[-1]


def test_preflight_verdict_on_fit_python_and_data(tmp_path):
    fits = "fits=true;peak_gib=30.9;hbm_gib=31.25;rows=4x4;remat=full"
    code, line = verdict(tmp_path, {"fit": fits}, {"worker": "1", "fit": fits})
    assert code == 0 and line.endswith(
        "Python 3.11.7), TPU free, nothing running, the train step fits: peak_gib=30.9 "
        "hbm_gib=31.25 rows=4x4 remat=full"), line
    for fields, reason in [
        ({"fit": "fits=false;peak_gib=37.7;hbm_gib=31.25;rows=8x2;remat=full"},
         "worker 0: the train step does not fit: peak_gib=37.7 hbm_gib=31.25 rows=8x2 "
         "remat=full per chip"),
        ({"fit": "fits=error"}, "worker 0: the fit check failed"),
        ({"python": "3.10.12"}, "worker 0's .venv has Python 3.10.12; the project needs 3.11"),
        ({"data_missing": "/data/basque_vlm"}, "worker 0: no data in /data/basque_vlm"),
    ]:
        code, line = verdict(tmp_path, fields)
        assert code == 1 and reason in line, line
    code, line = verdict(tmp_path, {}, {"worker": "1", "python": "3.12.3"})
    assert code == 1 and "the workers' python differs" in line


def test_probe_reports_missing_data(worker_home, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "shard").write_text("x")
    (tmp_path / "empty").mkdir()
    probe = on_worker(worker_home, worker("probe", f"--data_dir={tmp_path / 'full'}",
                                          f"--data_dir={tmp_path / 'empty'}",
                                          f"--data_dir={tmp_path / 'absent'}"))
    fields = dict(kv.split("=", 1) for kv in probe.stdout.split()[1:])
    assert fields["data_missing"] == f"{tmp_path / 'empty'},{tmp_path / 'absent'}"


# ------------------------------------------------------------------ secrets, retries, apt

class TokenGitServer(http.server.SimpleHTTPRequestHandler):
    """A git repository over "dumb" HTTP that answers only with the right basic auth."""

    def do_GET(self):
        expected = "Basic " + base64.b64encode(b"x-access-token:s3cr3t-t0ken").decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args):
        pass


def test_a_private_repository_s_token_is_read_once_and_never_shown(repo, tmp_path):
    repo_path, commit = repo
    served = tmp_path / "served"
    git("clone", "--quiet", "--bare", str(repo_path), str(served / "repo.git"))
    git("update-server-info", cwd=served / "repo.git")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             partial(TokenGitServer, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/repo.git"
    token = tmp_path / "token"
    token.write_text("s3cr3t-t0ken\n")
    try:
        scp, line = dry("setup.sh", *TARGET, f"--repo={url}", f"--commit={commit}",
                        f"--git_token_file={token}", "--code_only")
        assert scp == gcloud("tpu-vm", "scp", str(token), f"{NAME}:.bvlm_git_token",
                             f"--zone={ZONE}", f"--project={PROJECT}", "--worker=all")
        assert "s3cr3t" not in scp + line
        home = tmp_path / "home"
        home.mkdir()
        (home / ".bvlm_git_token").write_text(token.read_text())  # what the scp does
        r = on_worker(home, remote_command(line), GIT_TERMINAL_PROMPT="0")
        assert r.returncode == 0 and r.stdout == f"BVLM_CODE commit={commit}\n", r.stderr
        assert "s3cr3t" not in r.stdout + r.stderr
        assert not (home / ".bvlm_git_token").exists()  # read once
        assert "s3cr3t" not in (home / "basque_vlm" / ".git" / "config").read_text()
    finally:
        server.shutdown()


def test_secret_values_are_not_echoed(tmp_path):
    """A real (not dry) run echoes each command before running it (gcloud fails here at once:
    no account): the values of secret-looking variables are not in the echo."""
    r = launch("run.sh", *TARGET, "--keep", "--env=HF_TOKEN=hf_s3cr3t", "--env=GREETING=kaixo",
               "--", "true")
    assert r.stderr.startswith("+ gcloud compute tpus tpu-vm ssh")
    assert "HF_TOKEN=***" in r.stderr and "GREETING=kaixo" in r.stderr
    assert "hf_s3cr3t" not in r.stderr


def test_ssh_retries_back_off():
    script = (f"source {LAUNCH}/common.sh; sleep() {{ echo slept $1; }}; "
              "retry 6 false; echo gave up $?")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=clean_env())
    assert r.stdout.split("\n") == ["slept 15", "slept 30", "slept 60", "slept 120", "slept 120",
                                    "gave up 1", ""]


def test_apt_waits_for_the_dpkg_lock(worker_home, tmp_path):
    """A fresh VM's unattended-upgrades holds dpkg's lock: setup waits, then installs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "fuser").write_text(  # the lock is held at the first look only
        f"#!/bin/bash\nif [[ -e {tmp_path}/looked ]]; then exit 1; fi\n"
        f"touch {tmp_path}/looked; echo ' 4242'\n")
    (bin_dir / "fuser").chmod(0o755)
    r = on_worker(worker_home, worker("setup", "--data=gs://my-bucket/bv=/nonexistent/bv",
                                      "--data_mode=gcsfuse"),
                  BVLM_DRY_RUN="1", PATH=f"{bin_dir}:/usr/bin:/bin")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "waiting for apt's locks (held by pids 4242)" in out
    assert out.index("waiting for apt's locks") < out.index("DRY apt-get -o "
                                                            "DPkg::Lock::Timeout=600 update")
