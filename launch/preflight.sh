#!/usr/bin/env bash
# Check, before a run, that every worker of the TPU VM is ready and alike; prints one row per
# worker and a verdict: `PREFLIGHT OK: ...` (exit 0) or `PREFLIGHT FAILED: ...` (exit 1).
#
#   launch/preflight.sh --name=NAME --zone=ZONE --project=PROJECT [--commit=SHA]
#       [--out_dir=DIR] [--dry_run]
#   launch/preflight.sh --from_dir=DIR [--num_workers=N] [--commit=SHA]
#
# Every worker runs `launch/worker.sh probe` (gcloud's --output-directory keeps each worker's
# answer in DIR/I.log; default DIR ~/.cache/basque_vlm_launch/NAME/preflight, or under
# $BVLM_LAUNCH_DIR). It fails when:
#   - a worker does not answer (no checkout: run launch/setup.sh), or the number of answers is
#     not the TPU's number of workers;
#   - the workers' code differs (git rev-parse HEAD), is not --commit (when given; a tag or
#     short hash is resolved here), or has uncommitted changes;
#   - the workers' packages differ (a hash of `pip freeze` of ~/basque_vlm/.venv; jax, jaxlib
#     and libtpu shown), or a worker has no .venv;
#   - a process holds a TPU device (/dev/accel*, /dev/vfio/N) or libtpu's /tmp/libtpu_lockfile
#     (found with lsof; a stale process from an earlier run makes the next one fail to start);
#   - a run started by launch/run.sh is still running.
# Other python processes of the user are reported as a warning. --from_dir judges answers
# collected before (DIR/0.log, DIR/1.log, ...) without contacting the TPU.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

F_COMMIT=""
F_OUT_DIR=""
F_FROM_DIR=""
F_NUM_WORKERS=""
flags str commit out_dir from_dir num_workers
parse_flags "$@"
((${#ARGS[@]} == 0)) || die "unexpected arguments after --: ${ARGS[*]}"
[[ -z $F_NUM_WORKERS || $F_NUM_WORKERS =~ ^[1-9][0-9]*$ ]] ||
  die "--num_workers must be a positive number"
expected_commit=""
if [[ -n $F_COMMIT ]]; then expected_commit=$(resolve_commit "$F_COMMIT"); fi

# judge DIR N: the table and the verdict from DIR/0.log .. DIR/(N-1).log.
judge() {
  local dir=$1 n=$2 w line kv key f
  local -A val=()
  local -a problems=() warnings=() answered=()
  printf '%-6s %-12s %-5s %-16s %-8s %-8s %-10s %-16s %s\n' worker commit dirty packages \
    jax jaxlib libtpu tpu_holders runs
  for ((w = 0; w < n; w++)); do
    f=$dir/$w.log
    line=$(grep -ao 'BVLM_PROBE .*' "$f" 2>/dev/null | tail -n 1) || line=""
    if [[ -z $line ]]; then
      printf '%-6s (no answer: %s)\n' "$w" "$f"
      problems+=("worker $w did not answer (no checkout? run launch/setup.sh; see $f)")
      continue
    fi
    answered+=("$w")
    for kv in ${line#BVLM_PROBE }; do
      key=${kv%%=*}
      val[$w.$key]=${kv#*=}
    done
    printf '%-6s %-12.12s %-5s %-16s %-8s %-8s %-10s %-16s %s\n' "$w" "${val[$w.commit]:-?}" \
      "${val[$w.dirty]:-?}" "${val[$w.packages]:-?}" "${val[$w.jax]:-?}" "${val[$w.jaxlib]:-?}" \
      "${val[$w.libtpu]:-?}" "${val[$w.tpu_holders]:-?}" "${val[$w.runs]:-?}"
    [[ ${val[$w.dirty]:-0} == 0 ]] ||
      problems+=("worker $w has ${val[$w.dirty]} uncommitted changes in its checkout")
    [[ ${val[$w.packages]:-none} != none ]] ||
      problems+=("worker $w has no ~/$REMOTE_DIR/.venv (run launch/setup.sh)")
    [[ ${val[$w.tpu_holders]:--} == - ]] ||
      problems+=("worker $w: the TPU is held by ${val[$w.tpu_holders]} (pid:command;"
        "stop it: launch/stop.sh, or kill it)")
    [[ ${val[$w.runs]:--} == - ]] ||
      problems+=("worker $w: still running ${val[$w.runs]} (run:pid; launch/stop.sh)")
    [[ ${val[$w.py_procs]:-0} == 0 ]] ||
      warnings+=("worker $w: ${val[$w.py_procs]} python processes of the user (pgrep -a python)")
  done
  local field groups
  for field in commit packages; do
    groups=$(for w in "${answered[@]}"; do printf '%s %s\n' "${val[$w.$field]}" "$w"; done |
      awk '{w[$1] = w[$1] (w[$1] == "" ? "" : ",") $2}
           END {for (v in w) print v " on workers " w[v]}' |
      sort)
    if (($(grep -c . <<<"$groups") > 1)); then
      problems+=("the workers' $field differs: $(paste -sd';' - <<<"$groups" | sed 's/;/; /g')")
    fi
  done
  if [[ -n $expected_commit ]]; then
    for w in "${answered[@]}"; do
      if [[ ${val[$w.commit]} != "$expected_commit" ]]; then
        problems+=("worker $w is at commit ${val[$w.commit]}, not $expected_commit")
      fi
    done
  fi
  local files
  files=$(find "$dir" -maxdepth 1 -regex '.*/[0-9]+\.log' | wc -l)
  if ((files > n)); then
    problems+=("$files answers for $n workers (stale files in $dir?)")
  fi
  for line in "${warnings[@]}"; do printf 'warning: %s\n' "$line"; done
  if ((${#problems[@]})); then
    printf 'PREFLIGHT FAILED: %s\n' "$(printf '%s; ' "${problems[@]}" | sed 's/; $//')"
    return 1
  fi
  local w0=${answered[0]}
  printf 'PREFLIGHT OK: %s workers at commit %s, same packages %s (jax %s, jaxlib %s, ' \
    "$n" "${val[$w0.commit]}" "${val[$w0.packages]}" "${val[$w0.jax]}" "${val[$w0.jaxlib]}"
  printf 'libtpu %s), TPU free, nothing running\n' "${val[$w0.libtpu]}"
}

if [[ -n $F_FROM_DIR ]]; then
  [[ -d $F_FROM_DIR ]] || die "--from_dir=$F_FROM_DIR is not a folder"
  n=$F_NUM_WORKERS
  if [[ -z $n ]]; then n=$(find "$F_FROM_DIR" -maxdepth 1 -regex '.*/[0-9]+\.log' | wc -l); fi
  ((n > 0)) || die "no answers (0.log, 1.log, ...) in $F_FROM_DIR"
  judge "$F_FROM_DIR" "$n"
  exit
fi

require_target
out_dir=${F_OUT_DIR:-$STATE_DIR/$F_NAME/preflight}
n=$(worker_count "${F_NUM_WORKERS:-1}")
if ! ((F_DRY_RUN)); then
  mkdir -p "$out_dir"
  find "$out_dir" -maxdepth 1 -name '*.log' -delete
fi
tpu_ssh all "$(worker_cmd probe)" "--output-directory=$out_dir" ||
  note "ssh failed on some workers (their answers are missing below)"
if ((F_DRY_RUN)); then
  dry_note "the verdict comes from the answers in $out_dir/I.log" \
    "(launch/preflight.sh --from_dir=$out_dir)"
  exit 0
fi
judge "$out_dir" "$n"
