"""The producer and consumer loops that threads, processes and the kombu rung share.

queue.Queue and multiprocessing.Queue have the same put/get, so the very same loop
runs in a thread or in a child process: only the channel handed to it differs. A broker
queue is one more channel (consumers/kombu_queue.py): its get() takes a message and its
task_done() acknowledges it, as JoinableQueue's tells join().
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterable, Sequence
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from core import interrupt
from core.forkserver import Count
from core.jobs import PipelineJob
from core.results import Consumed
from core.rung import PROGRESS_EVERY, Progress
from tasks.workloads import (
    STOP,
    batches,
    handle_batch,
    handle_item,
    make_item,
    make_message,
    sum_range,
)


class Channel(Protocol):
    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None: ...
    def get(self, block: bool = True, timeout: float | None = None) -> Any: ...


class Source(Protocol):
    """What a consumer loop takes from: get() waits for the next message or STOP."""

    def get(self) -> Any: ...


def produce(channel: Channel, ids: range, job: PipelineJob, sent: Count | None = None) -> None:
    """Put one item per id, or lists of job.batch items; put blocks while the bounded
    channel is full (backpressure). `sent`, when given, counts the items put."""
    payload = job.payload
    if job.batched:
        for part in batches(ids, job.batch):
            channel.put(make_message(part, payload, True, job.produce_ms))
            if sent is not None:
                sent.value += len(part)
        return
    for item_id in ids:
        if job.produce_ms:
            time.sleep(job.produce_ms / 1000)
        channel.put(make_item(item_id, payload))
        if sent is not None:
            sent.value += 1


def consume(
    channel: Source, job: PipelineJob, progress: Progress, consumed: Consumed | None = None
) -> Consumed:
    """Handle items (or batches of them) until the sentinel; return what this consumer
    handled: `consumed`, when given, filled in place, so that what was handled is kept
    even if an exception ends the loop.

    A joinable channel (queue.Queue, multiprocessing.JoinableQueue, a broker queue) is
    told task_done after every get, the sentinel's included, once the item is handled
    and in `consumed`: join() then returns once all is handled, and a broker message
    is acknowledged only once its item is recorded.
    """
    task_done = getattr(channel, "task_done", None)
    consumed = Consumed() if consumed is None else consumed
    # Counted here, not from `consumed`: a broker consumer empties it as it records.
    unshown = 0
    while (message := channel.get()) is not STOP:
        if isinstance(message, list):
            handled = handle_batch(message, job.work_ms, job.work_kind)
            consumed.record_all(handled)
            unshown += len(handled)
        else:
            consumed.record(*handle_item(message, job.work_ms, job.work_kind))
            unshown += 1
        if task_done:
            task_done()
        if unshown >= PROGRESS_EVERY:
            progress(unshown)
            unshown = 0
    if task_done:
        task_done()
    progress(unshown)
    return consumed


def sum_chunks(chunks: Source, totals: Channel) -> None:
    """Sum (start, stop) ranges until the sentinel, putting (numbers, total) for each;
    a joinable chunks channel is told task_done once the total is put."""
    task_done = getattr(chunks, "task_done", None)
    while (chunk := chunks.get()) is not STOP:
        start, stop = chunk
        totals.put((stop - start, sum_range(start, stop)))
        if task_done:
            task_done()
    if task_done:
        task_done()


def put_all(channel: Channel, objs: Sequence[Any]) -> None:
    for obj in objs:
        channel.put(obj)


def collect(
    results: Channel,
    count: int,
    senders: Sequence[BaseProcess],
    tick: Progress,
    poll_s: float = 0.1,
) -> Iterable[Any]:
    """Yield up to `count` results, stopping once every sender has exited.

    A child that died without reporting leaves its share missing, which the
    verification then counts (lost items, a wrong sum) instead of waiting forever.
    """
    received = 0
    while received < count:
        try:
            yield results.get(timeout=poll_s)
            received += 1
        except queue.Empty:
            interrupt.check()
            tick(0)
            if not any(p.is_alive() for p in senders):
                # What a child put just before exiting is already in the pipe.
                try:
                    while received < count:
                        yield results.get(timeout=poll_s)
                        received += 1
                except queue.Empty:
                    return
