"""A kombu ticket buyer: the processes rung's buyer, its store and lock now in Redis.

    kombu SimpleQueue of buyers (a Redis list) -> get -> buy (Redis store) -> ack

Set beside local_ipc/processes.py's buyer_main: the JSON file became a Redis key and the
multiprocessing.Lock became one atomic script, or a Redis lock; each buyer arrives as a
message on a KombuQueue, and the sentinel stayed.
"""

from __future__ import annotations

import os
from typing import Any

from consumers.kombu_queue import KombuQueue
from core.broker import OUTAGE_ERRORS, RunKeys, client
from core.jobs import TicketsJob
from core.transport import session
from tasks.tickets import RedisTickets
from tasks.workloads import STOP, check_buy


def buyers_queue(keys: RunKeys) -> str:
    """The kombu queue of a run's buyers, one message each."""
    return keys.queue("buyers")


def ready_key(keys: RunKeys) -> str:
    """A counter of the run's buyer processes ready to take buyers."""
    return f"{keys.prefix}buyers-ready"


def serve(url: str, keys: RunKeys, job: TicketsJob, visibility_timeout_s: float) -> None:
    """Buy for each buyer taken from the queue until the sentinel, or the parent is gone.

    Acknowledged once answered: the buyer of a consumer that dies comes back to the
    queue, and a safe buy keeps its first answer, so it buys once. A buyer that cannot be
    served (an unreadable message, a buyer's number out of range, a lock not had in
    time) is refused and left unanswered, which the verification counts.
    """
    name = f"ladder-ticket-buyer-{os.getpid()}"
    tickets = RedisTickets(client(url, name=name), keys.prefix)

    def check(message: Any) -> None:
        if not isinstance(message, dict) or "buyer" not in message:
            raise ValueError(f"not a buyer: {message!r:.80}, not {{'buyer': number}}")
        check_buy(message["buyer"], job.gap_ms, job.mode)

    with session(url, visibility_timeout_s, name) as link:
        buyers = KombuQueue(
            link, buyers_queue(keys), check, on_connect=lambda: tickets.redis.incr(ready_key(keys))
        )
        while (message := buyers.get()) is not STOP:
            with link.riding_out():
                try:
                    tickets.buy(message["buyer"], job.gap_ms, job.mode)
                except OUTAGE_ERRORS:
                    raise  # to be waited out, and the buyer to come back
                except Exception as error:
                    buyers.refuse(error)
                    continue
                buyers.task_done()
        buyers.task_done()
