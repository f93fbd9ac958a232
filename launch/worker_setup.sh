# shellcheck shell=bash
# `launch/worker.sh setup` (sourced by worker.sh, never run): Python, the pinned environment
# (through a wheelhouse cached on GCS), and the data, on one worker. Rerunning is safe: what is
# there already is kept.

DEFAULT_DATA_DIR=/data/basque_vlm
# pyproject.toml's requires-python
PYTHONS="3.11 3.12 3.13"
# Cloud Storage FUSE with its metadata caches unbounded and never expiring (the data is read-only
# while a run reads it), as MaxText's setup_gcsfuse.sh mounts training data; readable by every
# user of the VM (the mount is root's).
GCSFUSE_FLAGS=(--implicit-dirs -o ro -o allow_other --type-cache-max-size-mb=-1
  --stat-cache-max-size-mb=-1 --kernel-list-cache-ttl-secs=-1 --metadata-cache-ttl-secs=-1)

cmd_setup() {
  check_opts python data_mode wheelhouse
  local python=${OPT[python]:-python3.11} mode=${OPT[data_mode]:-copy} spec src dest
  [[ $mode == copy || $mode == gcsfuse ]] || die "--data_mode must be copy or gcsfuse"
  [[ -z ${OPT[wheelhouse]:-} || ${OPT[wheelhouse]} =~ ^gs://[^/]+ ]] ||
    die "--wheelhouse must be a gs:// prefix, got '${OPT[wheelhouse]}'"
  cd "$ROOT" || return
  ensure_python "$python"
  [[ -x .venv/bin/python ]] || ext "$python" -m venv .venv
  install_packages "${OPT[wheelhouse]:-}"
  ext .venv/bin/python -m pip install -q --no-deps -e .
  local -a specs
  mapfile -t specs < <(list_opts data)
  for spec in "${specs[@]}"; do
    src=${spec%%=*}
    dest=$DEFAULT_DATA_DIR
    if [[ $spec == *=* ]]; then dest=${spec#*=}; fi
    [[ $src =~ ^gs://[^/]+ ]] || die "--data must be gs://BUCKET[/PREFIX][=DIR], got '$spec'"
    if [[ $mode == copy ]]; then
      copy_data "${src%/}" "$dest"
    else
      mount_data "${src%/}" "$dest"
    fi
    if ! dry && [[ -n $(data_missing "$dest") ]]; then
      die "nothing at $dest after staging $src: is the prefix right?"
    fi
  done
  echo "BVLM_SETUP worker=$(worker_id) commit=$(git rev-parse HEAD)" \
    "python=$(.venv/bin/python -c 'import platform; print(platform.python_version())')"
}

# ensure_python PYTHON: PYTHON (python3.X) installed, with its venv module, and one that
# pyproject.toml allows.
ensure_python() {
  local python=$1
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    [[ $python =~ ^python3\.[0-9]+$ ]] ||
      die "$python cannot make a venv (no ensurepip); install it, or use --python=python3.11"
    echo "installing $python and its venv module (apt)"
    apt_install "$python" "$python-venv"
  fi
  dry && return 0
  local version
  version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [[ " $PYTHONS " == *" $version "* ]] ||
    die "$python is Python $version; the project needs one of $PYTHONS"
}

# wait_for_apt: until no process holds dpkg's or apt's locks (on a fresh VM unattended-upgrades
# holds them for minutes after boot), at most 15 minutes.
wait_for_apt() {
  local i holders
  local -a locks=(/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock)
  for ((i = 0; i < 180; i++)); do
    holders=$("${SUDO[@]}" fuser "${locks[@]}" 2>/dev/null) || return 0
    if ((i % 12 == 0)); then echo "waiting for apt's locks (held by pids${holders})"; fi
    sleep 5
  done
  die "apt's locks are still held after 15 minutes (pids${holders})"
}

apt_install() {
  wait_for_apt
  # dpkg's own wait, for a lock taken between the check and the install
  ext "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
  ext "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
    install -y -qq "$@"
}

# install_packages WHEELHOUSE: the pinned requirements and jax[tpu] into .venv. With a
# WHEELHOUSE (gs://), from WHEELHOUSE/KEY/wheels, KEY a hash of the requirement files, the
# Python version and the machine: the first worker to need one builds it from PyPI and worker 0
# uploads it, so a worker created again installs without PyPI.
install_packages() {
  local wheelhouse=$1 jax_version key local_dir remote
  jax_version=$(sed -n 's/^jax==//p' requirements/lock.txt)
  [[ -n $jax_version ]] || die "requirements/lock.txt pins no jax version"
  local -a reqs=(-c requirements/lock.txt -r requirements/runtime.txt -r requirements/cloud.txt
    "jax[tpu]==$jax_version")
  if [[ -z $wheelhouse ]]; then
    echo "installing the pinned requirements and jax[tpu]==$jax_version into $ROOT/.venv (PyPI)"
    ext .venv/bin/python -m pip install -q "${reqs[@]}"
    return
  fi
  key=$({ cat requirements/lock.txt requirements/runtime.txt requirements/cloud.txt
    printf '%s\n' "${reqs[@]}"
    .venv/bin/python -c 'import platform; print(platform.python_version_tuple()[:2],
      platform.machine())' 2>/dev/null || echo "$python"; } | sha256sum | cut -c1-16)
  remote=${wheelhouse%/}/$key
  local_dir=$(dirname "$ROOT")/basque_vlm_wheels/$key
  mkdir -p "$local_dir"
  if ask gcloud storage ls "$remote/COMPLETE" >/dev/null 2>&1; then
    echo "installing from the wheelhouse $remote"
    ext gcloud storage rsync --recursive "$remote/wheels" "$local_dir"
  else
    echo "building the wheelhouse $remote (PyPI)"
    ext .venv/bin/python -m pip wheel -q --wheel-dir="$local_dir" "${reqs[@]}"
    if [[ $(worker_id) == 0 ]]; then
      ext gcloud storage rsync --recursive "$local_dir" "$remote/wheels" &&
        printf '%s\n' "$key" | ext gcloud storage cp - "$remote/COMPLETE"
    fi
  fi
  ext .venv/bin/python -m pip install -q --no-index "--find-links=$local_dir" "${reqs[@]}"
}

make_dir() { # make_dir DIR: DIR exists and is writable by this user
  if [[ ! -d $1 || ! -w $1 ]]; then
    ext "${SUDO[@]}" mkdir -p "$1"
    ext "${SUDO[@]}" chown "$(id -u):$(id -g)" "$1"
  fi
}

copy_data() {
  local src=$1 dest=$2
  make_dir "$dest"
  echo "copying $src to $dest (gcloud storage rsync)"
  ext gcloud storage rsync --recursive "$src" "$dest"
}

# mount_data SRC DEST: SRC mounted read-only at DEST by the systemd unit bvlm-data-DEST.service,
# enabled so that the mount comes back after a restart of the host.
mount_data() {
  local src=$1 dest=$2 bucket prefix unit
  if mountpoint -q "$dest"; then
    echo "$dest is already mounted"
    return
  fi
  command -v gcsfuse >/dev/null || install_gcsfuse
  bucket=${src#gs://}
  prefix=""
  if [[ $bucket == */* ]]; then prefix=${bucket#*/}; fi
  bucket=${bucket%%/*}
  local -a only=()
  if [[ -n $prefix ]]; then only=(--only-dir "$prefix"); fi
  unit=bvlm-data-$(systemd-escape --path "$dest").service
  echo "mounting $src on $dest (gcsfuse, read-only; $unit mounts it at every boot)"
  ext "${SUDO[@]}" mkdir -p "$dest"
  printf '%s\n' "[Unit]" "Description=basque_vlm data: $src on $dest (gcsfuse)" \
    "Wants=network-online.target" "After=network-online.target" "" "[Service]" "Type=simple" \
    "ExecStart=$(command -v gcsfuse || echo /usr/bin/gcsfuse) --foreground ${GCSFUSE_FLAGS[*]} \
${only[*]} $bucket $dest" "ExecStop=/bin/fusermount -u $dest" "Restart=on-failure" "" \
    "[Install]" "WantedBy=multi-user.target" | write_root_file "/etc/systemd/system/$unit"
  ext "${SUDO[@]}" systemctl daemon-reload
  ext "${SUDO[@]}" systemctl enable --now "$unit"
  dry && return 0
  for _ in {1..60}; do
    mountpoint -q "$dest" && break
    sleep 1
  done
  mountpoint -q "$dest" || die "gcsfuse did not mount $dest (journalctl -u $unit)"
  ls -R "$dest" >/dev/null # fills the metadata caches before the first reads
}

write_root_file() { # write_root_file PATH: stdin to PATH (a dry run prints it)
  if dry; then
    echo "DRY write $1:"
    sed 's/^/  /'
  else
    "${SUDO[@]}" tee "$1" >/dev/null
  fi
}

install_gcsfuse() {
  echo "installing gcsfuse (apt)"
  echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc]" \
    "https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" |
    write_root_file /etc/apt/sources.list.d/gcsfuse.list
  ext curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg |
    write_root_file /usr/share/keyrings/cloud.google.asc
  apt_install gcsfuse
}
