"""A kombu producer: what runs in the kombu rung's producer processes.

ids -> SimpleQueue.put (JSON) -> Redis list, held back while the list is full
"""

from __future__ import annotations

import os
from functools import partial

from kombu.simple import SimpleQueue

from core.broker import RunKeys
from core.forkserver import SentCounter
from core.jobs import PipelineJob
from core.transport import session
from producers.sending import send_share


def qsize(channel: SimpleQueue) -> int:
    """SimpleQueue.qsize(), minus its passive declare: to kombu an empty Redis queue does
    not exist, so the passive form fails exactly when the queue has room."""
    return int(channel.queue.queue_declare().message_count)


def produce(
    url: str, keys: RunKeys, ids: range, job: PipelineJob, visibility_s: float, sent: SentCounter
) -> None:
    """Put one item per id, pausing while the queue holds job.broker_queue_size messages
    (backpressure).

    A broker outage drops the connection: the producer makes a new one and goes on from
    the item it was sending (which may then arrive twice: a redelivery, counted once).
    """
    with session(url, visibility_s, f"ladder-producer-{os.getpid()}") as link:
        while sent.value < len(ids):
            with link.riding_out():
                channel = link.connection.SimpleQueue(keys.items, serializer="json")
                send_share(channel.put, partial(qsize, channel), ids, job, sent)
