#!/usr/bin/env bash
# The logs of a run started by launch/run.sh: tail, follow, fetch; or its state on each worker.
#
#   launch/logs.sh --name=NAME --zone=ZONE --project=PROJECT [--run_name=train]
#       [--lines=50] [--follow] [--worker=all|I]     the last lines of each worker's log,
#                                                    prefixed `[worker I]` (--follow: keep going)
#   launch/logs.sh ... --fetch=DIR                   each worker's whole log, as DIR/I.log
#   launch/logs.sh ... --status                      running / exited:CODE / lost / absent,
#                                                    per worker
#
# The logs live on the workers, ~/basque_vlm_runs/RUN_NAME/worker-I.log, and go when the TPU VM
# is deleted (metrics.jsonl and the checkpoints are in the gs:// workdir): fetch them first.
# With --worker=all the workers' lines interleave; --worker=0 is process 0 (it writes the
# training progress).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

F_RUN_NAME=$DEFAULT_RUN_NAME
F_LINES=50
F_FOLLOW=0
F_WORKER=all
F_FETCH=""
F_STATUS=0
flags str run_name lines worker fetch
flags bool follow status
parse_flags "$@"
((${#ARGS[@]} == 0)) || die "unexpected arguments after --: ${ARGS[*]}"
require_target
check_run_name "$F_RUN_NAME"
[[ $F_LINES =~ ^[0-9]+$ ]] || die "--lines must be a number (0: the whole log)"
[[ $F_WORKER =~ ^(all|[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*)$ ]] ||
  die "--worker must be all, I, I-J or a list (0,2,5)"
if [[ -n $F_FETCH ]] && ((F_STATUS || F_FOLLOW)); then
  die "--fetch goes alone (not with --status or --follow)"
fi
((F_STATUS + F_FOLLOW < 2)) || die "--status and --follow exclude each other"

if ((F_STATUS)); then
  states=$(run_states "$F_RUN_NAME")
  if ! ((F_DRY_RUN)); then
    while read -r w state; do echo "worker $w: $state"; done <<<"$states"
  fi
elif [[ -n $F_FETCH ]]; then
  if ! ((F_DRY_RUN)); then mkdir -p "$F_FETCH"; fi
  tpu_ssh all "$(worker_cmd logs "--run_name=$F_RUN_NAME" --lines=0)" \
    "--output-directory=$F_FETCH"
  ((F_DRY_RUN)) || note "the logs of run $F_RUN_NAME are in $F_FETCH/I.log (I: the worker)"
else
  words=(logs "--run_name=$F_RUN_NAME" "--lines=$F_LINES" --prefix)
  if ((F_FOLLOW)); then words+=(--follow); fi
  tpu_ssh "$F_WORKER" "$(worker_cmd "${words[@]}")"
fi
