"""Looking at the processes a command started, to check that none outlives it."""

from __future__ import annotations

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


def running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running: a zombie has exited, it only waits to be reaped."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive
