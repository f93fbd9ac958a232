# shellcheck shell=bash
# Shared by the launch/*.sh scripts (sourced, never run): flag parsing, the dry-run wrapper `run`,
# the gcloud TPU helpers and the runtime versions per TPU generation.
#
# Flags are --key=value (or --key value); booleans are --key (or --key=true|false). A flag --foo_bar
# sets the variable F_FOO_BAR; a list flag (repeatable) appends to the array F_FOO_BAR. Everything
# after `--` lands in the array ARGS. Every script takes --name (the TPU; default $BVLM_TPU),
# --zone (default $CLOUDSDK_COMPUTE_ZONE), --project (default $CLOUDSDK_CORE_PROJECT), --dry_run
# (print the gcloud commands instead of running them) and --help.
#
# Output: in a dry run, the commands go to stdout, one per line, quoted as Python's shlex.join
# quotes them (copy-pasteable); `# ...` lines are notes. In a real run each command is echoed to
# stderr as `+ command` before it runs. Errors are one line on stderr, `SCRIPT: error: ...`, exit 2.

if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 404)); then
  echo "$(basename "$0"): error: bash >= 4.4 is needed (this is $BASH_VERSION;" \
    "macOS: brew install bash)" >&2
  exit 2
fi
LAUNCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT=$(basename "$0")
# Where the code lives on every worker (relative to the login directory); the default run name.
REMOTE_DIR=basque_vlm
# Where a startup script (launch/submit.sh) puts the code on every worker, as root.
STARTUP_DIR=/opt/basque_vlm
# shellcheck disable=SC2034 # read by the scripts
DEFAULT_RUN_NAME=train
STATE_DIR=${BVLM_LAUNCH_DIR:-$HOME/.cache/basque_vlm_launch}

F_NAME=${BVLM_TPU:-}
F_ZONE=${CLOUDSDK_COMPUTE_ZONE:-}
F_PROJECT=${CLOUDSDK_CORE_PROJECT:-}
F_DRY_RUN=0
ARGS=()
declare -A FLAG_KIND=([name]=str [zone]=str [project]=str [dry_run]=bool)

die() {
  printf '%s: error: %s\n' "$SCRIPT" "$*" >&2
  exit 2
}

note() { printf '%s: %s\n' "$SCRIPT" "$*" >&2; }

usage() {
  # The script's header comment, without the leading '# '.
  sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p;}}' "$0"
}

# flags KIND NAME...: declares flags of one kind (str, bool, list).
flags() {
  local kind=$1 name
  shift
  for name; do FLAG_KIND[$name]=$kind; done
}

