"""Ctrl-C and SIGTERM, made reliable: a flag that every wait loop checks, and in a
child, both left to the parent that stops it.

The signal handler raises at once, which stops the run wherever it is, except when
Python runs it inside a __del__, a __set_name__ or the weak-reference callback that
frees an import's module lock (the garbage collector, a class body, a lazy import of
celery mid-run), where an exception would be swallowed, printed or rewrapped: then only
the flag is set, and the next wait loop raises.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from types import FrameType
from typing import NoReturn


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C, so that every child is stopped.

    A BaseException, as KeyboardInterrupt is, so that no `except Exception` swallows it.
    """


FRAGILE = ("__del__", "__set_name__")
# Weak-reference callbacks, whose exceptions Python prints and drops, by qualified name
# (a bare "cb" or "remove" would match too much): importlib's module locks, and the
# weak containers that the logging, threading and multiprocessing modules keep.
FRAGILE_QUALIFIED = (
    "_get_module_lock.<locals>.cb",
    "WeakValueDictionary.__init__.<locals>.remove",
    "WeakKeyDictionary.__init__.<locals>.remove",
    "WeakSet.__init__.<locals>._remove",
)
_requested: int | None = None
_main_pid = os.getpid()


def _handle(signum: int, frame: FrameType | None) -> None:
    global _requested
    if os.getpid() != _main_pid:
        # A child that inherited this handler dies as the signal means, at once.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    _requested = signum
    if not _in_fragile_frame(frame):
        check()


def _in_fragile_frame(frame: FrameType | None) -> bool:
    """True where Python swallows, prints or rewraps an exception instead of raising it."""
    while frame is not None:
        code = frame.f_code
        if code.co_name in FRAGILE or code.co_qualname in FRAGILE_QUALIFIED:
            return True
        frame = frame.f_back
    return False


def install() -> None:
    """Handle SIGINT and SIGTERM in this (the main) process."""
    global _main_pid
    _main_pid = os.getpid()
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)


def leave_to_parent() -> None:
    """In a child: Ctrl-C, which a terminal sends to the whole process group, is left to
    the parent, which stops its children; SIGTERM, which is how the parent stops it, ends
    it at once, wherever it is."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def check() -> None:
    """Raise if a stop was asked for: call it in every loop that waits."""
    if _requested == signal.SIGTERM:
        raise Terminated
    if _requested == signal.SIGINT:
        raise KeyboardInterrupt


def wait() -> None:
    """Sleep until Ctrl-C or SIGTERM, which here end the wait normally."""
    global _requested
    try:
        while True:
            check()
            signal.pause()
    except (KeyboardInterrupt, Terminated):
        _requested = None


def exit_now(code: int, line: str) -> NoReturn:
    """Print line on stderr and exit with code, without waiting for threads still running.

    For a stop, once everything the run started is stopped. A thread running Python
    cannot be stopped, and a normal exit joins every thread that is not a daemon, and
    a ThreadPoolExecutor's workers even when they are: a thread summing one huge chunk
    would hold the exit for minutes. So this runs what a normal exit runs after joining
    them, the atexit functions (multiprocessing's among them, which unlinks the run's
    semaphores: without it the resource tracker warns of leaked ones), and leaves with
    os._exit, which waits for no thread. atexit._run_exitfuncs is CPython's own, not
    documented but there since Python 3.0.
    """
    print(line, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
