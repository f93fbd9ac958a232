#!/usr/bin/env bash
# Check, before a run, that every worker of the TPU VM is ready and alike; prints one row per
# worker and a verdict: `PREFLIGHT OK: ...` (exit 0) or `PREFLIGHT FAILED: ...` (exit 1).
#
#   launch/preflight.sh --name=NAME --zone=ZONE --project=PROJECT [--commit=SHA]
#       [--data=gs://BUCKET/PREFIX[=DIR] ...] [--accelerator=TYPE -- COMMAND...]
#       [--out_dir=DIR] [--dry_run]
#   launch/preflight.sh --from_dir=DIR [--num_workers=N] [--commit=SHA]
#
# Every worker runs `launch/worker.sh probe` (gcloud's --output-directory keeps each worker's
# answer in DIR/I.log; default DIR ~/.cache/basque_vlm_launch/NAME/preflight, or under
# $BVLM_LAUNCH_DIR). --data names the data as setup.sh was given it (its DIR is checked);
# --accelerator with the run's command checks that a `basque_vlm.train` command fits the slice:
# every worker compiles its train step for the slice (`python -m basque_vlm.aot --nodecode`
# with the command's --config and --config.* overrides, the slice's preset added as run.sh adds
# it: launch/common.sh PRESETS), a minute or two. It fails when:
#   - a worker does not answer (no checkout: run launch/setup.sh), or the number of answers is
#     not the TPU's number of workers;
#   - the workers' code differs (git rev-parse HEAD), is not --commit (when given; a tag or
#     short hash is resolved here), or has uncommitted changes;
#   - the workers' packages differ (a hash of `pip freeze` of ~/basque_vlm/.venv; jax, jaxlib
#     and libtpu shown), or a worker has no .venv;
#   - the workers' Pythons differ, or one is not 3.11, 3.12 or 3.13 (pyproject.toml);
#   - a data folder is missing or empty on a worker;
#   - the train step does not fit the slice (the per-chip numbers are shown);
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
F_ACCELERATOR=""
F_DATA=()
flags str commit out_dir from_dir num_workers accelerator
flags list data
parse_flags "$@"
((${#ARGS[@]} == 0 || ${#F_ACCELERATOR})) ||
  die "a command after -- needs --accelerator (the slice to check it on)"
[[ -z $F_NUM_WORKERS || $F_NUM_WORKERS =~ ^[1-9][0-9]*$ ]] ||
  die "--num_workers must be a positive number"
expected_commit=""
if [[ -n $F_COMMIT ]]; then expected_commit=$(resolve_commit "$F_COMMIT"); fi

# judge DIR N: the table and the verdict from DIR/0.log .. DIR/(N-1).log.
judge() {
  local dir=$1 n=$2 w line kv key f fit
  local -A val=()
  local -a problems=() warnings=() answered=()
  printf '%-6s %-12s %-5s %-16s %-8s %-8s %-10s %-8s %-12s %-10s %-6s %s\n' worker commit \
    dirty packages jax jaxlib libtpu python tpu_holders runs data fit
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
    fit=${val[$w.fit]:--}
    printf '%-6s %-12.12s %-5s %-16s %-8s %-8s %-10s %-8s %-12s %-10s %-6s %s\n' "$w" \
      "${val[$w.commit]:-?}" "${val[$w.dirty]:-?}" "${val[$w.packages]:-?}" "${val[$w.jax]:-?}" \
      "${val[$w.jaxlib]:-?}" "${val[$w.libtpu]:-?}" "${val[$w.python]:-?}" \
      "${val[$w.tpu_holders]:-?}" "${val[$w.runs]:-?}" \
      "$([[ ${val[$w.data_missing]:--} == - ]] && echo ok || echo missing)" "${fit//;/ }"
    [[ ${val[$w.dirty]:-0} == 0 ]] ||
      problems+=("worker $w has ${val[$w.dirty]} uncommitted changes in its checkout")
    [[ ${val[$w.packages]:-none} != none ]] ||
      problems+=("worker $w has no ~/$REMOTE_DIR/.venv (run launch/setup.sh)")
    [[ ${val[$w.tpu_holders]:--} == - ]] ||
      problems+=("worker $w: the TPU is held by ${val[$w.tpu_holders]} (pid:command;"
        "stop it: launch/stop.sh, or kill it)")
    [[ ${val[$w.runs]:--} == - ]] ||
      problems+=("worker $w: still running ${val[$w.runs]} (run:pid; launch/stop.sh)")
    [[ ${val[$w.python]:-none} =~ ^3\.1[123]\. ]] ||
      problems+=("worker $w's .venv has Python ${val[$w.python]:-none}; the project needs 3.11," \
        "3.12 or 3.13 (launch/setup.sh --python=python3.11)")
    [[ ${val[$w.data_missing]:--} == - ]] ||
      problems+=("worker $w: no data in ${val[$w.data_missing]} (launch/setup.sh --data=...)")
    case $fit in
      - | *fits=true* | *fits=skipped* | *fits=unknown*) ;;
      *fits=false*)
        f=${fit//;/ }
        problems+=("worker $w: the train step does not fit: ${f#fits=false } per chip (rows:"
          "per chip x micro-batches); more --config.train.microbatches, see $dir/$w.log") ;;
      *) problems+=("worker $w: the fit check failed (basque_vlm.aot; see $dir/$w.log)") ;;
    esac
    [[ ${val[$w.py_procs]:-0} == 0 ]] ||
      warnings+=("worker $w: ${val[$w.py_procs]} python processes of the user (pgrep -a python)")
  done
  local field groups
  for field in commit packages python; do
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
  printf 'libtpu %s, Python %s), TPU free, nothing running%s\n' "${val[$w0.libtpu]}" \
    "${val[$w0.python]}" "$(fit_note "${val[$w0.fit]:--}")"
}

fit_note() { # fit_note FIT: ", the train step fits: ..." for a probe's fit field
  case $1 in
    *fits=true*) local f=${1//;/ }; printf ', the train step fits: %s' "${f#fits=true }" ;;
  esac
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
probe=(probe)
while read -r data_dir; do probe+=("--data_dir=$data_dir"); done < <(data_dirs "${F_DATA[@]}")
if ((${#ARGS[@]})); then
  mapfile -t command < <(with_preset "$F_ACCELERATOR" "${ARGS[@]}")
  probe+=("--topology=$(aot_topology "$F_ACCELERATOR")" -- "${command[@]}")
fi
tpu_ssh all "$(worker_cmd "${probe[@]}")" "--output-directory=$out_dir" ||
  note "ssh failed on some workers (their answers are missing below)"
if ((F_DRY_RUN)); then
  dry_note "the verdict comes from the answers in $out_dir/I.log" \
    "(launch/preflight.sh --from_dir=$out_dir)"
  exit 0
fi
judge "$out_dir" "$n"
