"""Watching a run from a test: a Progress that adds up, a poll until something holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


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
        time.sleep(0.05)
    return True
