"""Waiting for a condition: polled, with a time limit, and ended at once by Ctrl-C or
SIGTERM (interrupt.check at every round)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from core import interrupt

T = TypeVar("T")

POLL_S = 0.05


def wait_until(
    ready: Callable[[], T],
    timeout_s: float,
    poll_s: float = POLL_S,
    unless: Callable[[], bool] = lambda: False,
) -> T | None:
    """The first true value of ready(), asked every poll_s; None once unless() holds (a
    process that was to answer has exited, say) or timeout_s has passed. The caller says
    what did not happen."""
    deadline = time.monotonic() + timeout_s
    while not (value := ready()):
        if unless() or time.monotonic() > deadline:
            return None
        interrupt.check()
        time.sleep(poll_s)
    return value


def wait_while_moving(
    count: Callable[[], int | None],
    done: Callable[[int], bool],
    stall_s: float | None,
    poll_s: float = POLL_S,
) -> bool:
    """Poll count() until done(count) holds (True), or until the count has not changed
    for stall_s (False; None: no limit), so that a wait lasts as long as the work moves.
    A None count, what is counted being out of reach for now, is no stall: the caller
    bounds such an outage itself."""
    last: int | None = None
    changed = time.monotonic()
    while True:
        value = count()
        if value is None or value != last:
            last, changed = value, time.monotonic()
        if value is not None and done(value):
            return True
        if stall_s is not None and time.monotonic() - changed > stall_s:
            return False
        interrupt.check()
        time.sleep(poll_s)
