"""What a consumer over the broker handled, recorded in Redis for the runner to verify.

A consumer records each item before it acknowledges it: an item acknowledged but not
recorded would be lost from the tally. An item can still arrive twice: a consumer that
dies after recording but before its acknowledgement leaves the message to be delivered
again (at-least-once). Recording is idempotent, so such an item counts once in the
handled list, and the extra delivery is counted apart, as a redelivery.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from core.broker import RunKeys, client
from core.results import Consumed

# For each (id, latency) pair: count the delivery; only the first one of an id goes on
# the handled list, a line "<id> <latency_s>" appended to one string (read back in one
# GET, not one list element per item); a second one is counted as a redelivery. One
# round trip for a whole batch, atomic, so two consumers racing on one redelivered id
# still record it once.
#
# Only while the run is alive (its `alive` key, see RunKeys.lease): a consumer that was
# frozen and wakes after its run ended records nothing, rather than make the run's keys
# again; what it writes lives as long as the run's lease.
RECORD_ONCE = """
local lease = redis.call('PTTL', KEYS[4])
if lease == -2 then
    return 0
end
local lines = {}
for i = 1, #ARGV, 2 do
    if redis.call('HINCRBY', KEYS[1], ARGV[i], 1) == 1 then
        lines[#lines + 1] = ARGV[i] .. ' ' .. ARGV[i + 1] .. '\\n'
    else
        redis.call('INCR', KEYS[3])
    end
end
if #lines > 0 then
    redis.call('APPEND', KEYS[2], table.concat(lines))
end
if lease > 0 then
    for i = 1, 3 do
        redis.call('PEXPIRE', KEYS[i], lease)
    end
end
return 1
"""


class Recorder:
    """Records "<id> <latency_s>" once per id, and how often each id was delivered."""

    def __init__(self, url: str, name: str | None = None, ride_out: bool = True) -> None:
        # A consumer rides out a broker outage (its record waits for Redis to be back);
        # the parent watching the run does not, so that it can tell of the outage.
        self.redis: redis.Redis = client(url, name, ride_out)
        self.record_once = self.redis.register_script(RECORD_ONCE)

    def record(self, keys: RunKeys, item_id: int, latency_s: float) -> bool:
        return self.record_all(keys, [(item_id, latency_s)])

    def record_all(self, keys: RunKeys, handled: Sequence[tuple[int, float]]) -> bool:
        """Record a batch of (id, latency_s) in one round trip; False when the run is over
        and nothing was recorded."""
        args = [arg for item_id, latency_s in handled for arg in (item_id, f"{latency_s:.6f}")]
        names = [keys.deliveries, keys.handled, keys.redeliveries, keys.alive]
        return bool(self.record_once(keys=names, args=args))

    def count(self, keys: RunKeys) -> int:
        """Distinct items handled so far."""
        return int(self.redis.hlen(keys.deliveries))

    def read(self, keys: RunKeys) -> Consumed:
        consumed = Consumed()
        for line in (self.redis.get(keys.handled) or "").splitlines():
            item_id, latency_s = line.split()
            consumed.record(int(item_id), float(latency_s))
        consumed.redelivered = int(self.redis.get(keys.redeliveries) or 0)
        return consumed
