"""Tickets: B buyers race for T tickets in a store. The stores, and one buyer's buy.

A buyer checks the count, waits (the gap a real request has: a form, a payment, a
round trip), then buys. The naive buyer writes back the count it saw, less one: two
buyers inside the same gap both saw the same count, so both sell and one sale
overwrites the other, and once the store is nearly empty tickets are sold that were
never there. A safe buyer checks again at the moment it buys, and that check and the
write are one step: under a lock, or one atomic operation in Redis.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import MutableMapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.results import Sales

if TYPE_CHECKING:
    import redis

BUYER_MODES = ("unsafe", "atomic", "redis-lock")

# A lock in Redis has a timeout, so that a buyer that dies holding it does not stop the
# sale for good. It must outlast the longest hold (a re-read and a write: milliseconds),
# or it would expire in a slow holder's hands and let a second buyer in.
LOCK_TIMEOUT_S = 5.0
# redis-py's Lock polls for a held lock, every 0.1 s by default: far longer than the
# milliseconds it is held, so buyers would mostly sleep.
LOCK_POLL_S = 0.001
LOCK_WAIT_S = 30.0


class Store(Protocol):
    def read(self) -> int: ...
    def write(self, count: int) -> None: ...


class MemoryStore:
    """The count in this process's memory: shared by threads and coroutines."""

    def __init__(self, tickets: int) -> None:
        self.count = tickets

    def read(self) -> int:
        return self.count

    def write(self, count: int) -> None:
        self.count = count


class FileStore:
    """The count in a JSON file, which separate processes can all reach.

    A write goes to a file of its own, then is renamed over the store: a reader sees the
    old count or the new one, never half a file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, path: Path, tickets: int) -> FileStore:
        store = cls(path)
        store.write(tickets)
        return store

    def read(self) -> int:
        return int(json.loads(self.path.read_text())["tickets"])

    def write(self, count: int) -> None:
        own = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}")
        own.write_text(json.dumps({"tickets": count}))
        os.replace(own, self.path)


class MappingStore:
    """The count under "tickets" in a mapping: a multiprocessing.Manager dict, for one."""

    def __init__(self, mapping: MutableMapping[str, int]) -> None:
        self.mapping = mapping

    def read(self) -> int:
        return self.mapping["tickets"]

    def write(self, count: int) -> None:
        self.mapping["tickets"] = count


def pause(gap_ms: float) -> None:
    if gap_ms > 0:
        time.sleep(gap_ms / 1000)


def buy(store: Store, gap_ms: float, lock: AbstractContextManager[Any] | None) -> bool:
    """One buyer: check the count, wait the gap, buy. Without a lock, the naive buy."""
    seen = store.read()
    if seen <= 0:
        return False
    pause(gap_ms)
    if lock is None:
        # What was seen before the gap is written back less one, whatever others sold
        # meanwhile: the read-modify-write race.
        store.write(seen - 1)
        return True
    with lock:
        # Checked again at the moment of buying: what was seen may be gone by now.
        left = store.read()
        if left <= 0:
            return False
        store.write(left - 1)
        return True


# The check and the sale in one step, which Redis runs with nothing in between. The
# buyer's answer is kept, so that a buyer delivered twice (at-least-once) buys once.
# Only while the run is alive (its `alive` key): a buyer that wakes after its run ended
# buys nothing and makes none of the run's keys again.
BUY_ATOMIC = """
local lease = redis.call('PTTL', KEYS[3])
if lease == -2 then
    return 0
end
local answered = redis.call('HGET', KEYS[2], ARGV[1])
if answered then
    return tonumber(answered)
end
local bought = 0
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
    redis.call('DECR', KEYS[1])
    bought = 1
end
redis.call('HSET', KEYS[2], ARGV[1], bought)
if lease > 0 then
    redis.call('PEXPIRE', KEYS[2], lease)
end
return bought
"""
# A buyer's answer, kept if it is the first (a buyer delivered again keeps its first
# one), and only while the run is alive.
ANSWER = """
local lease = redis.call('PTTL', KEYS[2])
if lease == -2 then
    return 0
end
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
if lease > 0 then
    redis.call('PEXPIRE', KEYS[1], lease)
end
return 1
"""


class RedisTickets:
    """The store as a Redis key under a run's prefix (ladder:<run id>:), and each buyer's
    answer beside it."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.count = f"{prefix}tickets"
        self.answers = f"{prefix}answers"
        self.lock_name = f"{prefix}tickets-lock"
        self.alive = f"{prefix}alive"
        self.buy_atomic = client.register_script(BUY_ATOMIC)
        self.answer = client.register_script(ANSWER)

    def fill(self, tickets: int) -> None:
        self.redis.delete(self.answers, self.lock_name)
        self.redis.set(self.count, tickets)

    def left(self) -> int:
        return int(self.redis.get(self.count) or 0)

    def answered(self) -> int:
        return int(self.redis.hlen(self.answers))

    def sales(self) -> Sales:
        answers = self.redis.hvals(self.answers)
        sold = sum(1 for answer in answers if answer == "1")
        return Sales(sold=sold, turned_away=len(answers) - sold, left=self.left())

    def buy(self, buyer: int, gap_ms: float, mode: str) -> bool:
        """Buyer number `buyer` checks, waits the gap and buys: unsafe, atomic or redis-lock."""
        if mode not in BUYER_MODES:
            raise ValueError(f"mode must be one of: {', '.join(BUYER_MODES)} (got {mode!r})")
        seen = self.left()
        if seen <= 0:
            return self._answer(buyer, False)
        pause(gap_ms)
        if mode == "unsafe":
            # The naive read-modify-write, over the network: GET, wait, SET what was seen
            # less one (if the count is still there: a run that ended has none).
            self.redis.set(self.count, seen - 1, xx=True, keepttl=True)
            return self._answer(buyer, True)
        if mode == "atomic":
            keys = [self.count, self.answers, self.alive]
            return bool(self.buy_atomic(keys=keys, args=[buyer]))
        lock = self.redis.lock(
            self.lock_name, timeout=LOCK_TIMEOUT_S, sleep=LOCK_POLL_S, blocking_timeout=LOCK_WAIT_S
        )
        with lock:
            answered = self.redis.hget(self.answers, str(buyer))
            if answered is not None:
                return bool(answered == "1")
            left = self.left()
            if left > 0:
                self.redis.set(self.count, left - 1, xx=True, keepttl=True)
            return self._answer(buyer, left > 0)

    def _answer(self, buyer: int, bought: bool) -> bool:
        self.answer(keys=[self.answers, self.alive], args=[buyer, int(bought)])
        return bought
