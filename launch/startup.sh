#!/usr/bin/env bash
# The startup script of a slice made by launch/submit.sh: every worker runs it as root at every
# boot (the TPU VM's `startup-script` metadata; its output also goes to `journalctl -u
# google-startup-scripts`). submit.sh writes the run's settings (BVLM_* variables) and
# fetch_code (launch/common.sh) above this text. At each boot, on each worker:
#   1. the code at BVLM_COMMIT in /opt/basque_vlm (for a private repository, a token read from
#      Secret Manager, BVLM_GIT_TOKEN_SECRET, by the VM's service account);
#   2. launch/worker.sh setup: Python, the environment from the wheelhouse on GCS, the data
#      (copied, or mounted with gcsfuse);
#   3. a run that already ended with exit 0 on this disk is not run again;
#   4. launch/worker.sh fit: the train step fits the slice;
#   5. launch/worker.sh start --foreground: the command, which resumes from the latest checkpoint
#      of its workdir; its logs go to the run's gs:// logs folder; when it ends, worker 0 deletes
#      the slice (unless submit.sh --keep).
# A step that fails ends the run as a failure (logs shipped, `exited:CODE` recorded, the slice
# deleted after the grace period). The whole of it runs on any Linux machine as
#   BVLM_HOME=DIR BVLM_WORKER_ID=0 BVLM_DRY_RUN=1 bash STARTUP_SCRIPT
# (the code under DIR; what would reach apt, pip, systemd, gcsfuse or Google Cloud printed).
set -euo pipefail
# shellcheck disable=SC2154 # BVLM_* and fetch_code are defined above this text
case ${1:-} in
  -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p;}}' "$0"; exit 0 ;;
esac

: "${BVLM_HOME:=/opt}"
CODE=$BVLM_HOME/basque_vlm
RUN_DIR=$BVLM_HOME/basque_vlm_runs/$BVLM_RUN_NAME

dry() { [[ ${BVLM_DRY_RUN:-0} == 1 ]]; }

# failed RC: the run ends before it started: as a run that failed (worker.sh end); without the
# code, any worker deletes the slice after the grace period (nothing runs to lose).
failed() {
  local rc=$1
  trap - EXIT
  ((rc)) || exit 0
  echo "=== $(date -u +%FT%TZ) the startup failed (exit $rc)"
  if [[ -f $CODE/launch/worker.sh ]]; then
    bash "$CODE/launch/worker.sh" end "--rc=$rc" "${BVLM_START[@]}" || true
  elif [[ -n $BVLM_ON_END ]]; then
    sleep "$BVLM_GRACE"
    if dry; then echo "DRY $BVLM_ON_END"; else bash -c "$BVLM_ON_END" || true; fi
  fi
  exit "$rc"
}

main() {
  mkdir -p "$RUN_DIR"
  exec > >(tee -a "$RUN_DIR/startup.log") 2>&1
  echo "=== $(date -u +%FT%TZ) boot: run $BVLM_RUN_NAME at commit $BVLM_COMMIT"
  trap 'failed $?' EXIT
  local token=""
  if [[ -n $BVLM_GIT_TOKEN_SECRET ]]; then
    token=$(mktemp)
    local -a access=(gcloud secrets versions access latest "--secret=$BVLM_GIT_TOKEN_SECRET"
      "--project=$BVLM_PROJECT")
    if dry; then echo "DRY ${access[*]}"; else "${access[@]}" >"$token"; fi
  fi
  fetch_code "$CODE" "$BVLM_REPO" "$BVLM_COMMIT" "$token"
  local -a worker=(bash "$CODE/launch/worker.sh")
  "${worker[@]}" setup "${BVLM_SETUP[@]}"
  if "${worker[@]}" status "--run_name=$BVLM_RUN_NAME" | grep -q 'state=exited code=0$'; then
    echo "=== run $BVLM_RUN_NAME ended with exit 0 on an earlier boot: nothing to do"
    trap - EXIT
    return
  fi
  "${worker[@]}" fit "--topology=$BVLM_TOPOLOGY" -- "${BVLM_COMMAND[@]}"
  trap - EXIT
  "${worker[@]}" start --foreground "${BVLM_START[@]}" -- "${BVLM_COMMAND[@]}"
}

main
