"""TensorBoard scalars of a run: event files in ``WORKDIR/tensorboard/``, written with tensorboardX
(no TensorFlow), by process 0 only (`metrics.Writer`).

    tensorboard --logdir=WORKDIR/tensorboard        # or gs://BUCKET/workdirs/RUN/tensorboard

Each run (a first one, or a resumed one) writes a new event file; it starts with a purge marker at
its first step, so that TensorBoard hides what an earlier run logged after the checkpoint this one
resumed from (each step then shows once, as in ``metrics.jsonl``). On an object store
(``gs://``: `basque_vlm.paths`) an event file cannot be appended to: the file is rewritten whole
at each flush (every ``flush_secs`` and at the end; a run's scalars are a few hundred kB).
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from collections.abc import Mapping
from typing import Any

from absl import logging
from etils import epath

from basque_vlm.runtime import paths

TENSORBOARD_DIR = "tensorboard"
FLUSH_SECS = 30


def _tensorboardx() -> Any:
    """tensorboardX, without torch: its writer imports torch when installed, only for type
    checks — seconds and memory a JAX trainer has no use for (unless torch is loaded already)."""
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None  # `import torch` raises ImportError: tensorboardX goes on
    try:
        import tensorboardX
        import tensorboardX.record_writer
    finally:
        if blocked and sys.modules.get("torch", False) is None:
            del sys.modules["torch"]
    return tensorboardX


class _ObjectFile:
    """An event file on an object store: the records so far, rewritten whole at each flush."""

    def __init__(self, path: str):
        self.path = paths.path(path)
        self.data = bytearray()
        self.written = -1

    def write(self, data: bytes) -> None:
        self.data += data

    def flush(self) -> None:
        """Rewrites the object; a failed write (the store unreachable) is a warning, and the
        next flush writes it all again: tensorboardX flushes from a thread of its own, where an
        exception would end the thread with a traceback."""
        if len(self.data) == self.written:
            return
        try:
            self.path.write_bytes(bytes(self.data))
        except Exception as e:  # noqa: BLE001 (any storage client's error)
            logging.warning("TensorBoard events not written to %s (%s: %s); trying again at "
                            "the next flush", self.path, type(e).__name__, e)
            return
        self.written = len(self.data)

    def close(self) -> None:
        self.flush()


class _ObjectFiles:
    """tensorboardX's writer factory for a URL scheme, through etils.epath."""

    def open(self, path: str) -> _ObjectFile:
        return _ObjectFile(path)

    def directory_check(self, path: str) -> None:
        pass  # object stores have no folders to make


class Scalars:
    """Scalars by step into ``logdir``'s event files."""

    def __init__(self, logdir: str | epath.Path, first_step: int = 1,
                 flush_secs: int = FLUSH_SECS):
        """``first_step``: the first step this run logs (events of earlier runs from it on are
        hidden)."""
        tensorboardx = _tensorboardx()
        logdir = paths.path(logdir)
        if paths.is_remote(logdir):
            # tensorboardX's own gs:// and s3:// writers need google-cloud-storage or boto3;
            # epath serves every scheme the workdir may use, as for the other files.
            tensorboardx.record_writer.register_writer_factory(paths.scheme(logdir),
                                                               _ObjectFiles())
        self.logdir = logdir
        # tensorboardX names the file events.out.tfevents.SECONDS.HOST; TensorBoard reads a
        # folder's files in name order. The nanoseconds keep two runs started within a second
        # apart, in order.
        self._writer = tensorboardx.SummaryWriter(
            logdir=str(logdir), purge_step=first_step, flush_secs=flush_secs,
            filename_suffix=f".{time.time_ns()}")

    def add(self, step: int, values: Mapping[str, Any]) -> None:
        """Every finite number of ``values`` under its key (booleans and None skipped)."""
        for tag, value in values.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and \
                    math.isfinite(value):
                self._writer.add_scalar(tag, float(value), int(step))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def read_scalars(logdir: str | epath.Path) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` from the event files of ``logdir``, read as TensorBoard reads them:
    files in name order; a later value of a step replaces an earlier one, and a run's purge
    marker drops the steps from it on. (For the tests and notebooks; TensorBoard needs none.)"""
    _tensorboardx()
    from tensorboardX.proto import event_pb2

    scalars: dict[str, dict[int, float]] = {}
    for file in sorted(paths.path(logdir).glob("*tfevents*"), key=lambda f: f.name):
        for record in _records(file.read_bytes()):
            event = event_pb2.Event.FromString(record)
            if event.HasField("session_log") and \
                    event.session_log.status == event_pb2.SessionLog.START:
                for by_step in scalars.values():
                    for step in [s for s in by_step if s >= event.step]:
                        del by_step[step]
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def _records(data: bytes) -> list[bytes]:
    """The payloads of a TFRecord file (length, its CRC, payload, its CRC; CRCs not checked)."""
    records, at = [], 0
    while at + 12 <= len(data):
        length = int.from_bytes(data[at:at + 8], "little")
        records.append(data[at + 12:at + 12 + length])
        at += 12 + length + 4
    return records
