#!/usr/bin/env bash
# The worker side of launch/: runs ON each TPU VM worker, in the code's checkout (the other
# scripts call it through `gcloud compute tpus tpu-vm ssh --worker=all`, a startup script made by
# launch/submit.sh calls it at every boot). Also runs on any Linux machine, which is how the
# tests exercise it.
#
#   bash launch/worker.sh setup [--python=python3.11] [--wheelhouse=gs://B/PREFIX]
#                               [--data=gs://B/PREFIX[=DIR] ...] [--data_mode=copy|gcsfuse]
#   bash launch/worker.sh probe [--data_dir=DIR ...] [--topology=T -- COMMAND...]
#                                                      one line: BVLM_PROBE key=value ...
#   bash launch/worker.sh fit --topology=T -- COMMAND...   does a train COMMAND fit the slice?
#   bash launch/worker.sh start --run_name=R [--env=K=V ...] [--logs_to=gs://...]
#                               [--on_end=SHELL_COMMAND [--grace=1800]] [--foreground]
#                               -- COMMAND...
#   bash launch/worker.sh end --run_name=R --rc=CODE [start's --logs_to, --on_end, --grace]
#   bash launch/worker.sh stop --run_name=R [--timeout=SECONDS]
#   bash launch/worker.sh status --run_name=R            one line: BVLM_STATUS key=value ...
#   bash launch/worker.sh logs --run_name=R [--lines=N] [--follow] [--prefix]
#
# setup (launch/worker_setup.sh): Python (apt, after waiting for the dpkg lock, if missing), the
#   venv .venv with the pinned requirements (requirements/lock.txt as constraints,
#   requirements/runtime.txt and cloud.txt, jax[tpu] at the locked jax version, which pins
#   libtpu; from a wheelhouse cached on GCS with --wheelhouse), the project installed editable;
#   then the data at DIR (default /data/basque_vlm, the configs' PAPER_ROOT): copied with
#   `gcloud storage rsync` (copy), or mounted read-only with gcsfuse, metadata cached, by a
#   systemd unit that mounts it again at every boot (gcsfuse).
# probe: the facts launch/preflight.sh judges (commit, packages, Python, TPU holders, runs, the
#   data folders, and with --topology whether a `basque_vlm.train` COMMAND fits: `fit`).
# fit: `python -m basque_vlm.aot --topology=T --nodecode` with the command's --config and
#   --config.* overrides; prints the per-chip numbers and `BVLM_FIT fits=...`; exit 1 if not.
# start: runs COMMAND in the background (nohup, its own session; --foreground: here) with the
#   venv first on PATH, PYTHONUNBUFFERED=1 and the --env variables; stdout+stderr are appended to
#   RUNS/R/worker-I.log, its pid is RUNS/R/worker-I.pid, its exit code RUNS/R/worker-I.exit.
#   --logs_to copies the logs there every 5 minutes and at the end. When COMMAND ends without a
#   SIGTERM, worker 0 writes `exited:CODE` to LOGS_TO/state and runs --on_end (launch/ passes the
#   slice's delete): at once after exit 0, after --grace seconds otherwise (launch/stop.sh
#   cancels it meanwhile). After a SIGTERM (preemption, launch/stop.sh) nothing is deleted.
# end: the end of a run that never started (a startup script whose setup failed): as above.
# stop: SIGTERM to the command (the trainer saves a checkpoint and exits), SIGKILL to its
#   process group after --timeout seconds (default 300).
#
# RUNS is $BVLM_RUNS_DIR (default basque_vlm_runs beside the checkout), I the worker's index
# ($BVLM_WORKER_ID, else the TPU VM metadata's agent-worker-number, else the hostname's -w-I
# suffix, else 0). A checkout that root owns (a startup script's) is run as root (sudo -n).
# BVLM_DRY_RUN=1 prints what would reach apt, pip, systemd, gcsfuse and Google Cloud (`DRY ...`)
# instead of running it: the tests run the worker side on a machine with none of them.
set -euo pipefail

SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)
if [[ $(id -u) != 0 && $(stat -c %u "$ROOT") == 0 ]] && sudo -n true 2>/dev/null; then
  exec sudo -n --preserve-env=BVLM_WORKER_ID,BVLM_RUNS_DIR,BVLM_DRY_RUN bash "$SELF" "$@"
