"""Looking at the processes a command started, to check that none outlives it."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterable

import psutil


def cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def descendants(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def running(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those still running: a zombie has exited, it only waits to be reaped."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def kill_all(
    process: subprocess.Popen[str] | subprocess.Popen[bytes], seen: list[psutil.Process]
) -> None:
    """Leave nothing running, whatever a test saw fail: the processes seen, what is still
    below `process` (a redis-server or worker sits in a session of its own, so each is
    killed by its pid), then `process` itself."""
    below = []
    with contextlib.suppress(psutil.Error):  # gone already, once it has exited
        below = descendants(psutil.Process(process.pid))
    for child in [*seen, *below]:
        with contextlib.suppress(psutil.Error):
            child.kill()
    process.kill()
    process.wait()
