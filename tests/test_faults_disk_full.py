"""A full disk while ``train`` writes a checkpoint or ``prepare_data`` its dataset: one line on
stderr, exit 1, the previous checkpoint intact and nothing half-written presented as done.

The disk is a small tmpfs mounted for the test where the machine lets us (root), else a limit
on the size of any one file the process writes (``RLIMIT_FSIZE``: Python then gets EFBIG)."""

import json
import os
import re
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import run_cli
from data_helpers import REPO
from PIL import Image
from train_helpers import tiny_flags

from basque_vlm.store import checkpoint


class SmallDisk:
    """A folder whose writes fail once ``limit`` bytes are reached: a tmpfs of that size, or
    (``preexec``, for the writing process) at that size per file."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs",
                                       str(folder)], capture_output=True).returncode == 0
        self.file_limit: int | None = None

    def limit(self, extra_bytes: int) -> None:
        """From now on, ``extra_bytes`` more fit (a tmpfs), or that much per file."""
        if self.mounted:
            used = shutil.disk_usage(self.folder).used
            subprocess.run(["mount", "-o", f"remount,size={used + extra_bytes}",
                            str(self.folder)], check=True)
        else:
            self.file_limit = extra_bytes

    def unlimit(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(self.folder)], check=True)
        self.file_limit = None

    def preexec(self) -> Callable[[], None] | None:
        limit = self.file_limit
        return None if limit is None else (
            lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.folder)], check=True)


@pytest.fixture
def small_disk(tmp_path) -> Iterator[SmallDisk]:
    folder = tmp_path / "disk"
    folder.mkdir()
    disk = SmallDisk(folder)
    yield disk
    disk.close()


def train(workdir: Path, root: Path, steps: int, disk: SmallDisk) -> subprocess.CompletedProcess:
    """``train`` to ``steps``, a checkpoint every 2 steps, on 2 devices."""
    flags = tiny_flags(root, train__num_steps=steps, train__checkpoint_every=2)
    return subprocess.run([sys.executable, "-m", "basque_vlm.train", f"--workdir={workdir}",
                           *flags], cwd=REPO, capture_output=True, text=True, timeout=300,
                          preexec_fn=disk.preexec(),
                          env={**os.environ,
                               "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})


@pytest.mark.slow  # three runs' compilation
def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(small_disk, demo_root):
    workdir = small_disk.folder / "run"
    first = train(workdir, demo_root, 2, small_disk)
    assert first.returncode == 0, first.stderr
    largest = max(f.stat().st_size for f in (workdir / "checkpoints" / "2").rglob("*"))
    small_disk.limit(largest // 2)  # less than a checkpoint, and than its largest file
    full = train(workdir, demo_root, 4, small_disk)  # resumes from step 2, saves 4
    # Orbax's and tensorstore's writing threads log their own errors too: ours is one line
    ours = re.findall(r"train: .*", full.stderr)
    assert full.returncode == 1 and len(ours) == 1, full.stderr
    assert ("No space left on device" if small_disk.mounted else "File too large") in ours[0]
    assert checkpoint.workdir_steps(workdir) == [2]
    checkpoint.load_params(workdir)
    small_disk.unlimit()
    again = train(workdir, demo_root, 4, small_disk)
    assert again.returncode == 0, again.stderr
    assert checkpoint.workdir_steps(workdir) == [4, 2]


def test_a_full_disk_while_preparing_data_leaves_nothing(small_disk, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    records = []
    for i in range(40):
        Image.effect_noise((256, 256), 64).convert("RGB").save(images / f"{i}.png")
        records.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nZer dago?"},
            {"from": "gpt", "value": "Zarata."}]})
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    out = small_disk.folder / "out"
    small_disk.limit(256 * 1024)
    proc = subprocess.run([sys.executable, "-m", "basque_vlm.prepare_data",
                           f"--input={data}", f"--image_root={images}", f"--out={out}",
                           "--lang=eu"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, preexec_fn=small_disk.preexec())
    run_cli.assert_one_line_error(proc, "prepare_data")
    assert not out.exists() and list(small_disk.folder.iterdir()) == [], \
        list(small_disk.folder.iterdir())
