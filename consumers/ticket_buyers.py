"""A kombu ticket buyer: the processes rung's buyer, its store and lock now in Redis.

    kombu SimpleQueue of buyers (a Redis list) -> get -> buy (Redis store) -> ack

Set beside local_ipc/processes.py's buyer_main: the JSON file became a Redis key and the
multiprocessing.Lock became one atomic script, or a Redis lock; each buyer arrives as a
message, and the sentinel stayed.
"""

from __future__ import annotations

import logging
import os

from consumers.kombu_consumer import connect
from ladder.broker import RunKeys, client
from ladder.jobs import TicketsJob
from tasks.tickets import RedisTickets
from tasks.workloads import STOP

POLL_S = 1.0
log = logging.getLogger(__name__)


def buyers_queue(keys: RunKeys) -> str:
    """The kombu queue of a run's buyers, one message each."""
    return keys.queue("buyers")


def ready_key(keys: RunKeys) -> str:
    """A counter of the run's buyer processes ready to take buyers."""
    return f"{keys.prefix}buyers-ready"


def serve(url: str, keys: RunKeys, job: TicketsJob, visibility_timeout_s: float) -> None:
    """Buy for each buyer taken from the queue until the sentinel, or the parent is gone."""
    parent = os.getppid()
    tickets = RedisTickets(client(url, name=f"ladder-ticket-buyer-{os.getpid()}"), keys.prefix)
    with connect(url, visibility_timeout_s) as connection:
        channel = connection.SimpleQueue(buyers_queue(keys), serializer="json", accept=["json"])
        tickets.redis.incr(ready_key(keys))
        while os.getppid() == parent:
            try:
                message = channel.get(timeout=POLL_S)
            except channel.Empty:
                continue
            try:
                buyer = message.payload
                if buyer is STOP:
                    message.ack()
                    return
                tickets.buy(int(buyer["buyer"]), job.gap_ms, job.mode)
            except Exception as error:
                # A buyer that cannot be served (an unreadable message, a lock not had
                # in time) is left unanswered, which the verification counts.
                log.warning("refused a buyer on %s: %s", buyers_queue(keys), error)
                message.reject()
                continue
            # Acknowledged once answered: the buyer of a consumer that dies comes back to
            # the queue, and a safe buy keeps its first answer, so it buys once.
            message.ack()
