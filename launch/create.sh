#!/usr/bin/env bash
# Create a Cloud TPU VM (or a queued resource that provisions one) for basque_vlm.
#
#   launch/create.sh --name=NAME --zone=ZONE --project=PROJECT --accelerator=TYPE
#       [--spot | --reserved] [--queued [--nowait] [--poll=SECONDS] [--queue_deadline=24h]
#       [--max_run_duration=DURATION]] [--startup_script=FILE]
#       [--runtime_version=VERSION] [--gcloud_flag=FLAG ...] [--dry_run]
#
#   --accelerator      v4-8, v5p-8, v5e-16 (gcloud's v5litepod-16), v6e-8, ...
#   --runtime_version  default by generation: v4 tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite,
#                      v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e
#   --spot             Spot capacity: cheap, preemptible (launch/recover.sh brings a run back)
#   --reserved         your project's reservation
#   --queued           a queued resource (`gcloud compute tpus queued-resources`, its id and the
#                      node's both NAME): it waits in the queue for capacity; this script then
#                      polls every --poll seconds (default 30) until it is ACTIVE (--nowait: not)
#   --queue_deadline   how long the request may wait in the queue (gcloud's
#                      --valid-until-duration; default 24h, `none` for no limit): capacity that
#                      turns up days later, when nobody is watching, is not taken
#   --max_run_duration the most the TPU may run once provisioned, then it is deleted (gcloud's
#                      alpha --max-run-duration, which Google documents with Flex-start:
#                      --gcloud_flag=--provisioning-model=flex-start); --queued only
#   --startup_script   a script every worker runs as root at every boot (launch/submit.sh makes
#                      one that sets up, runs and ends the run)
#   --gcloud_flag      one more flag for the create command, as is; repeatable
#                      (--gcloud_flag=--internal-ips, --gcloud_flag=--service-account=SA,
#                      --gcloud_flag=--data-disk=source=DISK,mode=read-only, ...)
#
# A plain TPU VM create returns once the VM is READY. Next: launch/setup.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

F_ACCELERATOR=""
F_RUNTIME_VERSION=""
F_SPOT=0
F_RESERVED=0
F_QUEUED=0
F_NOWAIT=0
F_POLL=30
F_QUEUE_DEADLINE=24h
F_MAX_RUN_DURATION=""
F_STARTUP_SCRIPT=""
F_GCLOUD_FLAG=()
flags str accelerator runtime_version poll queue_deadline max_run_duration startup_script
flags bool spot reserved queued nowait
flags list gcloud_flag
parse_flags "$@"
((${#ARGS[@]} == 0)) || die "unexpected arguments after --: ${ARGS[*]}"
require_target
[[ -n $F_ACCELERATOR ]] || die "--accelerator is required (e.g. --accelerator=v5p-8)"
[[ $F_ACCELERATOR =~ ^v[0-9][a-z0-9]*-[0-9]+$ ]] ||
  die "--accelerator='$F_ACCELERATOR' is not a TPU type (e.g. v4-8, v5p-8, v5e-16, v6e-8)"
((F_SPOT + F_RESERVED < 2)) || die "--spot and --reserved exclude each other"
[[ $F_POLL =~ ^[1-9][0-9]*$ ]] || die "--poll must be a positive number of seconds"
((F_QUEUED || !F_NOWAIT)) || die "--nowait only applies with --queued"
[[ $F_QUEUE_DEADLINE == none ]] || check_duration queue_deadline "$F_QUEUE_DEADLINE"
if [[ -n $F_MAX_RUN_DURATION ]]; then
  check_duration max_run_duration "$F_MAX_RUN_DURATION"
  ((F_QUEUED)) || die "--max_run_duration needs --queued (gcloud has it for queued resources only)"
fi
[[ -z $F_STARTUP_SCRIPT || -f $F_STARTUP_SCRIPT ]] ||
  die "--startup_script=$F_STARTUP_SCRIPT is not a file"

accelerator=$(normalize_accelerator "$F_ACCELERATOR")
version=$F_RUNTIME_VERSION
if [[ -z $version ]]; then
  version=$(runtime_version "$accelerator") ||
    die "no default runtime version for '$F_ACCELERATOR' (v4, v5e, v5p, v6e have one);" \
      "pass --runtime_version"
fi

extra=()
if ((F_SPOT)); then extra+=(--spot); fi
if ((F_RESERVED)); then extra+=(--reserved); fi
if [[ -n $F_STARTUP_SCRIPT ]]; then
  extra+=("--metadata-from-file=startup-script=$F_STARTUP_SCRIPT")
fi

if ((F_QUEUED)); then
  track=()
  if [[ -n $F_MAX_RUN_DURATION ]]; then
    track=(alpha)
    extra+=("--max-run-duration=$F_MAX_RUN_DURATION")
  fi
  if [[ $F_QUEUE_DEADLINE != none && " ${F_GCLOUD_FLAG[*]} " != *" --valid-until-"* ]]; then
    extra+=("--valid-until-duration=$F_QUEUE_DEADLINE")
  fi
  run gcloud "${track[@]}" compute tpus queued-resources create "$F_NAME" "--node-id=$F_NAME" \
    "--zone=$F_ZONE" "--project=$F_PROJECT" "--accelerator-type=$accelerator" \
    "--runtime-version=$version" "${extra[@]}" "${F_GCLOUD_FLAG[@]}"
  ((F_NOWAIT)) && exit 0
  dry_note "the describe below repeats every $F_POLL s until the state is ACTIVE"
  missing=0
  while :; do
    state=$(queued_state ACTIVE)
    case $state in
      ACTIVE) break ;;
      FAILED | SUSPENDED | SUSPENDING | DELETING)
        die "queued resource $F_NAME is $state (gcloud compute tpus queued-resources" \
          "describe $F_NAME --zone=$F_ZONE --project=$F_PROJECT)" ;;
      NOT_FOUND | ERROR)
        missing=$((missing + 1))
        ((missing < 5)) || die "queued resource $F_NAME: $state five times in a row" ;;
    esac
    note "queued resource $F_NAME: $state; next check in $F_POLL s"
    sleep "$F_POLL"
  done
  ((F_DRY_RUN)) ||
    note "queued resource $F_NAME is ACTIVE: TPU VM $F_NAME ($accelerator, $version) is up"
else
  run gcloud compute tpus tpu-vm create "$F_NAME" "--zone=$F_ZONE" "--project=$F_PROJECT" \
    "--accelerator-type=$accelerator" "--version=$version" "${extra[@]}" "${F_GCLOUD_FLAG[@]}"
fi
