#!/usr/bin/env bash
# Submit a run that needs nobody watching: create a slice whose workers set themselves up and
# run COMMAND from a startup script, at every boot (a host restart, a queued resource provisioned
# again), and which deletes itself when the run ends.
#
#   launch/submit.sh --name=NAME --zone=ZONE --project=PROJECT --accelerator=TYPE
#       [--spot | --reserved] [--queued [--nowait] [--queue_deadline=24h]
#       [--max_run_duration=DURATION]] [--runtime_version=V] [--gcloud_flag=F ...]  as create.sh
#       [--commit=SHA] [--repo=URL] [--git_token_secret=SECRET] [--data=gs://...[=DIR] ...]
#       [--data_mode=copy|gcsfuse] [--wheelhouse=gs://PREFIX] [--python=python3.11]  as setup.sh
#       [--run_name=train] [--env=KEY=VALUE ...] [--logs_to=gs://PREFIX]
#       [--keep | --grace=1800]                                                       as run.sh
#       [--dry_run] -- COMMAND...
#
# The startup script (launch/startup.sh, the settings above it; kept in
# ~/.cache/basque_vlm_launch/NAME/startup-RUN_NAME.sh) does on every worker what setup.sh,
# preflight.sh and run.sh do over ssh: the code at the commit (resolved here), the environment
# (from --wheelhouse, built there once), the data, the fit check of a train command (`python -m
# basque_vlm.aot` for the slice; the slice's preset added: launch/common.sh PRESETS), then the
# command, which resumes from the latest checkpoint of its workdir. Logs go to --logs_to
# (default: the command's --workdir=gs://W as gs://W/logs/RUN_NAME), every 5 minutes. When the
# command ends without a SIGTERM, worker 0 records `exited:CODE` there and deletes the slice: at
# once after exit 0, --grace seconds after a failure (--keep: never).
#
#   --git_token_secret  a Secret Manager secret (in PROJECT) holding a token for a private https
#                       repository; the VM's service account reads it at every boot
#
# The VM's service account (--gcloud_flag=--service-account=SA) needs to read the data, the
# wheelhouse and the secret, write the workdir, the logs and the wheelhouse, and delete the slice
# (e.g. roles/storage.objectUser on the bucket, roles/secretmanager.secretAccessor,
# roles/tpu.admin). A preempted Spot slice stays down until it is created again:
# `launch/recover.sh --startup --watch=600 ...same flags... -- ...same command...`.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

F_ACCELERATOR=""
F_RUNTIME_VERSION=""
F_SPOT=0
F_RESERVED=0
F_QUEUED=0
F_NOWAIT=0
F_QUEUE_DEADLINE=""
F_MAX_RUN_DURATION=""
F_GCLOUD_FLAG=()
F_COMMIT=""
F_REPO=""
F_GIT_TOKEN_SECRET=""
F_DATA=()
F_DATA_MODE=copy
F_WHEELHOUSE=""
F_PYTHON=python3.11
F_RUN_NAME=$DEFAULT_RUN_NAME
F_ENV=()
F_LOGS_TO=""
F_KEEP=0
F_GRACE=1800
flags str accelerator runtime_version queue_deadline max_run_duration commit repo \
  git_token_secret data_mode wheelhouse python run_name logs_to grace
