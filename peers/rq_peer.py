"""RQ: plain functions queued by import path; `rq worker --worker-class SimpleWorker`.

RQ pickles its jobs by default; here they are JSON (--serializer json), as for every
rung. SimpleWorker runs each job in the worker process itself, not in a fork per job:
RQ has no threads, so each process runs one job at a time.
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from peers import work

NAME = "rq"
QUEUE_KEY = f"rq:queue:{work.QUEUE}"
READY_LINE = "started with PID"


def worker_argv(processes: int, threads: int) -> list[list[str]]:
    """processes x threads SimpleWorker processes: one job at a time each. The URL comes
    from RQ_REDIS_URL in the environment, never on a command line."""
    argv = ["rq", "worker", "--worker-class", "rq.worker.SimpleWorker", "--serializer", "json"]
    return [[*argv, work.QUEUE] for _ in range(processes * threads)]


def sender(url: str) -> Any:
    """send(item, run_id, work_ms, work_kind)."""
    queue = Queue(work.QUEUE, connection=Redis.from_url(url), serializer=JSONSerializer)

    def send(*args: Any) -> None:
        queue.enqueue("peers.work.handle", *args, result_ttl=0)

    return send