fi
RUNS=${BVLM_RUNS_DIR:-$(dirname "$ROOT")/basque_vlm_runs}
SUDO=()
if [[ $(id -u) != 0 ]]; then SUDO=(sudo); fi

die() {
  printf 'worker.sh: error: %s\n' "$*" >&2
  exit 2
}

dry() { [[ ${BVLM_DRY_RUN:-0} == 1 ]]; }

# ext CMD...: runs a command that acts outside the checkout (apt, pip, systemd, gcsfuse, gcloud);
# a dry run prints it and succeeds.
ext() {
  if dry; then
    printf 'DRY'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# ask CMD...: runs a command whose exit status answers a question (is it there?); a dry run
# prints it and answers no.
ask() {
  if dry; then
    ext "$@"
    return 1
  fi
  "$@"
}

stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }

worker_id() {
  local id=${BVLM_WORKER_ID:-}
  if [[ -z $id ]] && command -v curl >/dev/null; then
    id=$(curl -s -f --max-time 3 -H 'Metadata-Flavor: Google' \
      http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number \
      2>/dev/null) || id=""
  fi
  if [[ -z $id && $(hostname) =~ -w-([0-9]+)$ ]]; then id=${BASH_REMATCH[1]}; fi
  [[ $id =~ ^[0-9]+$ ]] || id=0
  printf '%s\n' "$id"
}