flags bool spot reserved queued nowait keep
flags list gcloud_flag data env
parse_flags "$@"
((${#ARGS[@]})) || die "no command: launch/submit.sh [flags] -- COMMAND..."
require_target
[[ -n $F_ACCELERATOR ]] || die "--accelerator is required (e.g. --accelerator=v5p-8)"
check_run_name "$F_RUN_NAME"
check_choice data_mode "$F_DATA_MODE" copy gcsfuse
[[ $F_GRACE =~ ^[0-9]+$ ]] || die "--grace must be a number of seconds"
[[ -z $F_GIT_TOKEN_SECRET || $F_GIT_TOKEN_SECRET =~ ^[A-Za-z0-9_-]+$ ]] ||
  die "--git_token_secret is a secret's name (letters, digits, '_', '-')"
commit=$(resolve_commit "${F_COMMIT:-HEAD}")
if [[ -z $F_REPO ]]; then
  F_REPO=$(git -C "$LAUNCH_DIR" remote get-url origin 2>/dev/null) ||
    die "--repo is required (this checkout has no 'origin' remote)"
fi
check_repo_url "$F_REPO"

mapfile -t command < <(with_preset "$F_ACCELERATOR" "${ARGS[@]}")
logs=$(logs_destination "$F_LOGS_TO" "${command[@]}")
[[ -n $logs || $F_KEEP == 1 ]] ||
  die "--logs_to=gs://... is needed (or a --workdir=gs://... in the command): where the" \
    "workers leave their logs and how the run ended, which recover.sh reads"
setup=("--python=$F_PYTHON" "--data_mode=$F_DATA_MODE")
if [[ -n $F_WHEELHOUSE ]]; then setup+=("--wheelhouse=$F_WHEELHOUSE"); fi
for spec in "${F_DATA[@]}"; do setup+=("--data=$spec"); done
start=("--run_name=$F_RUN_NAME")
for item in "${F_ENV[@]}"; do start+=("--env=$item"); done
mapfile -t lifecycle < <(lifecycle_flags "$F_KEEP" "$F_GRACE" "$logs")
start+=("${lifecycle[@]}")
on_end=""
for flag in "${lifecycle[@]}"; do
  if [[ $flag == --on_end=* ]]; then on_end=${flag#--on_end=}; fi
done
# The flags of the workers' steps are checked here, before anything is created.
validate setup.sh "--repo=$F_REPO" "--commit=$commit" "${setup[@]}"
validate run.sh "--run_name=$F_RUN_NAME" "${F_ENV[@]/#/--env=}" -- "${command[@]}"

script=$STATE_DIR/$F_NAME/startup-$F_RUN_NAME.sh
mkdir -p "$(dirname "$script")"
{
  echo '#!/bin/bash'
  echo "# basque_vlm: run '$F_RUN_NAME' on TPU $F_NAME (launch/submit.sh), at every boot"
  printf 'BVLM_%s=%s\n' RUN_NAME "$(shquote "$F_RUN_NAME")" REPO "$(shquote "$F_REPO")" \
    COMMIT "$commit" GIT_TOKEN_SECRET "$(shquote "$F_GIT_TOKEN_SECRET")" \
    PROJECT "$(shquote "$F_PROJECT")" TOPOLOGY "$(aot_topology "$F_ACCELERATOR")" \
    ON_END "$(shquote "$on_end")" GRACE "$F_GRACE"
  printf 'BVLM_%s=(%s)\n' SETUP "$(shjoin "${setup[@]}")" START "$(shjoin "${start[@]}")" \
    COMMAND "$(shjoin "${command[@]}")"
  function_text fetch_code
  tail -n +2 "$LAUNCH_DIR/startup.sh"
} >"$script"
dry_note "the startup script: $script"

create=("--accelerator=$F_ACCELERATOR" "--startup_script=$script")
if ((F_SPOT)); then create+=(--spot); fi
if ((F_RESERVED)); then create+=(--reserved); fi
if ((F_QUEUED)); then create+=(--queued); fi
if ((F_NOWAIT)); then create+=(--nowait); fi
if [[ -n $F_QUEUE_DEADLINE ]]; then create+=("--queue_deadline=$F_QUEUE_DEADLINE"); fi
if [[ -n $F_MAX_RUN_DURATION ]]; then create+=("--max_run_duration=$F_MAX_RUN_DURATION"); fi
if [[ -n $F_RUNTIME_VERSION ]]; then create+=("--runtime_version=$F_RUNTIME_VERSION"); fi
for flag in "${F_GCLOUD_FLAG[@]}"; do create+=("--gcloud_flag=$flag"); done
launch_script create.sh "${create[@]}"
((F_DRY_RUN)) || note "the workers set themselves up and run '$F_RUN_NAME'; its logs:" \
  "${logs:+$logs/$F_RUN_NAME and }on the workers (launch/logs.sh --run_name=$F_RUN_NAME)"
