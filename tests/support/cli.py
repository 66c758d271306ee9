"""The `ladder` command as a user runs it: a real subprocess, its exit code and output."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LADDER = [sys.executable, "-m", "ladder.cli"]
# Nothing of this shell's Celery or ladder settings unless a test puts it there; a fixed
# width, so that rich lays out a table the same under any terminal.
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "LADDER_"))},
    "COLUMNS": "120",
}


def ladder(
    *args: str, env: Mapping[str, str] | None = None, timeout_s: float = 30, **options: Any
) -> subprocess.CompletedProcess[str]:
    """`ladder *args`, run to its end. env adds to ENV; options go to subprocess.run."""
    return subprocess.run(
        [*LADDER, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**ENV, **(env or {})},
        timeout=timeout_s,
        check=False,
        **options,
    )


def check_bad_input(done: subprocess.CompletedProcess[str], names: str) -> None:
    """One line on stderr, naming what is wrong, nothing on stdout, exit 2."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ladder: error: ")
    assert names in lines[0]
    assert "Traceback" not in done.stderr
