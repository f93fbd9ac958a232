#!/usr/bin/env bash
# Set up every worker of a TPU VM (--worker=all): the code at a pinned commit, the pinned Python
# environment, and the data.
#
#   launch/setup.sh --name=NAME --zone=ZONE --project=PROJECT [--commit=SHA] [--repo=URL]
#       [--git_token_file=FILE] [--data=gs://BUCKET/PREFIX[=DIR] ...] [--data_mode=copy|gcsfuse]
#       [--wheelhouse=gs://BUCKET/PREFIX] [--python=python3.11] [--code_only] [--retries=6]
#       [--dry_run]
#
#   --commit     the commit every worker checks out (default: this checkout's HEAD; a tag or a
#                short hash is resolved here to the full hash). Push it first: the workers fetch
#                it from --repo. Uncommitted changes never reach the workers.
#   --repo       the git URL the workers clone (default: this checkout's `origin`); never one
#                with a token in it (it would be echoed and stored on every worker)
#   --git_token_file  a file holding a token for a private https repository: copied to every
#                worker, read once by git's credential helper (nothing in .git/config), deleted
#   --data       a gs:// prefix of prepared data (ArrayRecord from prepare_data, converted
#                checkpoints) that the configs read as local files, and the local DIR it appears
#                at (default /data/basque_vlm, the configs' PAPER_ROOT); repeatable
#   --data_mode  copy (default): `gcloud storage rsync` onto each worker's disk (fast random
#                reads; the disk must hold it); gcsfuse: mounted read-only with its metadata
#                cached, again at every boot (nothing copied; reads go over the network)
#   --wheelhouse a gs:// prefix where the workers keep the wheels of the pinned environment:
#                built from PyPI once, then every worker (and a worker created again) installs
#                from there
#   --code_only  only move the code to --commit (the editable install picks it up): when the
#                requirements did not change
#   --retries    ssh attempts, 15 s, 30 s, 60 s, then 120 s apart (a fresh TPU VM refuses ssh
#                for a minute or two)
#
# On each worker, in ~/basque_vlm: clone (first time) or fetch, `git checkout --detach COMMIT`,
# then `bash launch/worker.sh setup` (Python 3.11, .venv with requirements/lock.txt as
# constraints, requirements/runtime.txt and jax[tpu] at the locked jax version, the project
# editable; the data). Rerunning is safe. Next: launch/preflight.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

F_COMMIT=""
F_REPO=""
F_GIT_TOKEN_FILE=""
F_WHEELHOUSE=""
F_DATA=()
F_DATA_MODE=copy
F_PYTHON=python3.11
F_CODE_ONLY=0
F_RETRIES=6
flags str commit repo data_mode python retries git_token_file wheelhouse
flags list data
flags bool code_only
parse_flags "$@"
((${#ARGS[@]} == 0)) || die "unexpected arguments after --: ${ARGS[*]}"
require_target
check_choice data_mode "$F_DATA_MODE" copy gcsfuse
[[ $F_RETRIES =~ ^[1-9][0-9]*$ ]] || die "--retries must be a positive number"
[[ $F_PYTHON =~ ^[A-Za-z0-9_./-]+$ ]] || die "--python='$F_PYTHON' is not a command name"
for spec in "${F_DATA[@]}"; do
  [[ $spec =~ ^gs://[a-z0-9][-_.a-z0-9]*[a-z0-9](/[^=]*)?(=/.+)?$ ]] ||
    die "--data must be gs://BUCKET[/PREFIX][=/LOCAL/DIR], got '$spec'"
done
if ((F_CODE_ONLY && ${#F_DATA[@]})); then die "--code_only and --data exclude each other"; fi
[[ -z $F_WHEELHOUSE || $F_WHEELHOUSE =~ ^gs://[a-z0-9][-_.a-z0-9]*[a-z0-9](/.*)?$ ]] ||
  die "--wheelhouse must be gs://BUCKET[/PREFIX], got '$F_WHEELHOUSE'"
[[ -z $F_GIT_TOKEN_FILE || -f $F_GIT_TOKEN_FILE ]] ||
  die "--git_token_file=$F_GIT_TOKEN_FILE is not a file"

if [[ -z $F_REPO ]]; then
  F_REPO=$(git -C "$LAUNCH_DIR" remote get-url origin 2>/dev/null) ||
    die "--repo is required (this checkout has no 'origin' remote)"
fi
check_repo_url "$F_REPO"
commit=$(resolve_commit "${F_COMMIT:-HEAD}")
if [[ -z $F_COMMIT ]] &&
  [[ -n $(git -C "$LAUNCH_DIR" --no-optional-locks status --porcelain --untracked-files=no) ]]; then
  note "warning: this checkout has uncommitted changes; the workers get commit $commit without them"
fi

worker_args=(setup "--python=$F_PYTHON")
if [[ -n $F_WHEELHOUSE ]]; then worker_args+=("--wheelhouse=$F_WHEELHOUSE"); fi
for spec in "${F_DATA[@]}"; do worker_args+=("--data=$spec"); done
if ((${#F_DATA[@]})); then worker_args+=("--data_mode=$F_DATA_MODE"); fi

fetch=(fetch_code "$REMOTE_DIR" "$F_REPO" "$commit")
if [[ -n $F_GIT_TOKEN_FILE ]]; then
  # only the file's name appears in the commands (and their echo)
  retry "$F_RETRIES" run gcloud compute tpus tpu-vm scp "$F_GIT_TOKEN_FILE" \
    "$F_NAME:.bvlm_git_token" "--zone=$F_ZONE" "--project=$F_PROJECT" --worker=all ||
    die "could not copy --git_token_file to the workers"
  fetch+=(.bvlm_git_token)
fi
remote="set -euo pipefail; $(function_text fetch_code); $(shjoin "${fetch[@]}")"
if ((F_CODE_ONLY)); then
  remote+="; echo BVLM_CODE commit=\$(git rev-parse HEAD)"
else
  remote+="; bash launch/worker.sh $(shjoin "${worker_args[@]}")"
fi

retry "$F_RETRIES" tpu_ssh all "$remote" ||
  die "setup failed on some worker (its output is above); rerunning setup.sh is safe"
