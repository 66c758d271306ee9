"""Dramatiq: actors on a RedisBroker; `dramatiq peers.dramatiq_peer -p P -t T`.

Messages are JSON (Dramatiq's default encoder). An actor's message is acknowledged
after it ran, as the celery rung's acks_late.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from peers import work

NAME = "dramatiq"
QUEUE_KEY = f"dramatiq:{work.QUEUE}"  # a list of message ids; the messages wait in a hash
READY_LINE = "Worker process is ready for action"


# How long a worker process's graceful stop (SIGTERM, from ladder, or from Linux when
# ladder dies) may wait for its in-flight messages: Dramatiq's default is 10 minutes, and
# with the broker gone too they would wait it out, orphans of a killed ladder.
SHUTDOWN_TIMEOUT_MS = 3000


def worker_argv(processes: int, threads: int) -> list[list[str]]:
    """One dramatiq command: `processes` worker processes, `threads` threads each."""
    argv = ["dramatiq", __name__, "--processes", str(processes), "--threads", str(threads)]
    argv += ["--worker-shutdown-timeout", str(SHUTDOWN_TIMEOUT_MS)]
    return [[*argv, "--queues", work.QUEUE]]


def sender(url: str) -> Any:
    """send(item, run_id, work_ms, work_kind), by actor name: the code is the workers'."""
    broker = RedisBroker(url=url)

    def send(*args: Any) -> None:
        broker.enqueue(dramatiq.Message(work.QUEUE, "handle", args, {}, {}))

    return send


# What the worker command imports: the broker it serves, and the actor. A failed item
# is not retried (Dramatiq's default is 20 retries): the parent resends what is missing.
dramatiq.set_broker(RedisBroker(url=work.BROKER_URL))
dramatiq.actor(actor_name="handle", queue_name=work.QUEUE, max_retries=0)(work.handle)
