"""What a consumer over the broker handled, recorded in Redis for the runner to verify.

A consumer records each item before it acknowledges it: an item acknowledged but not
recorded would be lost from the tally, one recorded twice is counted as a duplicate.
"""

from __future__ import annotations

import redis

from ladder.broker import RunKeys, client
from ladder.results import Consumed


class Recorder:
    """Appends "<id> <latency_s>" to the run's handled list; one client per process."""

    def __init__(self, url: str) -> None:
        self.redis: redis.Redis = client(url)

    def record(self, keys: RunKeys, item_id: int, latency_s: float) -> None:
        self.redis.rpush(keys.handled, f"{item_id} {latency_s:.6f}")

    def count(self, keys: RunKeys) -> int:
        return int(self.redis.llen(keys.handled))

    def read(self, keys: RunKeys) -> Consumed:
        consumed = Consumed()
        for entry in self.redis.lrange(keys.handled, 0, -1):
            item_id, latency_s = entry.split()
            consumed.record(int(item_id), float(latency_s))
        return consumed
