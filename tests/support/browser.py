"""Debian's Chromium, headless, on one page: what a user's browser would show."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from core import procs

CHROMIUM_TIMEOUT_S = 60.0


def chromium() -> str:
    """Debian's chromium: a failure in CI, where .ci/run installs it; a skip elsewhere."""
    found = shutil.which("chromium")
    if found:
        return found
    reason = "needs chromium (Debian: apt-get install chromium)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI must provide {reason}")
    pytest.skip(reason)


def headless(url: str, profile: Path, *options: str) -> str:
    """Chromium, with nothing of its own running in the background, on one page."""
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",  # we may be root, in a container: Chromium refuses its sandbox there
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        f"--user-data-dir={profile}",
        # Flower's tasks page fills its table from /tasks/datatable by JS after load: the
        # virtual time budget lets those scripts and requests finish before the dump.
        "--virtual-time-budget=5000",
        *options,
        url,
    ]
    # A session of its own: on a timeout, procs.stop ends its renderers and helpers too.
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=CHROMIUM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"chromium did not finish within {CHROMIUM_TIMEOUT_S:.0f} s") from None
    finally:
        procs.stop(process)  # type: ignore[arg-type]
    assert process.returncode == 0, stderr[-2000:]
    return stdout
