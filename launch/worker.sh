#!/usr/bin/env bash
# The worker side of launch/: runs ON each TPU VM worker, in the code's checkout (the other
# scripts call it through `gcloud compute tpus tpu-vm ssh --worker=all`). Also runs on any Linux
# machine, which is how the tests exercise it.
#
#   bash launch/worker.sh setup [--python=python3.11] [--data=gs://B/PREFIX[=DIR] ...]
#                               [--data_mode=copy|gcsfuse]
#   bash launch/worker.sh probe                          one line: BVLM_PROBE key=value ...
#   bash launch/worker.sh start --run_name=R [--env=K=V ...] -- COMMAND...
#   bash launch/worker.sh stop --run_name=R [--timeout=SECONDS]
#   bash launch/worker.sh status --run_name=R            one line: BVLM_STATUS key=value ...
#   bash launch/worker.sh logs --run_name=R [--lines=N] [--follow] [--prefix]
#
# setup: Python 3.11 (apt, if missing), the venv .venv with the pinned requirements
#   (requirements/lock.txt as constraints, requirements/runtime.txt and cloud.txt, jax[tpu] at the locked jax
#   version, which pins libtpu), the project installed editable; then the data: each --data
#   gs:// prefix is copied to DIR (default /data/basque_vlm, the configs' PAPER_ROOT) with
#   `gcloud storage rsync` (copy), or mounted there read-only with gcsfuse (gcsfuse).
# start: runs COMMAND in the background (nohup, its own session) with the venv first on PATH,
#   PYTHONUNBUFFERED=1 and the --env variables; stdout+stderr are appended to
#   RUNS/R/worker-I.log, its pid is RUNS/R/worker-I.pid, its exit code RUNS/R/worker-I.exit.
#   RUNS is $BVLM_RUNS_DIR (default ~/basque_vlm_runs), I the worker's index ($BVLM_WORKER_ID,
#   else the TPU VM metadata's agent-worker-number, else the hostname's -w-I suffix, else 0).
# stop: SIGTERM to the command (the trainer saves a checkpoint and exits), SIGKILL to its
#   process group after --timeout seconds (default 300).
set -euo pipefail

SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)
RUNS=${BVLM_RUNS_DIR:-$HOME/basque_vlm_runs}
DEFAULT_DATA_DIR=/data/basque_vlm

