"""Two threads, two locks: the deadlock of opposite lock orders, and its fixes.

    thread 1: holds lock A, wants lock B        thread 2: holds lock B, wants lock A
    -> each waits for what the other holds: neither ever goes on

Every wait here has a timeout, so the demo reports a deadlock instead of hanging in
it. The fixes: every thread takes the locks in one agreed order; and a lock that the
thread holding it takes again (a locked function calling another) is an RLock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Outcome:
    """One case of the demo: whether it deadlocked, and whether it was meant to."""

    case: str
    deadlocked: bool
    meant_to: bool
    detail: str

    @property
    def as_meant(self) -> bool:
        return self.deadlocked == self.meant_to

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "as_meant": self.as_meant}


def run_threads(*targets: Callable[[], None]) -> None:
    threads = [threading.Thread(target=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def opposite_order(timeout_s: float = TIMEOUT_S) -> Outcome:
    """Thread 1 takes A then B, thread 2 takes B then A: a deadlock, every time."""
    a, b = threading.Lock(), threading.Lock()
    # Both threads hold their first lock before either asks for its second, and keep it
    # until both have asked: the deadlock is certain, not a matter of timing.
    holding, asked = threading.Barrier(2, timeout=5), threading.Barrier(2, timeout=5)
    waited_in_vain: list[str] = []

    def take(name: str, first: threading.Lock, second: threading.Lock) -> None:
        with first:
            holding.wait()
            if second.acquire(timeout=timeout_s):
                second.release()
            else:
                waited_in_vain.append(name)
            asked.wait()

    run_threads(lambda: take("A then B", a, b), lambda: take("B then A", b, a))
    return Outcome(
        "opposite orders: A then B, B then A",
        deadlocked=bool(waited_in_vain),
        meant_to=True,
        detail=(
            f"{' and '.join(sorted(waited_in_vain))} each waited {timeout_s:g} s for the "
            "lock the other held: a deadlock, ended by the timeout"
            if waited_in_vain
            else "both got their second lock"
        ),
    )


def one_order(timeout_s: float = TIMEOUT_S) -> Outcome:
    """The fix: both threads take A before B, so whoever has A can always get B."""
    a, b = threading.Lock(), threading.Lock()
    start = threading.Barrier(2, timeout=5)
    waited_in_vain: list[str] = []

    def take(name: str) -> None:
        start.wait()
        held = []
        for lock in (a, b):  # one order for every thread: A, then B
            if not lock.acquire(timeout=timeout_s):
                waited_in_vain.append(name)
                break
            held.append(lock)
        for lock in reversed(held):
            lock.release()

    run_threads(lambda: take("thread 1"), lambda: take("thread 2"))
    return Outcome(
        "one order: A then B in both",
        deadlocked=bool(waited_in_vain),
        meant_to=False,
        detail=(
            "both threads finished, each taking A before B"
            if not waited_in_vain
            else f"{', '.join(waited_in_vain)} timed out"
        ),
    )


def reentry(lock: threading.Lock | threading.RLock, timeout_s: float = TIMEOUT_S) -> bool:
    """A locked function calling another that takes the same lock; True if it got in."""
    got_in: list[bool] = []

    def inner() -> None:
        entered = lock.acquire(timeout=timeout_s)
        if entered:
            lock.release()
        got_in.append(entered)

    def outer() -> None:
        with lock:
            inner()

    run_threads(outer)
    return got_in == [True]


def reentry_with_lock(timeout_s: float = TIMEOUT_S) -> Outcome:
    got_in = reentry(threading.Lock(), timeout_s)
    return Outcome(
        "re-entry with a Lock",
        deadlocked=not got_in,
        meant_to=True,
        detail=(
            f"the thread waited {timeout_s:g} s for the Lock it held itself: a Lock "
            "does not know its owner"
            if not got_in
            else "the thread got in again"
        ),
    )


def reentry_with_rlock(timeout_s: float = TIMEOUT_S) -> Outcome:
    got_in = reentry(threading.RLock(), timeout_s)
    return Outcome(
        "re-entry with an RLock",
        deadlocked=not got_in,
        meant_to=False,
        detail=(
            "the owner took it again and released it twice: an RLock counts its holds"
            if got_in
            else "the owner could not take it again"
        ),
    )


def demo(timeout_s: float = TIMEOUT_S) -> list[Outcome]:
    """Each deadlock, then its fix."""
    return [
        opposite_order(timeout_s),
        one_order(timeout_s),
        reentry_with_lock(timeout_s),
        reentry_with_rlock(timeout_s),
    ]
