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

# run CMD...: prints CMD (dry run) or echoes it to stderr and runs it.
run() {
  if ((F_DRY_RUN)); then
    shjoin "$@"
  else
    printf '+ %s\n' "$(shjoin "$@")" >&2
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
    printf '+ %s\n' "$(shjoin "$@")" >&2
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

# worker_cmd WORDS...: the remote command that runs launch/worker.sh in the code's checkout.
worker_cmd() {
  printf 'cd %s && bash launch/worker.sh %s\n' "$REMOTE_DIR" "$(shjoin "$@")"
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

# retry N FUNCTION ARGS...: up to N times, 20 s apart (a fresh VM may refuse ssh for a while).
retry() {
  local tries=$1 i
  shift
  for ((i = 1; ; i++)); do
    "$@" && return 0
    ((i < tries)) || return 1
    note "attempt $i of $tries failed; retrying in 20 s"
    sleep 20
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

# A script of this folder, with the common flags passed on.
launch_script() {
  local script=$1
  shift
  local -a common=("--name=$F_NAME" "--zone=$F_ZONE" "--project=$F_PROJECT")
  if ((F_DRY_RUN)); then common+=(--dry_run); fi
  note "== $script"
  bash "$LAUNCH_DIR/$script" "${common[@]}" "$@"
}
