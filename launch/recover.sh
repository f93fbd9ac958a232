#!/usr/bin/env bash
# Bring a run on a Spot (or otherwise lost) TPU VM back: detect the state; when the slice was
# preempted, delete it, create it again, set it up, check it and rerun the same command, which
# resumes from the latest Orbax checkpoint of its gs:// workdir.
#
#   launch/recover.sh --name=NAME --zone=ZONE --project=PROJECT --accelerator=TYPE [--spot]
#       [--reserved] [--queued] [--queue_deadline=24h] [--max_run_duration=D]
#       [--runtime_version=V] [--gcloud_flag=F ...]                             as create.sh
#       [--commit=SHA] [--repo=URL] [--git_token_file=FILE | --git_token_secret=SECRET]
#       [--data=gs://...[=DIR] ...] [--data_mode=copy|gcsfuse] [--wheelhouse=gs://PREFIX]
#       [--python=python3.11] [--retries=6]                                     as setup.sh
#       [--run_name=train] [--env=KEY=VALUE ...] [--logs_to=gs://PREFIX]
#       [--keep | --grace=1800]                                                 as run.sh
#       [--startup] [--watch=SECONDS] [--dry_run [--assume_state=STATE]] -- COMMAND...
#
# Give it the flags and the command the slice was created, set up and run with (--startup: made
# with launch/submit.sh and those flags). What it does:
#   TPU VM PREEMPTED or TERMINATED (--queued: the queued resource SUSPENDED or FAILED, or its VM
#   PREEMPTED), or not found: first the run's state in its logs folder (LOGS_TO/RUN_NAME/state,
#   which worker 0 writes when the command ends): `exited:0`: it has finished (the slice deleted
#   itself), exit 0; `exited:CODE`: it failed, exit 1. Otherwise: delete.sh (unless not found),
#   then create.sh, setup.sh, preflight.sh --commit (with the fit check), run.sh; with --startup,
#   submit.sh, whose startup script does the rest on the workers.
#   READY: the run's state on every worker (launch/worker.sh status): running everywhere: nothing
#   to do; exited 0 everywhere: finished (the slice deleted unless --keep, should worker 0 not
#   have managed), exit 0; never started (absent, or no checkout) on every worker: setup.sh,
#   preflight.sh, run.sh; its processes vanished (lost: a host restart) on every worker:
#   preflight.sh, run.sh (--startup: both are the startup script's, so it waits); a worker did
#   not answer: tried again later; anything else (it failed): reported, exit 1
#   on the way (CREATING, WAITING_FOR_RESOURCES, ...): reported (--watch: waits)
# --watch=SECONDS keeps checking every SECONDS and recovering as often as needed; it ends when
# the run has finished (exit 0), or failed (exit 1). Without --watch, one check (and recovery).
# A dry run prints the commands of one pass for the state --assume_state (default PREEMPTED;
# with --queued, the queued resource's state, default SUSPENDED).
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
F_QUEUE_DEADLINE=""
F_MAX_RUN_DURATION=""
F_GCLOUD_FLAG=()
F_COMMIT=""
F_REPO=""
F_GIT_TOKEN_FILE=""
F_GIT_TOKEN_SECRET=""
F_DATA=()
F_DATA_MODE=""
F_WHEELHOUSE=""
F_PYTHON=""
F_RETRIES=""
F_RUN_NAME=$DEFAULT_RUN_NAME
F_ENV=()
F_LOGS_TO=""
F_KEEP=0
F_GRACE=""
F_STARTUP=0
F_WATCH=""
F_ASSUME_STATE=""
flags str accelerator runtime_version queue_deadline max_run_duration commit repo \
  git_token_file git_token_secret data_mode wheelhouse python retries run_name logs_to grace \
  watch assume_state
flags bool spot reserved queued keep startup
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
if ((F_STARTUP)) && [[ -n $F_GIT_TOKEN_FILE ]]; then
  die "--git_token_file is setup.sh's; with --startup, --git_token_secret"
fi
if ! ((F_STARTUP)) && [[ -n $F_GIT_TOKEN_SECRET ]]; then
  die "--git_token_secret needs --startup; setup.sh takes --git_token_file"
fi
commit=$(resolve_commit "${F_COMMIT:-HEAD}")
logs=$(logs_destination "$F_LOGS_TO" "${ARGS[@]}")
[[ -n $logs || $F_KEEP == 1 ]] ||
  die "--logs_to=gs://... is needed (or a --workdir=gs://... in the command): the run's final" \
    "state is read there, so that a slice that deleted itself at the end is not created again"