parse_flags() {
  local arg key val var has_val
  while (($#)); do
    arg=$1
    shift
    case $arg in
      --)
        # shellcheck disable=SC2034 # the scripts read ARGS
        ARGS=("$@")
        return 0
        ;;
      -h | --help) usage; exit 0 ;;
      --?*) ;;
      *) die "unexpected argument '$arg' (flags are --key=value; a command goes after --)" ;;
    esac
    key=${arg#--}
    has_val=0
    val=
    if [[ $key == *=* ]]; then
      val=${key#*=}
      key=${key%%=*}
      has_val=1
    fi
    [[ -n ${FLAG_KIND[$key]:-} ]] || die "unknown flag --$key (see $SCRIPT --help)"
    var=F_${key^^}
    case ${FLAG_KIND[$key]} in
      bool)
        if ((has_val)); then
          case $val in
            true | 1 | yes) val=1 ;;
            false | 0 | no) val=0 ;;
            *) die "--$key takes no value (or true/false), got '$val'" ;;
          esac
        else
          val=1
        fi
        printf -v "$var" '%s' "$val"
        ;;
      str | list)
        if ! ((has_val)); then
          (($#)) && [[ $1 != --* ]] || die "--$key needs a value (--$key=VALUE)"
          val=$1
          shift
        fi
        [[ -n $val ]] || die "--$key needs a non-empty value"
        if [[ ${FLAG_KIND[$key]} == str ]]; then
          printf -v "$var" '%s' "$val"
        else
          local -n list_ref=$var
          list_ref+=("$val")
          unset -n list_ref
        fi
        ;;
    esac
  done
}

# The flags every script needs to talk to a TPU: --name, --zone, --project.
require_target() {
  [[ -n $F_NAME ]] || die "--name is required (the TPU's name; or set BVLM_TPU)"
  [[ $F_NAME =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] ||
    die "--name='$F_NAME' is not a TPU name (lowercase letters, digits, '-'; a letter first)"
  [[ -n $F_ZONE ]] || die "--zone is required (--zone=us-east5-a; or CLOUDSDK_COMPUTE_ZONE)"
  [[ -n $F_PROJECT ]] || die "--project is required (or set CLOUDSDK_CORE_PROJECT)"
}

# check_choice FLAG VALUE CHOICE...
check_choice() {
  local flag=$1 value=$2 choice
  shift 2
  for choice; do [[ $value == "$choice" ]] && return 0; done
  die "--$flag must be one of: $* (got '$value')"
}

# shquote WORD: the word quoted for a POSIX shell exactly as Python's shlex.quote does.
shquote() {
  local s=$1 q="'\"'\"'"
  if [[ -n $s && $s =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/$q}"
  fi
}

# shjoin WORD...: one line, each word quoted (shlex.join).
shjoin() {
  local out="" word
  for word; do out+="${out:+ }$(shquote "$word")"; done
  printf '%s\n' "$out"
}

# redact: stdin with the values of secret-looking variables (--env=HF_TOKEN=..., *KEY*, *SECRET*,
# *PASSWORD*) replaced by ***, for the commands echoed to stderr (logs keep no secret).
redact() {
  sed -E 's/(--env=[A-Za-z0-9_]*(TOKEN|KEY|SECRET|PASSWORD)[A-Za-z0-9_]*=)[^ '"'"'"]*/\1***/g'
}

# run CMD...: prints CMD (dry run) or echoes it to stderr (secrets redacted) and runs it.
run() {
  if ((F_DRY_RUN)); then
    shjoin "$@"
  else
    printf '+ %s\n' "$(shjoin "$@")" | redact >&2
    "$@"
  fi
}

# Commands that only read (describe) and whose output the script needs: `query ASSUMED CMD...`
# prints CMD and outputs ASSUMED in a dry run (the command line goes to fd 3, the script's stdout),
# runs CMD otherwise.
exec 3>&1
query() {
  local assumed=$1
  shift
  if ((F_DRY_RUN)); then
    shjoin "$@" >&3
    printf '%s\n' "$assumed"
  else
    printf '+ %s\n' "$(shjoin "$@")" | redact >&2
    "$@"
  fi
}

dry_note() { if ((F_DRY_RUN)); then printf '# %s\n' "$*"; fi; }

# tpu_ssh WORKERS REMOTE_COMMAND [EXTRA_FLAG...]: runs a command on the workers (`all`, `0`,
# `1-3`) of the TPU, in the login directory, through the login shell (bash).
tpu_ssh() {
  local workers=$1 command=$2
  shift 2
  run gcloud compute tpus tpu-vm ssh "$F_NAME" "--zone=$F_ZONE" "--project=$F_PROJECT" \
    "--worker=$workers" "--command=$command" "$@"
}

# worker_cmd WORDS...: the remote command that runs launch/worker.sh in the code's checkout:
# ~/basque_vlm (setup.sh), else /opt/basque_vlm (a startup script's, launch/submit.sh).
worker_cmd() {
  printf 'cd %s 2>/dev/null || cd %s && bash launch/worker.sh %s\n' "$REMOTE_DIR" \
    "$STARTUP_DIR" "$(shjoin "$@")"
}

describe_node_cmd() {
  printf '%s\n' gcloud compute tpus tpu-vm describe "$F_NAME" "--zone=$F_ZONE" \
    "--project=$F_PROJECT" "$@"
}

describe_queued_cmd() {
  printf '%s\n' gcloud compute tpus queued-resources describe "$F_NAME" "--zone=$F_ZONE" \
    "--project=$F_PROJECT" "$@"
}

# state_of ASSUMED DESCRIBE_CMD...: the state the describe prints; NOT_FOUND when gcloud says so,
# ERROR (and gcloud's message on stderr) when it fails otherwise (auth, network, ...).
state_of() {
  local assumed=$1 out err
  shift
  err=$(mktemp)
  if out=$(query "$assumed" "$@" 2>"$err"); then
    rm -f "$err"
    printf '%s\n' "${out:-UNKNOWN}"
  elif grep -qiE 'NOT_FOUND|not found' "$err"; then
    rm -f "$err"
    printf 'NOT_FOUND\n'
  else
    grep -v '^+ ' "$err" >&2 || true
    rm -f "$err"
    printf 'ERROR\n'
  fi
}

# node_state [ASSUMED]: READY, PREEMPTED, ..., NOT_FOUND or ERROR.
node_state() {
  local -a cmd
  mapfile -t cmd < <(describe_node_cmd '--format=value(state)')
  state_of "${1:-READY}" "${cmd[@]}"
}

# queued_state [ASSUMED]: the queued resource's state (ACTIVE, SUSPENDED, ...), NOT_FOUND or ERROR.
queued_state() {
  local -a cmd
  mapfile -t cmd < <(describe_queued_cmd '--format=value(state.state)')
  state_of "${1:-ACTIVE}" "${cmd[@]}"
}

# worker_count [ASSUMED]: the number of hosts (workers) of the TPU.
worker_count() {
  local -a cmd
  mapfile -t cmd < <(describe_node_cmd '--format=value(networkEndpoints[].ipAddress)')
  local out
  out=$(query "${1:-1}" "${cmd[@]}") || die "cannot describe TPU '$F_NAME' in $F_ZONE"
  if ((F_DRY_RUN)); then
    printf '%s\n' "$out"
  else
    grep -oE '[0-9]+(\.[0-9]+){3}' <<<"$out" | wc -l
  fi
}

# normalize_accelerator TYPE: gcloud's name for it (v5e-N is spelled v5litepod-N).
normalize_accelerator() {
  local type=$1
  if [[ $type =~ ^v5e-([0-9]+)$ ]]; then type=v5litepod-${BASH_REMATCH[1]}; fi
  printf '%s\n' "$type"
}

# runtime_version TYPE: the TPU software version for the accelerator's generation.
runtime_version() {
  case $1 in
    v4-[0-9]*) echo tpu-ubuntu2204-base ;;
    v5litepod-[0-9]*) echo v2-alpha-tpuv5-lite ;;
    v5p-[0-9]*) echo v2-alpha-tpuv5 ;;
    v6e-[0-9]*) echo v2-alpha-tpuv6e ;;
    *) return 1 ;;
  esac
}

