"""Running the project's command-line tools as a user would: ``python -m basque_vlm.NAME``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 300


def start(tool: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"basque_vlm.{tool}", *map(str, args)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=TIMEOUT_S)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run(tool: str, *args: object) -> subprocess.CompletedProcess:
    return finish(start(tool, *args))


def run_all(tool: str, arg_lists: Sequence[Sequence[object]]) -> list[subprocess.CompletedProcess]:
    """Runs the commands concurrently (most of each is Python start-up and imports)."""
    return [finish(p) for p in [start(tool, *args) for args in arg_lists]]


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def assert_one_line_error(result: subprocess.CompletedProcess, tool: str, *needles: str) -> str:
    """A non-zero exit with exactly one stderr line, ``TOOL: ...``, containing ``needles``."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{tool}: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
