"""The Celery app and its tasks: thin wrappers of the same workload functions.

`celery -A tasks worker -E` serves these tasks; `celery -A tasks flower` watches them.
The broker and result backend come from CELERY_BROKER_URL / CELERY_RESULT_BACKEND.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from celery import Celery

from consumers.recorder import Recorder
from ladder.broker import RunKeys, transport_options
from ladder.settings import Settings
from tasks import workloads

# A worker started from a plain shell with no URL in its environment serves the
# local Redis rather than Celery's own default, an AMQP broker.
FALLBACK_BROKER_URL = "redis://127.0.0.1:6379/0"

CONFIG: dict[str, Any] = {
    # JSON only: a pickle message could run code in the worker, so it is refused.
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    "event_serializer": "json",
    # Events on, so that Flower sees every task sent, started and finished.
    "worker_send_task_events": True,
    "task_send_sent_event": True,
    "broker_connection_retry_on_startup": True,
    "result_expires": 3600,
    "worker_hijack_root_logger": False,
}


def make_app(broker_url: str | None, result_backend: str | None = None) -> Celery:
    """A Celery app with the project's settings; also a plain client that sends by name."""
    app = Celery("tasks")
    app.conf.update(
        CONFIG,
        broker_url=broker_url or FALLBACK_BROKER_URL,
        result_backend=result_backend or broker_url or FALLBACK_BROKER_URL,
        broker_transport_options=transport_options(_settings.visibility_timeout_s),
    )
    return app


_settings = Settings.load()
app = make_app(_settings.broker_url, _settings.result_backend)


@functools.cache
def recorder() -> Recorder:
    """One Redis client per worker process, on the broker this worker serves."""
    return Recorder(app.conf.broker_url, name=f"ladder-celery-worker-{os.getpid()}")


@app.task(name="tasks.sum_range")
def sum_range(start: int, stop: int) -> int:
    return workloads.sum_range(start, stop)


@app.task(name="tasks.add_totals")
def add_totals(totals: list[int]) -> int:
    """The chord's body: one total from the totals of every chunk."""
    return sum(totals)


# acks_late: the message is acknowledged after the item is handled and recorded, not
# before, so a worker that dies mid-item leaves it to be delivered again;
# reject_on_worker_lost makes that redelivery happen when a pool child is killed.
@app.task(name="tasks.handle_item", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def handle_item(
    item: workloads.Item, run_id: str, work_ms: float = 0.0, work_kind: workloads.WorkKind = "io"
) -> None:
    item_id, latency_s = workloads.handle_item(item, work_ms, work_kind)
    recorder().record(RunKeys(run_id), item_id, latency_s)