die() {
  printf 'worker.sh: error: %s\n' "$*" >&2
  exit 2
}

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
parse() {
  local arg key
  while (($#)); do
    arg=$1
    shift
    case $arg in
      --) CMD=("$@"); return 0 ;;
      --data=* | --env=*) key=${arg%%=*}; OPT_LIST+=("${key#--}=${arg#*=}") ;;
      --*=*) key=${arg%%=*}; OPT[${key#--}]=${arg#*=} ;;
      --follow | --prefix) OPT[${arg#--}]=1 ;;
      --data | --env) (($#)) || die "$arg needs a value"; OPT_LIST+=("${arg#--}=$1"); shift ;;
      --*) (($#)) || die "$arg needs a value"; OPT[${arg#--}]=$1; shift ;;
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
}

running_pid() { # the run's pid if it is alive
  local pid
  [[ -f $PIDFILE ]] || return 1
  pid=$(<"$PIDFILE")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  printf '%s\n' "$pid"
}

stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }

cmd_setup() {
  check_opts python data_mode
  local python=${OPT[python]:-python3.11} mode=${OPT[data_mode]:-copy} spec src dest
  [[ $mode == copy || $mode == gcsfuse ]] || die "--data_mode must be copy or gcsfuse"
  cd "$ROOT"
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    [[ $python =~ ^python3\.[0-9]+$ ]] ||
      die "$python cannot make a venv (no ensurepip); install it, or use --python=python3.11"
    echo "installing $python and its venv module (apt)"
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$python" "$python-venv"
  fi
  "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
    die "$python is not Python 3.11 (the project needs 3.11)"
  [[ -x .venv/bin/python ]] || "$python" -m venv .venv
  local jax_version
  jax_version=$(sed -n 's/^jax==//p' requirements/lock.txt)
  [[ -n $jax_version ]] || die "requirements/lock.txt pins no jax version"
  echo "installing the pinned requirements and jax[tpu]==$jax_version into $ROOT/.venv"
  .venv/bin/python -m pip install -q -c requirements/lock.txt -r requirements/runtime.txt \
    -r requirements/cloud.txt "jax[tpu]==$jax_version"
  .venv/bin/python -m pip install -q --no-deps -e .
  local -a specs
  mapfile -t specs < <(list_opts data)
  for spec in "${specs[@]}"; do
    src=${spec%%=*}
    dest=$DEFAULT_DATA_DIR
    if [[ $spec == *=* ]]; then dest=${spec#*=}; fi
    [[ $src =~ ^gs://[^/]+ ]] || die "--data must be gs://BUCKET[/PREFIX][=DIR], got '$spec'"
    stage_data "$mode" "${src%/}" "$dest"
  done
  echo "BVLM_SETUP worker=$(worker_id) commit=$(git rev-parse HEAD)" \
    "python=$(.venv/bin/python -c 'import platform; print(platform.python_version())')"
}

stage_data() {
  local mode=$1 src=$2 dest=$3 bucket prefix
  if [[ $mode == gcsfuse ]] && mountpoint -q "$dest"; then
    echo "$dest is already mounted"
    return
  fi
  if [[ ! -d $dest ]] || [[ ! -w $dest ]]; then
    sudo mkdir -p "$dest"
    sudo chown "$(id -u):$(id -g)" "$dest"
  fi
  if [[ $mode == copy ]]; then
    echo "copying $src to $dest (gcloud storage rsync)"
    gcloud storage rsync --recursive "$src" "$dest"
    return
  fi
  if ! command -v gcsfuse >/dev/null; then
    echo "installing gcsfuse (apt)"
    echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc]" \
      "https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" |
      sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
    curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg |
      sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcsfuse
  fi
  bucket=${src#gs://}
  prefix=""
  if [[ $bucket == */* ]]; then prefix=${bucket#*/}; fi
  bucket=${bucket%%/*}
  echo "mounting $src on $dest (gcsfuse, read-only)"
  local -a only=()
  if [[ -n $prefix ]]; then only=(--only-dir "$prefix"); fi
  gcsfuse --implicit-dirs -o ro "${only[@]}" "$bucket" "$dest"
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

cmd_probe() {
  check_opts
  cd "$ROOT"
  local commit dirty packages=none jax=none jaxlib=none libtpu=none python=none freeze
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
  local py_procs
  py_procs=$(pgrep -u "$(id -u)" -c python 2>/dev/null) || py_procs=0
  echo "BVLM_PROBE worker=$(worker_id) host=$(hostname) commit=$commit dirty=$dirty" \
    "packages=$packages jax=${jax:-none} jaxlib=${jaxlib:-none} libtpu=${libtpu:-none}" \
    "python=$python tpu_holders=$(tpu_holders | joined) runs=$(running_runs | joined)" \
    "py_procs=$py_procs"
}

cmd_start() {
  check_opts run_name
  run_paths
  ((${#CMD[@]})) || die "no command: worker.sh start --run_name=R -- COMMAND..."
  local pid item
  if pid=$(running_pid); then
    die "run '${OPT[run_name]}' is already running on worker $WID (pid $pid);" \
      "stop it first (launch/stop.sh)"
  fi
  mkdir -p "$DIR"
  rm -f "$EXITFILE" "$PIDFILE"
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
  nohup setsid bash "$SELF" _supervise "$PIDFILE" "$EXITFILE" -- "${CMD[@]}" \
    >>"$LOG" 2>&1 </dev/null &
  for _ in {1..50}; do
    [[ -s $PIDFILE ]] && break
    sleep 0.1
  done
  [[ -s $PIDFILE ]] || die "the command did not start; see $LOG"
  echo "BVLM_STARTED worker=$WID run=${OPT[run_name]} pid=$(<"$PIDFILE") log=$LOG"
}

cmd_supervise() { # _supervise PIDFILE EXITFILE -- COMMAND...: runs COMMAND, forwards TERM/INT
  local pidfile=$1 exitfile=$2 child rc
  shift 2
  [[ ${1:-} == -- ]] && shift
  echo "$$" >"$pidfile"
  child=""
  trap 'if [[ -n $child ]]; then kill -TERM "$child" 2>/dev/null || true; fi' TERM INT
  "$@" &
  child=$!
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
  echo "$rc" >"$exitfile"
  printf '=== %s exit %s\n' "$(stamp)" "$rc"
  exit "$rc"
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

cmd_status() {
  check_opts run_name
  run_paths
  local pid
  if pid=$(running_pid); then
    echo "BVLM_STATUS worker=$WID run=${OPT[run_name]} state=running pid=$pid"
  elif [[ -f $EXITFILE ]]; then
    echo "BVLM_STATUS worker=$WID run=${OPT[run_name]} state=exited code=$(<"$EXITFILE")"
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

(($#)) || die "a subcommand is needed: setup, probe, start, stop, status, logs"
SUBCOMMAND=$1
shift
case $SUBCOMMAND in
  _supervise) cmd_supervise "$@" ;;
  setup | probe | start | stop | status | logs) parse "$@"; "cmd_$SUBCOMMAND" ;;
  -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p;}}' "$0" ;;
  *) die "unknown subcommand '$SUBCOMMAND' (setup, probe, start, stop, status, logs)" ;;
esac
