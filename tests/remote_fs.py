"""``gs://`` without Cloud Storage, for the tests: a local folder stands for the buckets.

- `LocalBuckets`: an fsspec filesystem for the ``gs``/``gcs`` protocols over a local folder
  (``gs://bucket/x`` ↔ ``ROOT/bucket/x``), in gcsfs's place, so that ``etils.epath`` — which the
  project uses for every path that may be remote — reads and writes there. It is not a GCS
  server: nothing speaks HTTP, and gcsfs, tensorstore's ``gcs`` driver and Orbax's GCS-specific
  code are not exercised.
- `MappedOrbax`: ``orbax.checkpoint`` as the project modules see it, recording every path they
  hand it and mapping ``gs://`` ones into the same folder (tensorstore would otherwise open a
  connection to Cloud Storage).
"""

from __future__ import annotations

import os
import posixpath
import sys
from pathlib import Path

import fsspec
import orbax.checkpoint as ocp
from etils import epath
from etils.epath import backend as epath_backend
from fsspec.implementations.local import LocalFileSystem


class LocalBuckets(LocalFileSystem):
    protocol = ("gs", "gcs")
    root = ""  # set by `serve`

    def __init__(self, *args, **kwargs):
        kwargs.pop("finalize_on_close", None)  # a gcsfs option
        super().__init__(*args, auto_mkdir=True, **kwargs)  # objects need no folders

    @classmethod
    def _strip_protocol(cls, path):
        path = fsspec.utils.stringify_path(path)
        for prefix in ("gs://", "gcs://"):
            if path.startswith(prefix):
                return posixpath.join(cls.root, path[len(prefix):]).rstrip("/")
        return super()._strip_protocol(path)

    def glob(self, path, **kwargs):
        # Bucket-relative names, as gcsfs returns them (epath adds the gs:// back).
        return [os.path.relpath(p, self.root) for p in super().glob(path, **kwargs)]


class _Mapped:
    """A checkpointer whose ``save``/``restore`` paths are mapped."""

    def __init__(self, inner, local):
        self.inner, self.local = inner, local

    def __enter__(self):
        self.inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self.inner.__exit__(*exc)

    def save(self, path, *args, **kwargs):
        return self.inner.save(self.local(path), *args, **kwargs)

    def restore(self, path, *args, **kwargs):
        return self.inner.restore(self.local(path), *args, **kwargs)


class MappedOrbax:
    """``orbax.checkpoint`` with the paths handed to it recorded (``seen``) and mapped."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.seen: list[str] = []

    def __getattr__(self, name):
        return getattr(ocp, name)

    def local(self, path) -> epath.Path:
        text = os.fspath(path)
        if text.startswith(str(self.root)):  # mapped already (Orbax calling itself)
            return epath.Path(text)
        self.seen.append(text)
        if not text.startswith("gs://"):
            raise AssertionError(f"Orbax was handed a local path: {text}")
        return epath.Path(self.root, text[len("gs://"):])

    @property
    def utils(self):
        mapped = self

        class Utils:
            def __getattr__(self, name):
                return getattr(ocp.utils, name)

            def checkpoint_steps(self, folder, *args, **kwargs):
                return ocp.utils.checkpoint_steps(mapped.local(folder), *args, **kwargs)

        return Utils()

    def CheckpointManager(self, directory, *args, **kwargs):  # noqa: N802 (orbax's names)
        return ocp.CheckpointManager(self.local(directory), *args, **kwargs)

    def Checkpointer(self, *args, **kwargs):  # noqa: N802
        return _Mapped(ocp.Checkpointer(*args, **kwargs), self.local)

    def StandardCheckpointer(self, *args, **kwargs):  # noqa: N802
        return _Mapped(ocp.StandardCheckpointer(*args, **kwargs), self.local)

    def PyTreeCheckpointer(self, *args, **kwargs):  # noqa: N802
        return _Mapped(ocp.PyTreeCheckpointer(*args, **kwargs), self.local)

    def PyTreeCheckpointHandler(self, *args, **kwargs):  # noqa: N802
        mapped = self

        class Handler(ocp.PyTreeCheckpointHandler):
            def metadata(self, directory):
                return super().metadata(mapped.local(directory))

        return Handler(*args, **kwargs)


def serve(monkeypatch, root: Path) -> MappedOrbax:
    """``gs://`` served from ``root`` for epath/fsspec and the project's Orbax calls, until the
    test ends. Returns the Orbax recorder."""
    from basque_vlm.store import checkpoint
    from basque_vlm.training import workdir

    root.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(LocalBuckets, "root", str(root))
    for protocol in LocalBuckets.protocol:
        monkeypatch.setitem(sys.modules["fsspec.registry"]._registry, protocol, LocalBuckets)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()  # see clear_filesystems
    orbax = MappedOrbax(root)
    for module in (checkpoint, workdir):
        monkeypatch.setattr(module, "ocp", orbax)
    return orbax


def clear_filesystems() -> None:
    """Forgets the filesystems epath made (call after a test that served gs://)."""
    epath_backend.fsspec_backend._get_filesystem.cache_clear()
