#!/usr/bin/env bash
# Run one command on every worker of the TPU VM, in the background, a log file per worker.
#
#   launch/run.sh --name=NAME --zone=ZONE --project=PROJECT [--run_name=train]
#       [--accelerator=TYPE] [--env=KEY=VALUE ...] [--logs_to=gs://PREFIX]
#       [--keep | --grace=1800] [--wait [--poll=60]] [--dry_run] -- COMMAND...
#
#   launch/run.sh --name=v5p --zone=us-east5-a --project=P --run_name=align -- \
#       python -m basque_vlm.train --config=configs/llama31_8b.py:align \
#       --workdir=gs://BUCKET/workdirs/llama31_8b_align
#
# Each worker runs COMMAND in ~/basque_vlm with its .venv first on PATH (`launch/worker.sh
# start`): nohup, in its own session, so it outlives the ssh connection; stdout and stderr are
# appended to ~/basque_vlm_runs/RUN_NAME/worker-I.log on worker I (its exit code lands in
# worker-I.exit). The same command on every worker is what JAX wants on a TPU VM:
# jax.distributed.initialize() finds the other workers by itself. A run of the same name that is
# still running on a worker is an error (launch/stop.sh first).
#
#   --accelerator  the slice's type: a `basque_vlm.train` command of the 8B configs gets the
#            slice's preset (launch/common.sh PRESETS: e.g. v6e-8 instruct
#            --config.train.microbatches=4), unless it sets train.microbatches itself
#   --env    an environment variable for the command (XLA_FLAGS, LIBTPU_INIT_ARGS, ...);
#            repeatable (values of *TOKEN*, *KEY*, *SECRET*, *PASSWORD* are not echoed)
#   --logs_to  where every worker copies its log, every 5 minutes and at the end, and worker 0
#            records how the run ended (LOGS_TO/RUN_NAME/state: exited:CODE); default: the
#            command's --workdir=gs://W as gs://W/logs
#   --keep   the slice stays when the run ends. Without it, when the command ends without a
#            SIGTERM, worker 0 deletes the slice (its queued resource, or the TPU VM): at once
#            after exit 0, and --grace seconds (default 1800) after a failure, time to look at
#            it (launch/stop.sh cancels the deletion). The VM's service account needs the
#            permission (e.g. roles/tpu.admin)
#   --wait   stay until the command has ended on every worker (polling every --poll seconds);
#            exit 0 only when it exited 0 everywhere
#
# Logs: launch/logs.sh (tail, follow, fetch, status). Stop: launch/stop.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

F_RUN_NAME=$DEFAULT_RUN_NAME
F_ACCELERATOR=""
F_ENV=()
F_LOGS_TO=""
F_KEEP=0
F_GRACE=1800
F_WAIT=0
F_POLL=60
flags str run_name poll accelerator logs_to grace
flags list env
flags bool wait keep
parse_flags "$@"
((${#ARGS[@]})) || die "no command: launch/run.sh [flags] -- COMMAND..."
require_target
check_run_name "$F_RUN_NAME"
[[ $F_POLL =~ ^[1-9][0-9]*$ ]] || die "--poll must be a positive number of seconds"
[[ $F_GRACE =~ ^[0-9]+$ ]] || die "--grace must be a number of seconds"
[[ -z $F_LOGS_TO || $F_LOGS_TO =~ ^gs://[^/]+ ]] || die "--logs_to must be a gs:// prefix"
start=(start "--run_name=$F_RUN_NAME")
for item in "${F_ENV[@]}"; do
  [[ $item =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env must be KEY=VALUE, got '$item'"
  start+=("--env=$item")
done
command=("${ARGS[@]}")
if [[ -n $F_ACCELERATOR ]]; then
  mapfile -t command < <(with_preset "$F_ACCELERATOR" "${ARGS[@]}")
fi
mapfile -t lifecycle < <(lifecycle_flags "$F_KEEP" "$F_GRACE" \
  "$(logs_destination "$F_LOGS_TO" "${command[@]}")")
start+=("${lifecycle[@]}")

tpu_ssh all "$(worker_cmd "${start[@]}" -- "${command[@]}")" ||
  die "starting failed on some worker; it may run on others:" \
    "launch/logs.sh --status --run_name=$F_RUN_NAME; launch/stop.sh --run_name=$F_RUN_NAME"
((F_WAIT)) || exit 0

dry_note "--wait: the status below repeats every $F_POLL s until the run has ended on every worker"
while :; do
  mapfile -t states < <(run_states "$F_RUN_NAME")
  summary=$(printf '%s\n' "${states[@]}" | awk '{print $2}' | sort | uniq -c |
    awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}')
  if printf '%s\n' "${states[@]}" | grep -qE ' (running|noanswer)$'; then
    note "run $F_RUN_NAME: $summary; next check in $F_POLL s"
    sleep "$F_POLL"
    continue
  fi
  if printf '%s\n' "${states[@]}" | grep -qvE ' exited:0$'; then
    note "run $F_RUN_NAME ended: $summary (launch/logs.sh --run_name=$F_RUN_NAME)"
    exit 1
  fi
  ((F_DRY_RUN)) || note "run $F_RUN_NAME ended: exit 0 on every worker"
  exit 0
done
