"""The ticket sale over a broker: the store is a Redis key, each buyer a message or a task.

    kombu:  parent -> SimpleQueue of buyers -> buyer processes (consumers/ticket_buyers.py)
    celery: parent -> apply_async(tasks.buy_ticket) per buyer -> Celery workers
    both:   buyers -> the run's tickets key and answers hash in Redis -> parent -> Sales

As over the broker the parent cannot join its buyers' results, it watches the answers
in Redis grow, then reads them and what is left of the tickets.
"""

from __future__ import annotations

from celery import Celery

from consumers.ticket_buyers import buyers_queue, ready_key, serve
from core.broker import RunKeys, client
from core.errors import RunFailed
from core.forkserver import Child, stop_processes
from core.jobs import TicketsJob
from core.results import Sales
from core.rung import Progress, Shown
from core.transport import connect
from core.wait import wait_until, wait_while_moving
from tasks.tickets import RedisTickets
from tasks.workloads import STOP

POLL_S = 0.05
START_TIMEOUT_S = 30.0


def store(url: str, keys: RunKeys, tickets: int) -> RedisTickets:
    """The run's store, filled with `tickets`."""
    sale = RedisTickets(client(url, name="ladder-ticket-seller"), keys.prefix)
    sale.fill(tickets)
    return sale


def watch(sale: RedisTickets, buyers: int, progress: Progress, stall_s: float) -> None:
    """Poll until every buyer is answered, or none has been for stall_s (those left
    unanswered are then counted by the verification)."""
    shown = Shown(progress)
    wait_while_moving(lambda: shown.to(sale.answered()), lambda n: n >= buyers, stall_s, POLL_S)


def kombu_tickets(
    url: str, job: TicketsJob, progress: Progress, visibility_timeout_s: float, stall_s: float
) -> Sales:
    keys = RunKeys.new()
    buyers = [
        Child(target=serve, args=(url, keys, job, visibility_timeout_s), name=f"buyer-{w}")
        for w in range(job.workers)
    ]
    with keys.lease(url):
        try:
            sale = store(url, keys, job.tickets)
            with connect(url, visibility_timeout_s) as connection:
                channel = connection.SimpleQueue(buyers_queue(keys), serializer="json")
                for process in buyers:
                    process.start()
                # Buyers go out once every buyer process is listening: the first one up would
                # otherwise serve them all alone, one at a time, and never race.
                if not wait_until(
                    lambda: int(sale.redis.get(ready_key(keys)) or 0) >= job.workers,
                    START_TIMEOUT_S,
                    POLL_S / 5,
                    unless=lambda: not all(p.is_alive() for p in buyers),
                ):
                    raise RunFailed("the kombu buyer processes did not all start")
                for buyer in range(job.buyers):
                    channel.put({"buyer": buyer})
                watch(sale, job.buyers, progress, stall_s)
                # As in the pipeline, the sentinels go once every buyer is answered: the
                # buyers of a consumer that died come back only after the visibility timeout.
                for _ in buyers:
                    channel.put(STOP)
            for process in buyers:
                process.join(stall_s)
            sales = sale.sales()
            sales.at_once = job.workers
            return sales
        finally:
            stop_processes(buyers)


def celery_tickets(
    app: Celery, url: str, job: TicketsJob, progress: Progress, stall_s: float
) -> Sales:
    keys = RunKeys.new()
    with keys.lease(url):
        sale = store(url, keys, job.tickets)
        buy = app.signature("tasks.buy_ticket")
        for buyer in range(job.buyers):
            buy.apply_async((keys.run_id, buyer, job.gap_ms, job.mode))
        watch(sale, job.buyers, progress, stall_s)
        sales = sale.sales()
        sales.at_once = job.workers
        return sales