add() { # add ARRAY FLAG VALUE: --FLAG=VALUE appended to ARRAY when VALUE was given
  local -n array=$1
  if [[ -n $3 ]]; then array+=("--$2=$3"); fi
}
create_args=("--accelerator=$F_ACCELERATOR")
if ((F_SPOT)); then create_args+=(--spot); fi
if ((F_RESERVED)); then create_args+=(--reserved); fi
if ((F_QUEUED)); then create_args+=(--queued); fi
add create_args runtime_version "$F_RUNTIME_VERSION"
add create_args queue_deadline "$F_QUEUE_DEADLINE"
add create_args max_run_duration "$F_MAX_RUN_DURATION"
for flag in "${F_GCLOUD_FLAG[@]}"; do create_args+=("--gcloud_flag=$flag"); done
setup_args=("--commit=$commit")
add setup_args repo "$F_REPO"
for spec in "${F_DATA[@]}"; do setup_args+=("--data=$spec"); done
add setup_args data_mode "$F_DATA_MODE"
add setup_args wheelhouse "$F_WHEELHOUSE"
add setup_args python "$F_PYTHON"
run_args=("--run_name=$F_RUN_NAME")
for item in "${F_ENV[@]}"; do run_args+=("--env=$item"); done
add run_args logs_to "$F_LOGS_TO"
add run_args grace "$F_GRACE"
if ((F_KEEP)); then run_args+=(--keep); fi
# over ssh (setup.sh, preflight.sh, run.sh), or from a startup script (submit.sh)
ssh_setup_args=("${setup_args[@]}")
add ssh_setup_args retries "$F_RETRIES"
add ssh_setup_args git_token_file "$F_GIT_TOKEN_FILE"
preflight_args=("--commit=$commit" "--accelerator=$F_ACCELERATOR")
for spec in "${F_DATA[@]}"; do preflight_args+=("--data=$spec"); done
submit_args=("${create_args[@]}" "${setup_args[@]}" "${run_args[@]}")
add submit_args git_token_secret "$F_GIT_TOKEN_SECRET"
run_args+=("--accelerator=$F_ACCELERATOR")
delete_args=()
if ((F_QUEUED)); then delete_args+=(--queued); fi
# (Called where `set -e` does not act: every step is chained with &&.)
setup_and_run() {
  launch_script setup.sh "${ssh_setup_args[@]}" && preflight_and_run
}

preflight_and_run() {
  launch_script preflight.sh "${preflight_args[@]}" -- "${ARGS[@]}" &&
    launch_script run.sh "${run_args[@]}" -- "${ARGS[@]}"
}

recreate() { # recreate EXISTS
  if (($1)); then launch_script delete.sh "${delete_args[@]}" || return; fi
  if ((F_STARTUP)); then
    launch_script submit.sh "${submit_args[@]}" -- "${ARGS[@]}"
  else
    launch_script create.sh "${create_args[@]}" && setup_and_run
  fi
}

# ended: how the run ended, as worker 0 recorded it (`exited:CODE`), or nothing.
ended() {
  [[ -n $logs ]] || return 0
  query "" gcloud storage cat "$logs/$F_RUN_NAME/state" 2>/dev/null || true
}

# finished: the run ended with exit 0; the slice goes unless --keep (worker 0 deletes it; this
# is for when it could not).
finished() {
  note "run $F_RUN_NAME has finished (exit 0)"
  if ! ((F_KEEP)); then
    launch_script delete.sh "${delete_args[@]}" || note "the slice may be gone already"
  fi
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
  if [[ $state == PREEMPTED || $state == NOT_FOUND ]]; then
    case $(ended) in
      exited:0) note "run $F_RUN_NAME has finished (exit 0; $logs/$F_RUN_NAME/state)"; return 0 ;;
      exited:*)
        note "run $F_RUN_NAME failed ($logs/$F_RUN_NAME/state): not creating the slice again"
        return 1 ;;
    esac
  fi
  case $state in
    PREEMPTED) recreate 1 || return 3 ;;
    NOT_FOUND) recreate 0 || return 3 ;;
    READY)
      states=$(run_states "$F_RUN_NAME" running | awk '{print $2}' | sort -u | paste -sd' ' -)
      note "run $F_RUN_NAME on the workers: $states"
      case $states in
        running) ;;
        exited:0) finished; return 0 ;;
        *noanswer*) note "some workers did not answer; trying again later"; return 3 ;;
        absent | nocode | "absent nocode" | lost) if ((F_STARTUP)); then
          note "the startup script sets up or restarts the run at boot; looking again later"
        elif [[ $states == lost ]]; then
          preflight_and_run || return 3
        else
          setup_and_run || return 3
        fi ;;
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

if ((F_STARTUP)); then
  validate submit.sh "${submit_args[@]}" -- "${ARGS[@]}"
else
  validate create.sh "${create_args[@]}"
  validate setup.sh "${ssh_setup_args[@]}"
  validate run.sh "${run_args[@]}" -- "${ARGS[@]}"
fi

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