# Flags of the subcommands: --key=value or --key value, --flag; `--` ends them.
declare -A OPT=()
OPT_LIST=()
CMD=()
LIST_FLAGS=" data env data_dir "
BOOL_FLAGS=" follow prefix foreground "
parse() {
  local arg key
  while (($#)); do
    arg=$1
    shift
    case $arg in
      --) CMD=("$@"); return 0 ;;
      --*=*)
        key=${arg%%=*}
        key=${key#--}
        if [[ $LIST_FLAGS == *" $key "* ]]; then
          OPT_LIST+=("$key=${arg#*=}")
        else
          OPT[$key]=${arg#*=}
        fi ;;
      --*)
        key=${arg#--}
        if [[ $BOOL_FLAGS == *" $key "* ]]; then
          OPT[$key]=1
          continue
        fi
        (($#)) || die "$arg needs a value"
        if [[ $LIST_FLAGS == *" $key "* ]]; then OPT_LIST+=("$key=$1"); else OPT[$key]=$1; fi
        shift ;;
      *) die "unexpected argument '$arg'" ;;
    esac
  done
}

check_opts() {
  local key allowed=" $* "
  for key in "${!OPT[@]}"; do
    [[ $allowed == *" $key "* ]] || die "unknown flag --$key for '$SUBCOMMAND'"
  done
}

list_opts() {
  local prefix=$1 item
  for item in "${OPT_LIST[@]}"; do
    if [[ $item == "$prefix="* ]]; then printf '%s\n' "${item#"$prefix="}"; fi
  done
}

run_paths() {
  [[ -n ${OPT[run_name]:-} ]] || die "--run_name is required"
  [[ ${OPT[run_name]} =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
    die "--run_name='${OPT[run_name]}': letters, digits, '.', '_', '-' only"
  WID=$(worker_id)
  DIR=$RUNS/${OPT[run_name]}
  LOG=$DIR/worker-$WID.log
  PIDFILE=$DIR/worker-$WID.pid
  EXITFILE=$DIR/worker-$WID.exit
  STOPPEDFILE=$DIR/worker-$WID.stopped
}

running_pid() { # the run's pid if it is alive
  local pid
  [[ -f $PIDFILE ]] || return 1
  pid=$(<"$PIDFILE")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  printf '%s\n' "$pid"
}


tpu_holders() { # pid:command of the processes that hold a TPU device or libtpu's lock file
  local -a files=() pids=()
  local f pid link
  for f in /dev/accel* /dev/vfio/[0-9]* /tmp/libtpu_lockfile; do
    if [[ -e $f ]]; then files+=("$f"); fi
  done
  ((${#files[@]})) || return 0
  local -a sudo=()
  if [[ $(id -u) != 0 ]] && sudo -n true 2>/dev/null; then sudo=(sudo -n); fi
  if command -v lsof >/dev/null; then
    mapfile -t pids < <("${sudo[@]}" lsof -t -w "${files[@]}" 2>/dev/null | sort -un)
  else
    for link in /proc/[0-9]*/fd/*; do
      f=$(readlink "$link" 2>/dev/null) || continue
      case $f in /dev/accel* | /dev/vfio/[0-9]* | /tmp/libtpu_lockfile)
        pid=${link#/proc/}
        pids+=("${pid%%/*}") ;;
      esac
    done
    mapfile -t pids < <(printf '%s\n' "${pids[@]}" | sort -un)
  fi
  for pid in "${pids[@]}"; do
    [[ -n $pid && $pid != "$$" ]] || continue
    printf '%s:%s\n' "$pid" "$(ps -o comm= -p "$pid" 2>/dev/null || echo '?')"
  done
}

running_runs() { # names of this worker's runs whose process is alive
  local pidfile pid wid
  wid=$(worker_id)
  for pidfile in "$RUNS"/*/worker-"$wid".pid; do
    [[ -f $pidfile ]] || continue
    pid=$(<"$pidfile")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
      printf '%s:%s\n' "$(basename "$(dirname "$pidfile")")" "$pid"
    fi
  done
}

joined() { # the lines of stdin joined by ',' (or '-' for none), no spaces
  local out
  out=$(paste -sd, - | tr -d ' ')
  printf '%s\n' "${out:--}"
}

# data_missing DIR...: the folders that are missing or empty, one per line.
data_missing() {
  local dir
  for dir; do
    if [[ -z $(ls -A "$dir" 2>/dev/null) ]]; then printf '%s\n' "$dir"; fi
  done
}

cmd_probe() {
  check_opts topology
  cd "$ROOT"
  local commit dirty packages=none jax=none jaxlib=none libtpu=none python=none freeze fit=-
  commit=$(git rev-parse HEAD 2>/dev/null) || commit=none
  dirty=$(git --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null | wc -l)
  if [[ -x .venv/bin/python ]]; then
    python=$(.venv/bin/python -c 'import platform; print(platform.python_version())')
    if freeze=$(.venv/bin/python -m pip freeze --exclude-editable 2>/dev/null); then
      packages=$(printf '%s\n' "$freeze" | sha256sum | cut -c1-16)
      jax=$(sed -n 's/^jax==//p' <<<"$freeze")
      jaxlib=$(sed -n 's/^jaxlib==//p' <<<"$freeze")
      libtpu=$(sed -n 's/^libtpu\(-nightly\)\{0,1\}==//p' <<<"$freeze")
    fi
  fi
  local py_procs missing
  local -a dirs
  py_procs=$(pgrep -u "$(id -u)" -c python 2>/dev/null) || py_procs=0
  mapfile -t dirs < <(list_opts data_dir)
  missing=$(data_missing "${dirs[@]}" | joined)
  if [[ -n ${OPT[topology]:-} ]]; then
    fit=$(fit_check "${OPT[topology]}" "${CMD[@]}" | tee /dev/stderr | sed -n 's/^BVLM_FIT //p' |
      tail -n 1 | tr ' ' ';') || true # the verdict is the preflight's
  fi
  echo "BVLM_PROBE worker=$(worker_id) host=$(hostname) commit=$commit dirty=$dirty" \
    "packages=$packages jax=${jax:-none} jaxlib=${jaxlib:-none} libtpu=${libtpu:-none}" \
    "python=$python tpu_holders=$(tpu_holders | joined) runs=$(running_runs | joined)" \
    "py_procs=$py_procs data_missing=$missing fit=${fit:-error}"
}

# aot_args COMMAND...: the --config and --config.* words of a `basque_vlm.train` command, one
# per line; nothing for another command.
aot_args() {
  local word train=0 take=0
  for word; do
    if ((take)); then printf '%s\n' "--config=$word"; take=0; continue; fi
    case $word in
      basque_vlm.train) train=1 ;;
      --config) take=$train ;;
      --config=* | --config.*) if ((train)); then printf '%s\n' "$word"; fi ;;
    esac
  done
}

# fit_check TOPOLOGY COMMAND...: aot's verdict on the train step of COMMAND for the slice: its
# lines, then `BVLM_FIT fits=true|false|skipped|error peak_gib=... hbm_gib=... rows=PER_CHIPxMICRO
# remat=...`; status 1 unless it fits (or is not a train command).
fit_check() {
  local topology=$1 out
  shift
  local -a args
  mapfile -t args < <(aot_args "$@")
  if ((${#args[@]} == 0)); then
    echo "not a basque_vlm.train command: no fit check"
    echo "BVLM_FIT fits=skipped"
    return 0
  fi
  cd "$ROOT"
  if dry; then
    ext .venv/bin/python -m basque_vlm.aot "--topology=$topology" --nodecode "${args[@]}"
    echo "BVLM_FIT fits=unknown"
    return 0
  fi
  echo "checking that the train step fits $topology (python -m basque_vlm.aot)"
  if ! out=$(.venv/bin/python -m basque_vlm.aot "--topology=$topology" --nodecode \
    "${args[@]}" 2>&1); then
    printf '%s\n' "$out" | tail -n 5
    echo "BVLM_FIT fits=error"
    return 1
  fi
  printf '%s\n' "$out" | grep -E '^[ a-z]' | grep -v '^{' || true
  tail -n 1 <<<"$out" | .venv/bin/python -c '
import json, sys
r = json.load(sys.stdin)
b = r["batch"]
print("BVLM_FIT fits=%s peak_gib=%s hbm_gib=%s rows=%sx%s remat=%s" % (
    str(r["fits"]).lower(), r["per_chip_peak_gib"], r["hbm_gib"], b["per_chip"],
    b["microbatches"], r["remat"]))
sys.exit(0 if r["fits"] else 1)'
}

cmd_fit() {
  check_opts topology
  [[ -n ${OPT[topology]:-} ]] || die "--topology is required (v5p-8, v6e-8, v5e-16, ...)"
  ((${#CMD[@]})) || die "no command: worker.sh fit --topology=T -- COMMAND..."
  fit_check "${OPT[topology]}" "${CMD[@]}"
}

cmd_start() {
  check_opts run_name logs_to on_end grace foreground
  run_paths
  ((${#CMD[@]})) || die "no command: worker.sh start --run_name=R -- COMMAND..."
  check_end_opts
  local pid item
  if pid=$(running_pid); then
    die "run '${OPT[run_name]}' is already running on worker $WID (pid $pid);" \
      "stop it first (launch/stop.sh)"
  fi
  mkdir -p "$DIR"
  rm -f "$EXITFILE" "$PIDFILE" "$STOPPEDFILE"
  cd "$ROOT"
  if [[ -x .venv/bin/python ]]; then
    export VIRTUAL_ENV=$ROOT/.venv
    export PATH=$VIRTUAL_ENV/bin:$PATH
  fi
  export PYTHONUNBUFFERED=1
  while IFS= read -r item; do
    [[ $item =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env must be NAME=VALUE, got '$item'"
    export "${item?}"
  done < <(list_opts env)
  printf '=== %s worker %s (%s) commit %s: %s\n' "$(stamp)" "$WID" "$(hostname)" \
    "$(git rev-parse HEAD 2>/dev/null || echo none)" "${CMD[*]@Q}" >>"$LOG"
  local -a supervise=(env "BVLM_LOGS_TO=${OPT[logs_to]:-}" "BVLM_ON_END=${OPT[on_end]:-}"
    "BVLM_GRACE=${OPT[grace]:-1800}" bash "$SELF" _supervise "${OPT[run_name]}" -- "${CMD[@]}")
  if [[ -n ${OPT[foreground]:-} ]]; then
    echo "BVLM_STARTED worker=$WID run=${OPT[run_name]} log=$LOG (in the foreground)"
    "${supervise[@]}" >>"$LOG" 2>&1 </dev/null
    return
  fi
  nohup setsid "${supervise[@]}" >>"$LOG" 2>&1 </dev/null &
  for _ in {1..50}; do
    [[ -s $PIDFILE ]] && break
    sleep 0.1
  done
  [[ -s $PIDFILE ]] || die "the command did not start; see $LOG"
  echo "BVLM_STARTED worker=$WID run=${OPT[run_name]} pid=$(<"$PIDFILE") log=$LOG"
}

check_end_opts() {
  [[ ${OPT[grace]:-0} =~ ^[0-9]+$ ]] || die "--grace must be a number of seconds"
  [[ -z ${OPT[logs_to]:-} || ${OPT[logs_to]} =~ ^gs://[^/]+ ]] ||
    die "--logs_to must be a gs:// prefix, got '${OPT[logs_to]}'"
}

STOPPED=0
cmd_supervise() { # _supervise RUN_NAME -- COMMAND...: runs COMMAND, forwards TERM/INT, then ends
  OPT[run_name]=$1
  shift
  [[ ${1:-} == -- ]] && shift
  run_paths
  local logs_to=$BVLM_LOGS_TO on_end=$BVLM_ON_END grace=$BVLM_GRACE child rc shipper=""
  unset BVLM_LOGS_TO BVLM_ON_END BVLM_GRACE
  echo "$$" >"$PIDFILE"
  child=""
  trap 'STOPPED=1; if [[ -n $child ]]; then kill -TERM "$child" 2>/dev/null || true; fi' TERM INT
  if [[ -n $logs_to && $WID == 0 ]]; then ext gcloud storage rm --quiet "$logs_to/state" || true; fi
  "$@" &
  child=$!
  if [[ -n $logs_to ]]; then
    while sleep 300; do ship_logs "$logs_to"; done &
    shipper=$!
  fi
  rc=0
  while :; do # wait returns early when a signal is trapped: wait again while the child lives
    if wait "$child"; then rc=0; else rc=$?; fi
    kill -0 "$child" 2>/dev/null || break
  done
  # A signal may interrupt the wait that the child's exit would have ended: bash remembers the
  # child's own status.
  if wait "$child" 2>/dev/null; then rc=0; else
    local again=$?
    ((again == 127)) || rc=$again
  fi
  if [[ -n $shipper ]]; then kill "$shipper" 2>/dev/null || true; fi
  echo "$rc" >"$EXITFILE"
  if ((STOPPED)); then touch "$STOPPEDFILE"; fi
  printf '=== %s exit %s\n' "$(stamp)" "$rc"
  end_run "$rc" "$logs_to" "$on_end" "$grace"
  exit "$rc"
}

# ship_logs LOGS_TO: this worker's log of the run, and of the startup script (startup.log) if
# any, to LOGS_TO/worker-I-BOOT.log and LOGS_TO/startup-I-BOOT.log (BOOT: when this VM booted,
# so that a worker created again adds its own).
ship_logs() {
  local logs_to=$1 boot name
  [[ -n $logs_to ]] || return 0
  boot=$(date -u -d "$(uptime -s)" +%Y%m%dT%H%M%SZ)
  for name in worker startup; do
    local file=$DIR/$name.log
    if [[ $name == worker ]]; then file=$LOG; fi
    if [[ -f $file ]]; then
      ext gcloud storage cp --no-user-output-enabled "$file" "$logs_to/$name-$WID-$boot.log" ||
        echo "could not copy $file to $logs_to"
    fi
  done
}

# end_run RC LOGS_TO ON_END GRACE: after a run (or a setup that failed): the logs shipped; unless
# a SIGTERM stopped it, worker 0 records `exited:RC` in LOGS_TO/state and runs ON_END, at once
# after exit 0, after GRACE seconds otherwise (a SIGTERM meanwhile cancels it).
end_run() {
  local rc=$1 logs_to=$2 on_end=$3 grace=$4
  ship_logs "$logs_to"
  if ((STOPPED)); then
    echo "=== stopped by a signal: nothing more is done (the same command resumes the run)"
    return 0
  fi
  [[ $WID == 0 ]] || return 0
  if [[ -n $logs_to ]]; then
    printf 'exited:%s\n' "$rc" | ext gcloud storage cp --no-user-output-enabled - \
      "$logs_to/state" || echo "could not write $logs_to/state"
  fi
  [[ -n $on_end ]] || return 0
  if ((rc != 0)); then
    echo "=== $(stamp) exit $rc: in $grace s this runs: $on_end" \
      "(launch/stop.sh --run_name=${OPT[run_name]} cancels it)"
    sleep "$grace" &
    wait $! || true
    kill $! 2>/dev/null || true
    if ((STOPPED)); then
      echo "=== cancelled by a signal: $on_end"
      return 0
    fi
  fi
  echo "=== $(stamp) $on_end"
  ext bash -c "$on_end" || echo "=== failed: $on_end"
}

cmd_end() {
  check_opts run_name rc logs_to on_end grace
  run_paths
  check_end_opts
  [[ ${OPT[rc]:-} =~ ^[0-9]+$ ]] || die "--rc must be an exit code"
  trap 'STOPPED=1' TERM INT
  end_run "${OPT[rc]}" "${OPT[logs_to]:-}" "${OPT[on_end]:-}" "${OPT[grace]:-1800}"
}

cmd_stop() {
  check_opts run_name timeout
  run_paths
  local timeout=${OPT[timeout]:-300} pid i
  [[ $timeout =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"
  if ! pid=$(running_pid); then
    echo "BVLM_STOPPED worker=$WID run=${OPT[run_name]} state=not_running"
    return 0
  fi
  kill -TERM "$pid"
  for ((i = 0; i < timeout * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
    printf '=== %s killed after %s s\n' "$(stamp)" "$timeout" >>"$LOG"
    echo "BVLM_STOPPED worker=$WID run=${OPT[run_name]} state=killed"
  else
    echo "BVLM_STOPPED worker=$WID run=${OPT[run_name]} state=exited" \
      "code=$(cat "$EXITFILE" 2>/dev/null || echo '?')"
  fi
}

# status: exited once the exit code is written (also while worker 0 waits out --grace), with
# stopped=1 when a signal stopped it.
cmd_status() {
  check_opts run_name
  run_paths
  local pid stopped=""
  if [[ -f $STOPPEDFILE ]]; then stopped=" stopped=1"; fi
  if [[ -f $EXITFILE ]]; then
    echo "BVLM_STATUS worker=$WID run=${OPT[run_name]} state=exited code=$(<"$EXITFILE")$stopped"
  elif pid=$(running_pid); then
    echo "BVLM_STATUS worker=$WID run=${OPT[run_name]} state=running pid=$pid"
  elif [[ -f $PIDFILE ]]; then
    echo "BVLM_STATUS worker=$WID run=${OPT[run_name]} state=lost"
  else
    echo "BVLM_STATUS worker=$WID run=${OPT[run_name]} state=absent"
  fi
}

cmd_logs() {
  check_opts run_name lines follow prefix
  run_paths
  local lines=${OPT[lines]:-50}
  [[ $lines =~ ^[0-9]+$ ]] || die "--lines must be a number (0: the whole log)"
  [[ -f $LOG ]] || die "no log $LOG on worker $WID"
  local -a tail=(tail -n "$lines")
  if ((lines == 0)); then tail=(tail -n +1); fi
  if [[ -n ${OPT[follow]:-} ]]; then tail+=(-F); fi
  if [[ -n ${OPT[prefix]:-} ]]; then
    "${tail[@]}" "$LOG" | sed -u "s/^/[worker $WID] /"
  else
    "${tail[@]}" "$LOG"
  fi
}

SUBCOMMANDS="setup, probe, fit, start, end, stop, status, logs"
(($#)) || die "a subcommand is needed: $SUBCOMMANDS"
SUBCOMMAND=$1
shift
case $SUBCOMMAND in
  _supervise) cmd_supervise "$@" ;;
  setup)
    # shellcheck source-path=SCRIPTDIR source=worker_setup.sh
    source "$(dirname "$SELF")/worker_setup.sh"
    parse "$@"
    cmd_setup ;;
  probe | fit | start | end | stop | status | logs) parse "$@"; "cmd_$SUBCOMMAND" ;;
  -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p;}}' "$0" ;;
  *) die "unknown subcommand '$SUBCOMMAND' ($SUBCOMMANDS)" ;;
esac
