"""What every broker producer does: send a share of the items, a batch per message, and
hold back while the broker's queue is full (a Redis list has no maxsize)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from core.broker import client
from core.forkserver import SentCounter
from core.jobs import PipelineJob
from core.work import Item
from tasks.workloads import batches, make_message


def room_check_every(queue_size: int) -> int:
    """How often a producer asks the queue's length: a Redis list has no maxsize."""
    return max(1, min(100, queue_size // 4))


def send_all(
    url: str,
    queue_key: str,
    send: Callable[[Item | list[Item]], None],
    ids: Sequence[int],
    job: PipelineJob,
    sent: SentCounter,
) -> None:
    """A task queue's producer: send(message) for the items of ids, job.batch per message,
    pausing while the Redis list queue_key holds job.broker_queue_size messages."""
    redis = client(url, name=f"ladder-producer-{os.getpid()}", ride_out=True)
    bound = job.broker_queue_size
    every = room_check_every(bound)
    for count, part in enumerate(batches(ids, job.batch)):
        message = make_message(part, job.payload, job.batched, job.produce_ms)
        if count % every == 0:
            while redis.llen(queue_key) >= bound:
                time.sleep(0.005)
        send(message)
        sent.value += len(part)
