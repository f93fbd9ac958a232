#!/usr/bin/env bash
# Stop a run started by launch/run.sh on every worker: SIGTERM (the trainer saves a checkpoint
# at the current step and exits 0), SIGKILL to what is left after --timeout seconds.
#
#   launch/stop.sh --name=NAME --zone=ZONE --project=PROJECT [--run_name=train]
#       [--timeout=300] [--dry_run]
#
# The same workdir then resumes where it stopped: launch/run.sh with the same command.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

F_RUN_NAME=$DEFAULT_RUN_NAME
F_TIMEOUT=300
flags str run_name timeout
parse_flags "$@"
((${#ARGS[@]} == 0)) || die "unexpected arguments after --: ${ARGS[*]}"
require_target
check_run_name "$F_RUN_NAME"
[[ $F_TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"

tpu_ssh all "$(worker_cmd stop "--run_name=$F_RUN_NAME" "--timeout=$F_TIMEOUT")"
