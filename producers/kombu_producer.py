"""A kombu producer: what runs in the kombu rung's producer processes.

ids -> SimpleQueue.put (JSON) -> Redis list, held back while the list is full
"""

from __future__ import annotations

import logging
import os
import time

from kombu.simple import SimpleQueue

from core.broker import OUTAGE_ERRORS, RunKeys
from core.forkserver import SentCounter
from core.jobs import PipelineJob
from core.transport import (
    RECONNECT_S,
    session,
)
from producers.sending import room_check_every
from tasks.workloads import batches, make_message

log = logging.getLogger(__name__)


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
    name = f"ladder-producer-{os.getpid()}"
    while sent.value < len(ids):
        try:
            with session(url, visibility_s, name) as connection:
                put_share(connection.SimpleQueue(keys.items, serializer="json"), ids, job, sent)
        except OUTAGE_ERRORS as error:
            # Quietly: the run reports the outage and how long it lasted, once.
            log.info("lost the broker (%s); reconnecting", error)
            time.sleep(RECONNECT_S)


def put_share(channel: SimpleQueue, ids: range, job: PipelineJob, sent: SentCounter) -> None:
    """Put the items of ids not sent yet, job.batch of them per message."""
    payload, bound = job.payload, job.broker_queue_size
    every = room_check_every(bound)
    for count, part in enumerate(batches(ids[sent.value :], job.batch)):
        message = make_message(part, payload, job.batched, job.produce_ms)
        if count % every == 0:
            while qsize(channel) >= bound:
                time.sleep(0.005)
        channel.put(message)
        sent.value += len(part)
