"""The Celery app and its tasks: thin wrappers of the same workload functions.

`celery -A tasks worker -E` serves these tasks; `celery -A tasks flower` watches them.
The broker and result backend come from CELERY_BROKER_URL / CELERY_RESULT_BACKEND.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import redis
from celery import Celery
from kombu.entity import Queue

from core.broker import RunKeys, client, transport_options
from core.recorder import Recorder
from core.settings import FALLBACK_BROKER_URL, VISIBILITY_TIMEOUT_S
from core.work import CPU_QUEUE, IO_QUEUE, QUEUES, Item, WorkKind
from tasks import workloads
from tasks.tickets import RedisTickets

# Two queues, routed by the kind of work (core.work.CPU_QUEUE, IO_QUEUE): CPU-bound
# tasks to workers with a process per core (prefork), waiting ones to workers with many
# slots (threads). A worker started with no -Q serves both, and Celery's default queue
# for a task sent by a client that knows no routes; `celery worker -Q cpu` or `-Q io`
# serves one, as compose.yaml's two kinds of worker do.
ROUTES = {
    "tasks.sum_range": CPU_QUEUE,
    "tasks.add_totals": CPU_QUEUE,
    "tasks.handle_item": IO_QUEUE,  # sent to CPU_QUEUE when its work is CPU-bound
    "tasks.handle_batch": IO_QUEUE,
    "tasks.buy_ticket": IO_QUEUE,
}

CONFIG: dict[str, Any] = {
    "task_routes": {name: {"queue": queue} for name, queue in ROUTES.items()},
    "task_queues": [Queue(name) for name in QUEUES],
    # JSON only: a pickle message could run code in the worker, so it is refused.
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    "event_serializer": "json",
    # Events on, so that Flower sees every task sent, started and finished.
    "worker_send_task_events": True,
    # But no "task-sent" event from the sender: it is a second message per task, which
    # cost about a third of each apply_async in a py-spy profile of a producer (an event
    # PUBLISH besides the task's LPUSH). Flower still sees every task, from the worker's
    # received, started and succeeded events.
    "task_send_sent_event": False,
    "broker_connection_retry_on_startup": True,
    # A task sent while the broker is down or restarting is retried for about a minute
    # (tries 0.2 s apart, then 1 s), not the default's three tries within 0.6 s.
    "task_publish_retry_policy": {
        "max_retries": 60,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 1,
    },
    "result_expires": 3600,
    "worker_hijack_root_logger": False,
    # A message that is not a task message is refused and logged, not fatal.
    "broker_transport": "core.transport:Transport",
    "worker_consumer": "tasks.worker_consumer:RefusingConsumer",
}


def make_app(broker_url: str | None, result_backend: str | None = None) -> Celery:
    """A Celery app with the project's settings, on the URLs given (Celery would take
    CELERY_BROKER_URL from the environment over them: ladder takes it out of its own, see
    core.settings.forget_celery_variables); also a plain client that sends by name."""
    app = Celery("tasks")
    app.conf.update(
        CONFIG,
        broker_url=broker_url or FALLBACK_BROKER_URL,
        result_backend=result_backend or broker_url or FALLBACK_BROKER_URL,
        broker_transport_options=transport_options(VISIBILITY_TIMEOUT_S),
    )
    return app


# The app `celery -A tasks worker` and `celery -A tasks flower` serve: configured from
# their environment as they start (tasks/worker_config.py), not as this module is
# imported, so that importing it never reads a setting.
app = Celery("tasks")
app.conf.update(CONFIG)
app.config_from_object("tasks.worker_config")


@functools.cache
def recorder() -> Recorder:
    """One Redis client per worker process, on the broker this worker serves."""
    return Recorder(app.conf.broker_url, name=f"ladder-celery-worker-{os.getpid()}")


@app.task(name="tasks.noop", ignore_result=True)
def noop() -> None:
    """Nothing at all: what a task costs Celery itself, the bench's limit."""


# Every task checks its arguments first: anyone who can write to the broker can send a
# task, and a bound not checked here (a sum to 10**18, a run id of "*") is a worker tied
# up for good or keys written outside its run's ladder:<run id>:. A task refused so
# fails in one log line, and the worker serves on.
@app.task(name="tasks.sum_range")
def sum_range(start: int, stop: int) -> int:
    return workloads.sum_range(*workloads.check_range(start, stop))


@app.task(name="tasks.add_totals")
def add_totals(totals: list[int]) -> int:
    """The chord's body: one total from the totals of every chunk."""
    return sum(workloads.check_totals(totals))


# acks_late: the message is acknowledged after the item is handled and recorded, not
# before, so a worker that dies mid-item leaves it to be delivered again;
# reject_on_worker_lost makes that redelivery happen when a pool child is killed.
@app.task(name="tasks.handle_item", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def handle_item(item: Item, run_id: str, work_ms: float = 0.0, work_kind: WorkKind = "io") -> None:
    keys = RunKeys(workloads.check_run_id(run_id))
    work = workloads.check_work(work_ms, work_kind)
    item_id, latency_s = workloads.handle_item(workloads.check_item(item), *work)
    recorder().record(keys, item_id, latency_s)


# The same for a batch: one message, one task, many items, each recorded once.
@app.task(name="tasks.handle_batch", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def handle_batch(
    items: list[Item],
    run_id: str,
    work_ms: float = 0.0,
    work_kind: WorkKind = "io",
) -> None:
    keys = RunKeys(workloads.check_run_id(run_id))
    work = workloads.check_work(work_ms, work_kind)
    handled = workloads.handle_batch(workloads.check_batch(items), *work)
    recorder().record_all(keys, handled)


@functools.cache
def ticket_client() -> redis.Redis:
    """One Redis client per worker process for the ticket store, on the broker it serves."""
    return client(app.conf.broker_url, name=f"ladder-celery-buyer-{os.getpid()}")


# A buyer is acknowledged once answered; a safe buy keeps a buyer's first answer in
# Redis, so a buyer delivered again (its worker lost) still buys once.
@app.task(name="tasks.buy_ticket", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def buy_ticket(run_id: str, buyer: int, gap_ms: float, mode: str) -> bool:
    """Buyer number `buyer` of run run_id checks, waits gap_ms and buys: mode is unsafe,
    atomic or redis-lock."""
    keys = RunKeys(workloads.check_run_id(run_id))
    return RedisTickets(ticket_client(), keys.prefix).buy(*workloads.check_buy(buyer, gap_ms, mode))
