"""What a consumer over the broker handled, recorded in Redis for the runner to verify.

A consumer records each item before it acknowledges it: an item acknowledged but not
recorded would be lost from the tally. An item can still arrive twice: a consumer that
dies after recording but before its acknowledgement leaves the message to be delivered
again (at-least-once). Recording is idempotent, so such an item counts once in the
handled list, and the extra delivery is counted apart, as a redelivery.
"""

from __future__ import annotations

import redis

from ladder.broker import RunKeys, client
from ladder.results import Consumed

# Count the delivery; only the first one of an id goes on the handled list. One round
# trip, atomic, so two consumers racing on one redelivered id still record it once.
RECORD_ONCE = """
local deliveries = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if deliveries == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[1] .. ' ' .. ARGV[2])
end
return deliveries
"""


class Recorder:
    """Records "<id> <latency_s>" once per id, and how often each id was delivered."""

    def __init__(self, url: str, name: str | None = None) -> None:
        self.redis: redis.Redis = client(url, name)
        self.record_once = self.redis.register_script(RECORD_ONCE)

    def record(self, keys: RunKeys, item_id: int, latency_s: float) -> None:
        self.record_once(keys=[keys.deliveries, keys.handled], args=[item_id, f"{latency_s:.6f}"])

    def count(self, keys: RunKeys) -> int:
        """Distinct items handled so far."""
        return int(self.redis.llen(keys.handled))

    def read(self, keys: RunKeys) -> Consumed:
        consumed = Consumed()
        for entry in self.redis.lrange(keys.handled, 0, -1):
            item_id, latency_s = entry.split()
            consumed.record(int(item_id), float(latency_s))
        deliveries = [int(n) for n in self.redis.hvals(keys.deliveries)]
        consumed.redelivered = sum(deliveries) - len(deliveries)
        return consumed
