#!/usr/bin/env bash
# Bring a run on a Spot (or otherwise lost) TPU VM back: detect the state; when the slice was
# preempted, delete it, create it again, set it up, check it and rerun the same command, which
# resumes from the latest Orbax checkpoint of its gs:// workdir.
#
#   launch/recover.sh --name=NAME --zone=ZONE --project=PROJECT --accelerator=TYPE [--spot]
#       [--reserved] [--queued] [--runtime_version=V] [--gcloud_flag=F ...]    as create.sh
#       [--commit=SHA] [--repo=URL] [--data=gs://...[=DIR] ...] [--data_mode=copy|gcsfuse]
#       [--python=python3.11] [--retries=3]                                     as setup.sh
#       [--run_name=train] [--env=KEY=VALUE ...]                                as run.sh
#       [--watch=SECONDS] [--dry_run [--assume_state=STATE]] -- COMMAND...
#
# Give it the flags and the command the slice was created, set up and run with. What it does:
#   TPU VM PREEMPTED or TERMINATED (--queued: the queued resource SUSPENDED or FAILED, or its VM
#   PREEMPTED): delete.sh, create.sh, setup.sh, preflight.sh --commit, run.sh
#   not found: the same without delete.sh
#   READY: the run's state on every worker (launch/worker.sh status): running everywhere or
#   exited 0 everywhere: nothing to do; never started (absent, or no checkout) on every worker:
#   setup.sh, preflight.sh, run.sh; its processes vanished (lost: a host restart) on every
#   worker: preflight.sh, run.sh; a worker did not answer: tried again later; anything else (it
#   failed): reported, exit 1
#   on the way (CREATING, WAITING_FOR_RESOURCES, ...): reported (--watch: waits)
# --watch=SECONDS keeps checking every SECONDS and recovering as often as needed; it ends when
# the run has exited 0 on every worker (exit 0), or failed on a healthy slice (exit 1). Without
# --watch, one check (and recovery). A dry run prints the commands of one pass for the state
# --assume_state (default PREEMPTED; with --queued, the queued resource's state, default
# SUSPENDED).
#
# The commit is resolved here once (default this checkout's HEAD), so a recreated slice gets
# exactly the code the run started with.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

F_ACCELERATOR=""
F_RUNTIME_VERSION=""
F_SPOT=0
F_RESERVED=0
F_QUEUED=0
F_GCLOUD_FLAG=()
F_COMMIT=""
F_REPO=""
F_DATA=()
F_DATA_MODE=""
F_PYTHON=""
F_RETRIES=""
F_RUN_NAME=$DEFAULT_RUN_NAME
F_ENV=()
F_WATCH=""
F_ASSUME_STATE=""
flags str accelerator runtime_version commit repo data_mode python retries run_name watch \
  assume_state
flags bool spot reserved queued
flags list gcloud_flag data env
parse_flags "$@"
((${#ARGS[@]})) || die "no command: the command the slice ran goes after -- (as for run.sh)"
require_target
[[ -n $F_ACCELERATOR ]] || die "--accelerator is required (the one the slice was created with)"
check_run_name "$F_RUN_NAME"
[[ -z $F_WATCH || $F_WATCH =~ ^[1-9][0-9]*$ ]] || die "--watch must be a number of seconds"
if [[ -n $F_ASSUME_STATE ]] && ! ((F_DRY_RUN)); then die "--assume_state needs --dry_run"; fi
[[ -z $F_ASSUME_STATE || $F_ASSUME_STATE =~ ^[A-Z_]+$ ]] ||
  die "--assume_state is a state name such as PREEMPTED, READY, SUSPENDED"
commit=$(resolve_commit "${F_COMMIT:-HEAD}")

create_args=("--accelerator=$F_ACCELERATOR")
if ((F_SPOT)); then create_args+=(--spot); fi
if ((F_RESERVED)); then create_args+=(--reserved); fi
if ((F_QUEUED)); then create_args+=(--queued); fi
if [[ -n $F_RUNTIME_VERSION ]]; then create_args+=("--runtime_version=$F_RUNTIME_VERSION"); fi
for flag in "${F_GCLOUD_FLAG[@]}"; do create_args+=("--gcloud_flag=$flag"); done
setup_args=("--commit=$commit")
if [[ -n $F_REPO ]]; then setup_args+=("--repo=$F_REPO"); fi
for spec in "${F_DATA[@]}"; do setup_args+=("--data=$spec"); done
if [[ -n $F_DATA_MODE ]]; then setup_args+=("--data_mode=$F_DATA_MODE"); fi
if [[ -n $F_PYTHON ]]; then setup_args+=("--python=$F_PYTHON"); fi
if [[ -n $F_RETRIES ]]; then setup_args+=("--retries=$F_RETRIES"); fi
run_args=("--run_name=$F_RUN_NAME")
for item in "${F_ENV[@]}"; do run_args+=("--env=$item"); done
delete_args=()
if ((F_QUEUED)); then delete_args+=(--queued); fi

# (Called where `set -e` does not act: every step is chained with &&.)
setup_and_run() {
  launch_script setup.sh "${setup_args[@]}" &&
    launch_script preflight.sh "--commit=$commit" &&
    launch_script run.sh "${run_args[@]}" -- "${ARGS[@]}"
}

recreate() { # recreate EXISTS
  if (($1)); then launch_script delete.sh "${delete_args[@]}" || return; fi
  launch_script create.sh "${create_args[@]}" && setup_and_run
}

# slice_state: `WHAT STATE`, WHAT one of PREEMPTED, NOT_FOUND, READY or another state (on the
# way), STATE what gcloud said (the queued resource's state with --queued, else the VM's).
slice_state() {
  local state node
  if ((F_QUEUED)); then
    state=$(queued_state "${F_ASSUME_STATE:-SUSPENDED}")
    case $state in
      SUSPENDED | SUSPENDING | FAILED) echo "PREEMPTED $state" ;;
      ACTIVE)
        node=$(node_state READY)
        case $node in
          PREEMPTED | TERMINATED | NOT_FOUND) echo "PREEMPTED ACTIVE/$node" ;;
          ERROR) echo "ERROR ACTIVE/ERROR" ;;
          *) echo "$node ACTIVE/$node" ;;
        esac ;;
      *) echo "$state $state" ;;
    esac
  else
    state=$(node_state "${F_ASSUME_STATE:-PREEMPTED}")
    case $state in
      PREEMPTED | TERMINATED) echo "PREEMPTED $state" ;;
      *) echo "$state $state" ;;
    esac
  fi
}

