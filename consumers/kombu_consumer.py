"""A kombu consumer: the processes rung's consumer loop, with a broker queue as channel.

    kombu SimpleQueue (a Redis list) -> get -> handle_item -> record in Redis -> ack

Set beside local_ipc/processes.py: multiprocessing.Queue.get became SimpleQueue.get,
the sentinel stayed; what is new is the acknowledgement, sent only once the item is
handled and recorded, so that an item in the hands of a consumer that dies is not lost.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from kombu.connection import Connection
from kombu.simple import SimpleQueue

from core.broker import OUTAGE_ERRORS, RunKeys
from core.jobs import PipelineJob
from core.recorder import Recorder
from core.transport import RECONNECT_S, connect, session
from local_ipc.loops import sum_chunks
from tasks.workloads import STOP, check_chunk, check_message, handle_batch

POLL_S = 1.0
RECORD_EVERY = 50  # messages whose items are recorded in one round trip, at most
HELD_BYTES = 16 * 1024 * 1024  # and no more than this many bytes of them
# How long a consumer holding messages waits for another: a waiting message arrives in
# a round trip (well under a millisecond here); none by then means the queue is empty.
HELD_WAIT_S = 0.002
log = logging.getLogger(__name__)


def consume(url: str, keys: RunKeys, job: PipelineJob, visibility_timeout_s: float) -> None:
    """Handle items from the run's queue until the sentinel, or until the parent is gone:
    each checked (it comes from outside), handled, recorded, then acknowledged.

    The records of up to RECORD_EVERY messages go to Redis in one round trip, before
    their acknowledgements: per message, the consumer then makes about as many round
    trips as a bare kombu get and ack (take, file as unacknowledged, acknowledge)."""
    name = f"ladder-kombu-consumer-{os.getpid()}"
    recorder = Recorder(url, name=name)
    handled: list[tuple[int, float]] = []

    def handle(payload: Any) -> None:
        handled.extend(handle_batch(check_message(payload), job.work_ms, job.work_kind))

    def record() -> None:
        recorder.record_all(keys, handled)
        handled.clear()

    # Held messages stay in memory here, and in Redis's unacknowledged table, until
    # acknowledged: fewer of them when they are big.
    group = min(RECORD_EVERY, job.messages_within(HELD_BYTES))
    consume_queue(url, keys.items, visibility_timeout_s, name, handle, record, group)


def consume_queue(
    url: str,
    queue: str,
    visibility_timeout_s: float,
    name: str,
    handle: Callable[[Any], None],
    settle: Callable[[], None] = lambda: None,
    group: int = 1,
    on_connect: Callable[[], object] = lambda: None,
) -> None:
    """Give each payload of queue to handle() until the sentinel, or until the parent is
    gone; settle() runs before the acknowledgements of each group of messages handled
    (serve), and on_connect() once connected, before the first message.

    A broker outage (Redis restarting, say) drops the connection: the consumer makes a
    new one and goes on. The message it held then is acknowledged on the old connection
    or not at all; if not, it comes back after the visibility timeout and is handled
    again (the pipeline counts it once, a ticket buyer keeps its first answer).
    """
    parent = os.getppid()
    while os.getppid() == parent:
        try:
            with session(url, visibility_timeout_s, name) as connection:
                channel = connection.SimpleQueue(queue, serializer="json", accept=["json"])
                on_connect()
                if serve(channel, parent, handle, settle, group):
                    return
        except OUTAGE_ERRORS as error:
            # Quietly: the run reports the outage and how long it lasted, once.
            log.info("lost the broker (%s); reconnecting", error)
            time.sleep(RECONNECT_S)


def serve(
    channel: SimpleQueue,
    parent: int,
    handle: Callable[[Any], None],
    settle: Callable[[], None] = lambda: None,
    group: int = 1,
) -> bool:
    """Handle messages until the sentinel (True) or until the parent is gone (False).

    Messages are acknowledged once handled, `group` at a time at most, each group after
    settle() (the pipeline records its items there): while some are held, the next
    message is waited for HELD_WAIT_S only, so that none is held while the queue is
    empty. A consumer that dies holding some leaves them unacknowledged, to come back.
    One that cannot be read (not JSON, not allowed: pickle) or handled is refused and
    logged, and the consumer keeps serving; a broker outage goes up, to reconnect.
    """
    held: list[Any] = []

    def refuse(message: Any, error: Exception) -> None:
        log.warning("refused a message on %s: %s", channel.queue.name, error)
        message.reject()

    def acknowledge() -> None:
        if held:
            settle()
            for message in held:
                message.ack()
            held.clear()

    # Undecodable messages are refused here, rather than raised from get().
    channel.consumer.on_decode_error = refuse
    while os.getppid() == parent:
        try:
            message = channel.get(timeout=HELD_WAIT_S if held else POLL_S)
        except channel.Empty:
            acknowledge()
            continue
        try:
            payload = message.payload
            if payload is STOP:
                acknowledge()
                message.ack()
                return True
            handle(payload)
        except OUTAGE_ERRORS:
            raise
        except Exception as error:
            refuse(message, error)
            continue
        held.append(message)
        if len(held) >= group:
            acknowledge()
    return False


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


class ChunkQueue(PayloadQueue):
    """The sum's queue of chunks, whose get gives only the sentinel or a (start, stop)
    that check_chunk passes: any other message is refused, in one log line, and the
    next one taken."""

    def __init__(self, connection: Connection, name: str) -> None:
        super().__init__(connection, name)
        self.simple.consumer.on_decode_error = self.refuse

    def refuse(self, message: Any, error: Exception) -> None:
        log.warning("refused a message on %s: %s", self.simple.queue.name, error)
        message.reject()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        while True:
            message = self.simple.get(block=block, timeout=timeout)
            message.ack()
            try:
                chunk = message.payload
                return chunk if chunk is STOP else check_chunk(chunk)
            except ValueError as error:
                log.warning("refused a message on %s: %s", self.simple.queue.name, error)


def sum_worker(url: str, keys: RunKeys, visibility_timeout_s: float) -> None:
    """The processes rung's sum loop, its two queues now on the broker."""
    with connect(url, visibility_timeout_s) as connection:
        sum_chunks(
            ChunkQueue(connection, keys.queue("chunks")),
            PayloadQueue(connection, keys.queue("totals")),
        )
