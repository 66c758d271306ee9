"""Starting and stopping the long-lived processes of the embedded stack.

Each starts in a session of its own, so that stopping it stops its children too (a
prefork worker's pool), and on Linux is told to die with the ladder process, so that
not even a `kill -9` of ladder leaves an orphan behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeAlias

from core.errors import RunFailed
from core.wait import POLL_S, wait_until

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None, signum: int = signal.SIGTERM) -> None:
    """Ask Linux for signum when this process's parent dies, however it dies.

    `parent` is the pid the caller expects as its parent: if that one died before the
    request was made, the request would watch whoever adopted us, so we exit at once.
    """
    parent = os.getppid() if parent is None else parent
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:
        os._exit(1)


def free_port(preferred: int = 0) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now: preferred if it is such
    a port, else one the system picks."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spawn(
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    stdin_text: str | None = None,
    death_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start argv in its own session, output to log, tied to this process's life: it gets
    death_signal when this process dies. stdin_text is written to its standard input (a
    secret goes there, not on its command line nor in a file)."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, os.getpid(), death_signal),
        )
    if process.stdin is not None:
        with contextlib.suppress(BrokenPipeError), process.stdin:
            process.stdin.write((stdin_text or "").encode())
    return process


def scratch(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder named after this process, removed when it is cleaned up; the
    folders of the same prefix that a process killed before it could clean up left
    behind are removed first (their owner's pid is in their name)."""
    for stale in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        owner = stale.name.removeprefix(prefix).split("-", 1)[0]
        with contextlib.suppress(OSError):
            ours = stale.stat().st_uid == os.getuid()
            if ours and owner.isdigit() and not alive(int(owner)):
                shutil.rmtree(stale, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-")


def alive(pid: int) -> bool:
    """Whether a process of this pid exists (it may be another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# A command started by spawn, or a child started by multiprocessing.
Process: TypeAlias = subprocess.Popen[Any] | BaseProcess


def stop(*processes: Process, timeout_s: float = 10.0) -> None:
    """SIGTERM (a graceful stop) to each still running; once timeout_s has passed, SIGKILL
    to what is left: of a command spawn started, its whole session (a prefork worker's
    pool, say). Each is reaped, so none is left a zombie."""
    # A child never started has nothing to stop, and cannot be joined.
    started = [p for p in processes if p.pid is not None]
    for process in started:
        process.terminate()
    deadline = time.monotonic() + timeout_s
    for process in started:
        _wait(process, max(0.0, deadline - time.monotonic()))
    for process in started:
        if isinstance(process, BaseProcess):
            if process.is_alive():
                process.kill()
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.kill()  # one that is not its session's leader
        _wait(process, None)


def _wait(process: Process, timeout_s: float | None) -> None:
    if isinstance(process, BaseProcess):
        process.join(timeout_s)
    else:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout_s)


def wait_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    what: str,
    log: Path,
    timeout_s: float,
    poll_s: float = POLL_S,
) -> None:
    """Poll ready() until it holds; raise RunFailed, with the log's tail, if the process
    exits or time runs out first. The caller stops the process."""
    if not wait_until(ready, timeout_s, poll_s, unless=lambda: process.poll() is not None):
        raise RunFailed(f"{what} did not start: {tail(log)}")


def start_ready(
    argv: Sequence[str],
    log: Path,
    ready: Callable[[], bool],
    what: str,
    timeout_s: float,
    poll_s: float = POLL_S,
    env: Mapping[str, str] | None = None,
    stdin_text: str | None = None,
) -> subprocess.Popen[bytes]:
    """spawn(argv, log, env, stdin_text), then wait_ready: the process once ready() holds.
    One that does not get there is stopped before the error goes on."""
    process = spawn(argv, log, env, stdin_text)
    try:
        wait_ready(process, ready, what, log, timeout_s, poll_s)
    except BaseException:
        stop(process)
        raise
    return process


def tail(log: Path, lines: int = 5) -> str:
    """The last lines of a log, to say why a process would not start."""
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
