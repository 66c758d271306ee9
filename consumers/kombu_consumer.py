"""A kombu consumer: the processes rung's consumer loops, with a broker queue as channel.

    kombu SimpleQueue (a Redis list) -> get -> handle_item -> record in Redis -> ack

Set beside local_ipc/processes.py: the loops are the same (loops.consume, loops.sum_chunks),
multiprocessing.Queue became a KombuQueue, the sentinel stayed. What is new is the
acknowledgement, task_done(), sent only once the item is handled and recorded, so that an
item in the hands of a consumer that dies is not lost; and the tally, which goes to Redis
as it grows instead of to the parent at the end.
"""

from __future__ import annotations

import os

from consumers.kombu_queue import KombuQueue
from core.broker import RunKeys
from core.jobs import PipelineJob
from core.recorder import Recorder
from core.results import Consumed
from core.rung import no_progress
from core.transport import PayloadQueue, session
from local_ipc import loops
from tasks.workloads import check_chunk, check_message

RECORD_EVERY = 50  # messages whose items are recorded in one round trip, at most
HELD_BYTES = 16 * 1024 * 1024  # and no more than this many bytes of them


def consume(url: str, keys: RunKeys, job: PipelineJob, visibility_timeout_s: float) -> None:
    """Handle items from the run's queue until the sentinel, or until the parent is gone:
    each checked (it comes from outside), handled, recorded, then acknowledged.

    The records of up to RECORD_EVERY messages go to Redis in one round trip, before
    their acknowledgements: per message, the consumer then makes about as many round
    trips as a bare kombu get and ack (take, file as unacknowledged, acknowledge)."""
    name = f"ladder-kombu-consumer-{os.getpid()}"
    recorder = Recorder(url, name=name)
    unrecorded = Consumed()

    def record() -> None:
        recorder.record_all(keys, list(zip(unrecorded.ids, unrecorded.latencies_s, strict=True)))
        unrecorded.ids.clear()
        unrecorded.latencies_s.clear()

    # Held messages stay in memory here, and in Redis's unacknowledged table, until
    # acknowledged: fewer of them when they are big.
    group = min(RECORD_EVERY, job.messages_within(HELD_BYTES))
    with session(url, visibility_timeout_s, name) as link:
        channel = KombuQueue(link, keys.items, check_message, record, group)
        loops.consume(channel, job, no_progress, unrecorded)


def sum_worker(url: str, keys: RunKeys, visibility_timeout_s: float) -> None:
    """The processes rung's sum loop, its two queues on the broker: a chunk is
    acknowledged once its total is put."""
    with session(url, visibility_timeout_s, f"ladder-kombu-sum-{os.getpid()}") as link:
        chunks = KombuQueue(link, keys.queue("chunks"), check_chunk)
        loops.sum_chunks(chunks, PayloadQueue(link.connection, keys.queue("totals")))
