#!/usr/bin/env bash
# Delete the TPU VM (or its queued resource, and with it the VM).
#
#   launch/delete.sh --name=NAME --zone=ZONE --project=PROJECT [--queued] [--dry_run]
#
# What lives on the workers goes with them: the code checkout, the copied data and the run logs
# (launch/logs.sh --fetch=DIR first). The gs:// workdirs (checkpoints, metrics.jsonl) stay.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

F_QUEUED=0
flags bool queued
parse_flags "$@"
((${#ARGS[@]} == 0)) || die "unexpected arguments after --: ${ARGS[*]}"
require_target

kind=vm
if ((F_QUEUED)); then kind=queued; fi
mapfile -t delete < <(delete_words "$kind")
run "${delete[@]}"