# one_pass: 0 = the run has finished, 1 = it failed, 2 = all well (keep watching), 3 = a step of
# the recovery failed (--watch tries again at the next check).
FAILURES=0
one_pass() {
  local state raw states
  read -r state raw < <(slice_state)
  note "TPU $F_NAME: $raw"
  dry_note "state: $raw (assumed: --assume_state)"
  case $state in
    PREEMPTED) recreate 1 || return 3 ;;
    NOT_FOUND) recreate 0 || return 3 ;;
    READY)
      states=$(run_states "$F_RUN_NAME" running | awk '{print $2}' | sort -u | paste -sd' ' -)
      note "run $F_RUN_NAME on the workers: $states"
      case $states in
        running) ;;
        exited:0) note "run $F_RUN_NAME has finished (exit 0 on every worker)"; return 0 ;;
        *noanswer*) note "some workers did not answer; trying again later"; return 3 ;;
        absent | nocode | "absent nocode") setup_and_run || return 3 ;;
        lost) { launch_script preflight.sh "--commit=$commit" &&
          launch_script run.sh "${run_args[@]}" -- "${ARGS[@]}"; } || return 3 ;;
        *)
          # A preemption can end the processes before the state says so: look once more.
          FAILURES=$((FAILURES + 1))
          if [[ -n $F_WATCH ]] && ((FAILURES < 2)); then return 2; fi
          note "run $F_RUN_NAME did not end well on a healthy slice ($states):" \
            "launch/logs.sh --run_name=$F_RUN_NAME"
          return 1 ;;
      esac
      FAILURES=0 ;;
    STOPPED | STOPPING) note "TPU $F_NAME was stopped by hand: not touching it"; return 1 ;;
    ERROR) note "cannot read the state of TPU $F_NAME (gcloud's message above)"; return 3 ;;
  esac
  return 2
}

# Bad flags for a step are found now (a dry run of it), before anything is deleted.
validate() {
  local script=$1 error
  shift
  if ! error=$(bash "$LAUNCH_DIR/$script" "--name=$F_NAME" "--zone=$F_ZONE" \
    "--project=$F_PROJECT" --dry_run "$@" 2>&1 >/dev/null); then
    error=${error##*$'\n'}
    die "${error/#"$script: error: "/"$script: "}"
  fi
}
validate create.sh "${create_args[@]}"
validate setup.sh "${setup_args[@]}"
validate run.sh "${run_args[@]}" -- "${ARGS[@]}"

if [[ -z $F_WATCH ]] || ((F_DRY_RUN)); then
  rc=0
  one_pass || rc=$?
  ((rc == 0 || rc == 2))
  exit
fi
while :; do
  rc=0
  one_pass || rc=$?
  ((rc == 0 || rc == 1)) && exit "$rc"
  sleep "$F_WATCH"
done
