"""What every broker producer does: send a share of the items, a batch per message, and
hold back while the broker's queue is full (a Redis list has no maxsize)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from functools import partial

from core.broker import client
from core.forkserver import SentCounter
from core.jobs import PipelineJob
from core.work import Item
from tasks.workloads import batches, make_message

# How long a producer held back waits before it asks the queue's length again.
ROOM_POLL_S = 0.005


def room_check_every(queue_size: int) -> int:
    """How often a producer asks the queue's length: a Redis list has no maxsize."""
    return max(1, min(100, queue_size // 4))


def send_share(
    send: Callable[[Item | list[Item]], object],
    length: Callable[[], int],
    ids: Sequence[int],
    job: PipelineJob,
    sent: SentCounter,
) -> None:
    """send(message) for the items of ids not sent yet (sent.value of them are), job.batch
    per message, pausing while length(), the queue's, is job.broker_queue_size or more."""
    bound = job.broker_queue_size
    every = room_check_every(bound)
    for count, part in enumerate(batches(ids[sent.value :], job.batch)):
        message = make_message(part, job.payload, job.batched, job.produce_ms)
        if count % every == 0:
            while length() >= bound:
                time.sleep(ROOM_POLL_S)
        send(message)
        sent.value += len(part)


def send_all(
    url: str,
    queue_key: str,
    send: Callable[[Item | list[Item]], None],
    ids: Sequence[int],
    job: PipelineJob,
    sent: SentCounter,
) -> None:
    """A task queue's producer: send_share, its queue the Redis list queue_key."""
    redis = client(url, name=f"ladder-producer-{os.getpid()}", ride_out=True)
    send_share(send, partial(redis.llen, queue_key), ids, job, sent)
