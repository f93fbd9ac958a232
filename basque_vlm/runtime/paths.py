"""Paths that may be remote: checkpoints, workdirs, metrics and results on Cloud Storage.

    paths.path("gs://bucket/workdirs/align")   # kept as it is: etils.epath over fsspec (gcsfs)
    paths.path("workdir/demo")                 # a local path, made absolute (as before)
    paths.path("file:///tmp/run")              # a local path: /tmp/run

`pathlib` turns ``gs://b/w`` into the relative local path ``gs:/b/w``: on a TPU slice every worker
would then write its checkpoints to its own disk. Everything that may live remotely goes through
`path`, which returns an ``etils.epath.Path`` (pathlib's API, on local disks and on ``gs://``,
``s3://``, ``az://``, ``hf://``); Orbax and tensorstore write such paths natively. ``gs://``
needs ``gcsfs`` installed (epath's fsspec backend), or TensorFlow.

Readers that take only local folders (transformers' ``from_pretrained``) get a local copy of the
few small files they need: `local_copy`.

Object-store listings are never cached (`uncached_listings`): tensorstore (Orbax's arrays) and
the other processes of a run write the same bucket behind fsspec's back, and a cached listing
hides what they wrote: a new checkpoint step, even ``exists()`` of one of its files.
"""

from __future__ import annotations

import atexit
import os
import pathlib
import re
import shutil
import sys
import tempfile
import urllib.parse
from collections.abc import Iterable

import fsspec
from etils import epath

# etils.epath's URL schemes (its fsspec backend: gcsfs, s3fs, adlfs, huggingface_hub).
URL_SCHEMES = ("gs", "s3", "az", "hf")
# The tokenizer, processor, chat template and generation config files of a checkpoint folder
# (what `convert` copies from a Hugging Face folder, and what ``from_pretrained`` reads).
ASSET_PATTERNS = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template*",
                  "processor_config.json", "preprocessor_config.json", "generation_config.json")
# ... and the folder's config.json: what a local copy of a checkpoint's assets holds.
LOCAL_PATTERNS = ("config.json", *ASSET_PATTERNS)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")

PathLike = str | os.PathLike


def uncached_listings() -> None:
    """fsspec's filesystems for `URL_SCHEMES`, made by epath from now on, list afresh each
    time."""
    for name in (*URL_SCHEMES, "gcs"):
        fsspec.config.conf.setdefault(name, {})["use_listings_cache"] = False


uncached_listings()


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a request to an object store raises once its client's retries are spent, beyond
    OSError: gcsfs's HTTP errors (a 5xx answer) and aiohttp's (a dropped connection), for the
    clients loaded."""
    errors = []
    if "gcsfs" in sys.modules:
        errors.append(sys.modules["gcsfs"].retry.HttpError)
    if "aiohttp" in sys.modules:
        errors.append(sys.modules["aiohttp"].ClientError)
    return tuple(errors)


def scheme(p: PathLike) -> str | None:
    """``"gs"`` for ``gs://b/x``; None for a plain path."""
    match = _SCHEME.match(os.fspath(p))
    return match.group(1).lower() if match else None


def is_remote(p: PathLike) -> bool:
    """Whether ``p`` is a URL of an object store (not a local or ``file://`` path)."""
    return scheme(p) in URL_SCHEMES


def path(p: PathLike) -> epath.Path:
    """``p`` as an ``epath.Path``: a ``gs://`` (``s3://``, ``az://``, ``hf://``) URL as it is;
    a ``file://`` URL or a local path as an absolute local path (``pathlib.Path.absolute``: no
    symlink resolved, ``..`` kept). Other schemes raise ValueError."""
    if isinstance(p, epath.Path) and is_remote(p):
        return p
    text = os.fspath(p)
    found = scheme(text)
    if found in URL_SCHEMES:
        return epath.Path(text)
    if found == "file":
        parsed = urllib.parse.urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{text}: a file:// URL names a local path (file:///abs/path)")
        text = urllib.parse.unquote(parsed.path)
    elif found is not None:
        raise ValueError(f"{text}: unsupported scheme {found}://; use a local path, file://, "
                         f"or one of {', '.join(s + '://' for s in URL_SCHEMES)}")
    return epath.Path(pathlib.Path(text).absolute())


def cache_dir(name: str) -> pathlib.Path:
    """``NAME`` under the project's cache folder: ``$BASQUE_VLM_CACHE``, else
    ``$XDG_CACHE_HOME/basque_vlm``, else ``~/.cache/basque_vlm`` (not created here)."""
    root = os.environ.get("BASQUE_VLM_CACHE") or pathlib.Path(
        os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "basque_vlm"
    return pathlib.Path(root).expanduser() / name


def copy_files(src: PathLike, dst: PathLike, patterns: Iterable[str]) -> list[str]:
    """Copies the files of ``src`` (not its folders) whose names match ``patterns`` (globs) into
    ``dst``, which must exist; either may be remote. Returns the names copied."""
    src, dst = path(src), path(dst)
    names = []
    for pattern in patterns:
        for found in sorted(src.glob(pattern)):
            if found.name not in names and found.is_file():
                if is_remote(found) or is_remote(dst):
                    (dst / found.name).write_bytes(found.read_bytes())
                else:
                    shutil.copy2(found, dst / found.name)
                names.append(found.name)
    return names


def local_copy(folder: PathLike, patterns: Iterable[str] = LOCAL_PATTERNS) -> pathlib.Path:
    """A local folder holding ``folder``'s files that match ``patterns`` (default: its config,
    tokenizer and processor files): ``folder`` itself when it is local, else a fresh copy in a
    temporary folder (removed when the process exits)."""
    if not is_remote(folder):
        return pathlib.Path(folder if scheme(folder) is None else path(folder))
    copy = pathlib.Path(tempfile.mkdtemp(prefix="basque_vlm_assets_"))
    atexit.register(shutil.rmtree, copy, ignore_errors=True)
    patterns = tuple(patterns)
    if not copy_files(folder, copy, patterns):
        raise FileNotFoundError(f"{folder}: none of {', '.join(patterns)} found")
    return copy