# resolve_commit REF: the full 40-hex commit (REF resolved in this checkout unless it is one).
resolve_commit() {
  local ref=$1 sha
  if [[ $ref =~ ^[0-9a-f]{40}$ ]]; then
    printf '%s\n' "$ref"
  elif sha=$(git -C "$LAUNCH_DIR" rev-parse -q --verify "$ref^{commit}" 2>/dev/null); then
    printf '%s\n' "$sha"
  else
    die "cannot resolve --commit=$ref in this checkout; give the full 40-hex commit"
  fi
}

# retry N FUNCTION ARGS...: up to N times, waiting 15 s, 30 s, 60 s, then 120 s between attempts
# (a fresh VM refuses ssh for a minute or two; a busy one answers later).
retry() {
  local tries=$1 i delay
  shift
  for ((i = 1; ; i++)); do
    "$@" && return 0
    ((i < tries)) || return 1
    delay=$((15 << (i - 1)))
    ((delay < 120)) || delay=120
    note "attempt $i of $tries failed; retrying in $delay s"
    sleep "$delay"
  done
}

check_run_name() {
  [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
    die "--run_name='$1': letters, digits, '.', '_' and '-' only"
}

# run_states RUN_NAME: one line per worker of the TPU, `I STATE` with STATE running, exited:CODE,
# lost (its process vanished without an exit code), absent (never started there), nocode (no
# checkout there) or noanswer.
# Each worker's answer is kept in $STATE_DIR/NAME/status/I.log. A dry run prints the commands and
# answers `0 ASSUMED` (ASSUMED: $1's second argument, default exited:0).
run_states() {
  local run_name=$1 assumed=${2:-exited:0} dir n w line state remote
  dir=$STATE_DIR/$F_NAME/status
  remote="$(worker_cmd status "--run_name=$run_name") || echo BVLM_STATUS state=nocode"
  n=$(worker_count 1)
  if ((F_DRY_RUN)); then
    tpu_ssh all "$remote" "--output-directory=$dir" >&3
    printf '0 %s\n' "$assumed"
    return 0
  fi
  mkdir -p "$dir"
  find "$dir" -maxdepth 1 -name '*.log' -delete
  tpu_ssh all "$remote" "--output-directory=$dir" >&2 || note "ssh failed on some workers"
  for ((w = 0; w < n; w++)); do
    line=$(grep -ao 'BVLM_STATUS .*' "$dir/$w.log" 2>/dev/null | tail -n 1) || line=""
    state=noanswer
    if [[ $line =~ state=([a-z_]+)( code=([0-9]+))? ]]; then
      state=${BASH_REMATCH[1]}
      if [[ $state == exited ]]; then state=exited:${BASH_REMATCH[3]}; fi
    fi
    printf '%s %s\n' "$w" "$state"
  done
}

# validate SCRIPT ARGS...: a dry run of a step (a script of this folder, the common flags passed
# on), so that its bad flags are found before anything is created or deleted: its one-line error.
validate() {
  local script=$1 error
  shift
  if ! error=$(bash "$LAUNCH_DIR/$script" "--name=$F_NAME" "--zone=$F_ZONE" \
    "--project=$F_PROJECT" --dry_run "$@" 2>&1 >/dev/null); then
    error=${error##*$'\n'}
    die "${error/#"$script: error: "/"$script: "}"
  fi
}

# A script of this folder, with the common flags passed on.
launch_script() {
  local script=$1
  shift
  local -a common=("--name=$F_NAME" "--zone=$F_ZONE" "--project=$F_PROJECT")
  if ((F_DRY_RUN)); then common+=(--dry_run); fi
  note "== $script"
  bash "$LAUNCH_DIR/$script" "${common[@]}" "$@"
}

# check_repo_url URL: a git URL with no credentials in it (they would be echoed in every logged
# gcloud line and stored in each worker's .git/config): --git_token_file / --git_token_secret.
check_repo_url() {
  [[ ! $1 =~ ^[A-Za-z+]+://[^/@]*@ || $1 =~ ^ssh://[^/:@]*@ ]] ||
    die "--repo has credentials in it; give the plain URL and the token with" \
      "--git_token_file=FILE (setup.sh) or --git_token_secret=SECRET (submit.sh)"
}

# fetch_code DIR REPO COMMIT [TOKEN_FILE]: DIR holds the checkout of REPO at COMMIT (cloned the
# first time, fetched after). A token for a private https repository is read once from
# TOKEN_FILE, which is deleted at once, and handed to git by a credential helper given on the
# command line (nothing is written to .git/config or echoed). Runs on the workers: setup.sh and
# the startup script send its text (`function_text`: one line, so no comments or here-documents
# inside); it ends in DIR.
fetch_code() {
  local dir=$1 repo=$2 commit=$3 token=${4:-} helper BVLM_GIT_TOKEN
  local -a git=(git -c credential.helper=)
  if [[ -n $token ]]; then
    BVLM_GIT_TOKEN=$(<"$token")
    rm -f "$token"
    export BVLM_GIT_TOKEN
    # shellcheck disable=SC2016 # expanded by git's shell, from the environment
    helper='!f() { test "$1" = get && echo username=x-access-token &&'
    # shellcheck disable=SC2016
    helper+=' echo "password=$BVLM_GIT_TOKEN"; }; f'
    git+=(-c "credential.helper=$helper")
  fi
  test -d "$dir/.git" || "${git[@]}" clone --quiet "$repo" "$dir"
  cd "$dir" || return
  git remote set-url origin "$repo"
  "${git[@]}" fetch --quiet --tags origin
  git rev-parse -q --verify "$commit^{commit}" >/dev/null ||
    "${git[@]}" fetch --quiet origin "$commit"
  git checkout --quiet --force --detach "$commit"
}

# function_text NAME: the definition of the function NAME on one line, for a remote shell
# (`declare -f` ends each statement with ';' but the last).
function_text() {
  local text
  text=$(declare -f "$1")
  text=${text%$'\n'\}}
  printf '%s; }\n' "$(tr '\n' ' ' <<<"$text" | tr -s ' ')"
}

# data_dirs SPEC...: the local folder of each --data=gs://BUCKET/PREFIX[=DIR] (default
# /data/basque_vlm), one per line.
data_dirs() {
  local spec
  for spec; do
    if [[ $spec == *=* ]]; then printf '%s\n' "${spec#*=}"; else echo /data/basque_vlm; fi
  done
}

# aot_topology TYPE: `python -m basque_vlm.aot --topology`'s name of a gcloud accelerator type.
aot_topology() {
  local type
  type=$(normalize_accelerator "$1")
  printf '%s\n' "${type/#v5litepod-/v5e-}"
}

# The 8B configs' overrides per slice and stage, added to a `basque_vlm.train` command by run.sh,
# submit.sh, preflight.sh and recover.sh when --accelerator names the slice (and the command sets
# no train.microbatches itself). Each comes from the per-chip peak that `python -m basque_vlm.aot
# --nodecode --topology=SLICE --config=configs/llama31_8b.py:STAGE` plans for the paper's step
# (libtpu 0.0.42.1, logits_chunk=256, remat full; usable HBM per chip: v5e 15.75 GiB, v5p 95.74,
# v6e 31.25); "README" marks the numbers of its "Will it fit?" tables, the others were compiled
# the same way for this table:
#   v5p-8  instruct  none: 32 rows/chip x 1 micro-batch plan 81.7 GiB (README)
#   v5p-8  align     none: 64 rows/chip x 1 plan 74.6 GiB
#   v5p-32 instruct  none: 8 rows/chip x 1 plan 21.3 GiB
#   v5p-32 align     none: 16 rows/chip x 1 plan 19.5 GiB
#   v6e-8  instruct  4 micro-batches: 4 rows/chip x 4 plan 30.9 GiB (README; 8 x 2: 37.7 and
#                    16 x 1: 39.8, no)
#   v6e-8  align     2 micro-batches: 16 rows/chip x 2 plan 19.8 GiB (32 x 1: 37.6, no)
#   v5e-8  align     8 micro-batches: 4 rows/chip x 8 plan 13.2 GiB (README; 8 x 4: refused)
#   v5e-16 instruct  8 micro-batches: 1 row/chip x 8 plan 14.9 GiB (README; 2 x 4: 16.5, no)
declare -A PRESETS=(
  [v6e-8:instruct]=--config.train.microbatches=4
  [v6e-8:align]=--config.train.microbatches=2
  [v5litepod-8:align]=--config.train.microbatches=8
  [v5litepod-16:instruct]=--config.train.microbatches=8
)

# train_config COMMAND...: the --config of a `python -m basque_vlm.train` command (nothing for
# another command).
train_config() {
  local i found=0
  for ((i = 1; i <= $#; i++)); do
    if [[ ${!i} == basque_vlm.train ]]; then found=1; fi
    if ((found)) && [[ ${!i} == --config=* ]]; then printf '%s\n' "${!i#--config=}"; return; fi
    if ((found)) && [[ ${!i} == --config ]]; then i=$((i + 1)); printf '%s\n' "${!i}"; return; fi
  done
}

# with_preset ACCELERATOR COMMAND...: the command with the slice's preset (PRESETS) added, one
# word per line; a note (stderr; a dry run's stdout) says what was added.
with_preset() {
  local accelerator config stage extra
  accelerator=$(normalize_accelerator "$1")
  shift
  printf '%s\n' "$@"
  config=$(train_config "$@")
  [[ $config =~ ^(.*/)?(llama31_8b|latxa31_8b)\.py(:(align|instruct))?$ ]] || return 0
  stage=${BASH_REMATCH[4]:-align}
  extra=${PRESETS[$accelerator:$stage]:-}
  [[ -n $extra ]] || return 0
  if [[ " $* " == *" ${extra%%=*}="* ]]; then return 0; fi
  note "preset for $accelerator ($stage): $extra (launch/common.sh PRESETS)"
  dry_note "preset for $accelerator ($stage): $extra (launch/common.sh PRESETS)" >&3
  printf '%s\n' "$extra"
}

# logs_destination LOGS_TO COMMAND...: where the workers copy the run's logs and leave its final
# state: LOGS_TO, else the command's --workdir=gs://W as gs://W/logs; nothing when neither.
logs_destination() {
  local logs_to=$1 word
  shift
  if [[ -n $logs_to ]]; then printf '%s\n' "${logs_to%/}"; return; fi
  for word; do
    if [[ $word == --workdir=gs://* ]]; then printf '%s/logs\n' "${word#--workdir=}"; return; fi
  done
}

# check_duration FLAG VALUE: a gcloud duration (30m, 12h, 2d, 1h30m).
check_duration() {
  [[ $2 =~ ^([0-9]+[smhd])+$ ]] || die "--$1 must be a duration such as 30m, 12h or 2d (got '$2')"
}

# delete_words queued|vm [FLAG...]: the gcloud command that deletes the queued resource (and
# with it its TPU VM) or the TPU VM, one word per line.
delete_words() {
  local kind=$1
  shift
  if [[ $kind == queued ]]; then
    printf '%s\n' gcloud compute tpus queued-resources delete "$F_NAME" "--zone=$F_ZONE" \
      "--project=$F_PROJECT" --force --quiet "$@"
  else
    printf '%s\n' gcloud compute tpus tpu-vm delete "$F_NAME" "--zone=$F_ZONE" \
      "--project=$F_PROJECT" --quiet "$@"
  fi
}

# lifecycle_flags KEEP GRACE LOGS: the worker.sh start flags that copy the run's logs to LOGS/RUN
# and, unless KEEP, make worker 0 delete the slice when the run ends (at once after exit 0,
# after GRACE seconds otherwise, never after a SIGTERM); one per line.
lifecycle_flags() {
  local keep=$1 grace=$2 logs=$3 delete
  local -a queued vm
  if [[ -n $logs ]]; then printf -- '--logs_to=%s/%s\n' "$logs" "$F_RUN_NAME"; fi
  ((keep)) && return 0
  mapfile -t queued < <(delete_words queued --async)
  mapfile -t vm < <(delete_words vm --async)
  delete="$(shjoin "${queued[@]}") || $(shjoin "${vm[@]}")"
  printf -- '--on_end=%s\n--grace=%s\n' "$delete" "$grace"
  dry_note "when the run ends, worker 0 runs (at once after exit 0, after $grace s otherwise," \
    "never after a SIGTERM; --keep: never): $delete" >&3
}
