"""Watching a run from a test: a Progress that adds up, a poll until something holds."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

POLL_S = 0.05


class Counter:
    """A Progress that adds up what it is told, from any thread."""

    def __init__(self) -> None:
        self.total = 0
        self._lock = threading.Lock()

    def __call__(self, n: int) -> None:
        with self._lock:
            self.total += n


def wait_for(condition_met: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    """Poll until condition_met() holds (True), or timeout_s passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition_met():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def poll_until(
    condition_met: Callable[[], bool],
    timeout_s: float,
    never: str,
    meanwhile: Callable[[], None] = lambda: None,
    step_s: float = POLL_S,
) -> None:
    """Poll until condition_met() holds; fail saying `never` once timeout_s has passed.

    meanwhile() runs before each wait and asserts that what should get there is still at
    it (a process still running, a run not ended): a wait for something that can no
    longer come fails at once, with its own reason, rather than at the timeout.
    """
    deadline = time.monotonic() + timeout_s
    while not condition_met():
        meanwhile()
        assert time.monotonic() < deadline, never
        time.sleep(step_s)


def still_running(
    process: subprocess.Popen[Any], ended: str | Callable[[], str]
) -> Callable[[], None]:
    """A `meanwhile` for poll_until: fails, saying `ended`, once process has exited."""

    def check() -> None:
        if process.poll() is not None:
            raise AssertionError(ended() if callable(ended) else ended)

    return check
