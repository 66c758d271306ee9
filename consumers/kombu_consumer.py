"""A kombu consumer: the processes rung's consumer loop, with a broker queue as channel.

    kombu SimpleQueue (a Redis list) -> get -> handle_item -> record in Redis -> ack

Set beside local_ipc/processes.py: multiprocessing.Queue.get became SimpleQueue.get,
the sentinel stayed; what is new is the acknowledgement, sent only once the item is
handled and recorded, so that an item in the hands of a consumer that dies is not lost.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from kombu.connection import Connection
from kombu.simple import SimpleQueue

from consumers.recorder import Recorder
from ladder.broker import RunKeys, transport_options
from ladder.jobs import PipelineJob
from local_ipc.loops import sum_chunks
from tasks.workloads import STOP, handle_item

POLL_S = 1.0
log = logging.getLogger(__name__)


def connect(url: str, visibility_timeout_s: float) -> Connection:
    """A kombu connection to the broker that gives back what a dead consumer held."""
    return Connection(url, transport_options=transport_options(visibility_timeout_s))


def consume(url: str, keys: RunKeys, job: PipelineJob, visibility_timeout_s: float) -> None:
    """Handle items from the run's queue until the sentinel, or until the parent is gone."""
    parent = os.getppid()
    recorder = Recorder(url, name=f"ladder-kombu-consumer-{os.getpid()}")
    with connect(url, visibility_timeout_s) as connection:
        channel = connection.SimpleQueue(keys.items, serializer="json", accept=["json"])
        while os.getppid() == parent:
            try:
                message = channel.get(timeout=POLL_S)
            except channel.Empty:
                continue
            try:
                item = message.payload
                if item is STOP:
                    message.ack()
                    return
                item_id, latency_s = handle_item(item, job.work_ms, job.work_kind)
            except Exception as error:
                # A message we cannot read (not JSON, not an item) is refused and
                # logged; the consumer keeps serving.
                log.warning("refused a message on %s: %s", keys.items, error)
                message.reject()
                continue
            recorder.record(keys, item_id, latency_s)
            message.ack()


class PayloadQueue:
    """A SimpleQueue whose get returns the payload, acknowledged: queue.Queue's API exactly.

    Good enough for the sum's chunks; the pipeline acknowledges by hand, after the work.
    """

    def __init__(self, connection: Connection, name: str) -> None:
        self.simple: SimpleQueue = connection.SimpleQueue(name, serializer="json", accept=["json"])
        self.Empty = self.simple.Empty

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        self.simple.put(obj)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        message = self.simple.get(block=block, timeout=timeout)
        message.ack()
        return message.payload


def sum_worker(url: str, keys: RunKeys, visibility_timeout_s: float) -> None:
    """The processes rung's sum loop, its two queues now on the broker."""
    with connect(url, visibility_timeout_s) as connection:
        sum_chunks(
            PayloadQueue(connection, keys.queue("chunks")),
            PayloadQueue(connection, keys.queue("totals")),
        )
