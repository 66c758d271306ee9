"""The processes rung: multiprocessing.Process workers around a bounded multiprocessing.Queue.

    producer processes -> multiprocessing.Queue(maxsize) -> consumer processes
    consumer processes -> results queue (one Consumed each, at the sentinel) -> parent
    buyer processes -> a JSON file, guarded by a multiprocessing.Lock -> Sales each -> parent

The loops are those of the threads rung; what changes is isolation: every item is
pickled through a pipe, and a child's tally must be sent back, since the parent cannot
read a child's memory. With end="join" the channel is a JoinableQueue and the parent
waits on join() instead of counting.

Unlike a thread, a child can die mid-run (SIGKILL, the OOM killer): that is the
exception path. Each wait of the parent is also a Watch on the children, which raises
ChildDied at the first death; the run then stops and says what it came to. It cannot go
on: a multiprocessing queue has no acknowledgement to resend by, and a child killed
holding one of its locks (a producer's feeder thread writing, a consumer reading) leaves
the queue unusable, for no one else can ever take that lock again.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import multiprocessing.forkserver
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from multiprocessing.queues import JoinableQueue, Queue
from multiprocessing.synchronize import Barrier, Lock
from pathlib import Path
from threading import BrokenBarrierError
from types import FrameType
from typing import Any

from core import interrupt, procs
from core.errors import RunFailed
from core.forkserver import (
    CONTEXT,
    Child,
    Count,
    how_it_ended,
    sent_counter,
    shared_count,
    start_fork_server,
    stop_processes,
)
from core.jobs import Job, PipelineJob, SumJob, TicketsJob
from core.results import Consumed, Sales
from core.rung import Progress, Rung, Shown, no_progress
from local_ipc.loops import Channel, collect, consume, produce, put_all, sum_chunks
from tasks.tickets import FileStore, buy
from tasks.workloads import STOP

# How long a buyer waits for the others to start before it buys anyway.
START_TIMEOUT_S = 30.0
# How often the parent's waits look at the children and the progress.
POLL_S = 0.1
# After a death: the signal that asks a consumer for its tally so far, and how long the
# consumers have to send it.
REPORT_NOW = signal.SIGUSR1
REPORT_S = 10.0


def consumer_main(channel: Channel, results: Channel, job: PipelineJob, handled: Count) -> None:
    def progress(n: int) -> None:
        handled.value += n

    consumed = Consumed()
    # After a death the stream never ends (see Watch): the parent asks instead, and the
    # consumer stops wherever it is, in a get or in the middle of an item.
    signal.signal(REPORT_NOW, report_now)
    try:
        consume(channel, job, progress, consumed)
        signal.signal(REPORT_NOW, signal.SIG_IGN)
    except ReportNow:
        pass
    results.put(consumed)


def buyer_main(
    path: Path,
    ids: range,
    gap_ms: float,
    lock: Lock | None,
    results: Channel,
    answered: Count,
    start: Barrier,
) -> None:
    # Every buyer starts once all are up: the first child started would otherwise buy
    # alone while the others start, and never race.
    with contextlib.suppress(BrokenBarrierError):
        start.wait(START_TIMEOUT_S)
    store = FileStore(path)
    sales = Sales()
    for _ in ids:
        sales.add(buy(store, gap_ms, lock))
        answered.value += 1
    results.put(sales)


class ProcessesRung(Rung):
    name = "processes"

    def prepare(self, job: Job) -> None:
        start_fork_server()

    def run_sum(self, job: SumJob, progress: Progress = no_progress) -> int:
        chunks = CONTEXT.Queue()
        totals = CONTEXT.Queue()
        workers = [
            Child(target=sum_chunks, args=(chunks, totals), name=f"sum-{w}")
            for w in range(job.workers)
        ]
        watch = Watch(workers)
        summed, ended = 0, False
        try:
            for worker in workers:
                worker.start()
            put_all(chunks, [*job.ranges(), *[STOP] * job.workers])
            total = 0
            for numbers, chunk_total in collect(totals, job.chunks, workers, watch.check):
                total += chunk_total
                summed += 1
                progress(numbers)
            # Join only after every result is read: a child that has put data on a
            # queue does not exit until that data has been taken from the pipe.
            watch.join(workers)
            ended = True
            return total
        except ChildDied as death:
            raise RunFailed(
                f"{death}: the run stopped there, with {summed:,} of {job.chunks:,} chunks summed"
            ) from None
        finally:
            stop_processes(workers)
            let_go(chunks, ended)

    def run_pipeline(self, job: PipelineJob, progress: Progress = no_progress) -> Consumed:
        channel = (
            CONTEXT.JoinableQueue(job.queue_size)
            if job.end == "join"
            else CONTEXT.Queue(job.queue_size)
        )
        results = CONTEXT.Queue()
        sent = [sent_counter() for _ in range(job.producers)]
        handled = [shared_count() for _ in range(job.consumers)]
        producers = [
            Child(target=produce, args=(channel, job.share(p), job, sent[p]), name=f"producer-{p}")
            for p in range(job.producers)
        ]
        consumers = [
            Child(
                target=consumer_main,
                args=(channel, results, job, handled[c]),
                name=f"consumer-{c}",
            )
            for c in range(job.consumers)
        ]
        shown = Shown(progress)

        def show_handled() -> None:
            shown.to(sum(count.value for count in handled))

        watch = Watch(producers + consumers, show_handled)
        tallies: list[Consumed] = []
        ended = False
        try:
            for process in producers + consumers:
                process.start()
            watch.join(producers)
            if job.end == "join":
                watch.join_queue(channel)  # type: ignore[arg-type]
            # One sentinel per consumer, only now that every producer has finished.
            for _ in consumers:
                watch.put(channel, STOP)
            tallies.extend(collect(results, job.consumers, consumers, watch.check))
            watch.join(consumers)
            show_handled()
            ended = True
        except ChildDied:
            dead = [c for c in producers + consumers if c.exitcode not in (None, 0)]
            # What a producer put but had not yet written to the pipe is lost with it.
            stop_processes(producers)
            ask_for_tallies(consumers, results, tallies)
            return after_a_death(job, dead, producers, consumers, sent, handled, tallies)
        finally:
            stop_processes(producers + consumers)
            let_go(channel, ended)
        consumed = Consumed()
        for tally in tallies:
            consumed.extend(tally)
        return consumed

    def run_tickets(self, job: TicketsJob, progress: Progress = no_progress) -> Sales:
        # Processes share no memory: the store is a file all of them open, and the lock
        # one the operating system keeps, made here and handed to each child at start.
        lock = None if job.unsafe else CONTEXT.Lock()
        results = CONTEXT.Queue()
        answered = [shared_count() for _ in range(job.workers)]
        start = CONTEXT.Barrier(job.workers)
        shown = Shown(progress)

        def show_answered() -> None:
            shown.to(sum(count.value for count in answered))

        with procs.scratch("ladder-tickets-") as folder:
            store = FileStore.create(Path(folder) / "tickets.json", job.tickets)
            buyers: list[BaseProcess] = [
                Child(
                    target=buyer_main,
                    args=(store.path, job.share(w), job.gap_ms, lock, results, answered[w], start),
                    name=f"buyer-{w}",
                )
                for w in range(job.workers)
            ]
            watch = Watch(buyers, show_answered)
            try:
                for process in buyers:
                    process.start()
                sales = Sales(at_once=job.workers)
                for tally in collect(results, job.workers, buyers, watch.check):
                    sales.extend(tally)
                watch.join(buyers)
                show_answered()
                sales.left = store.read()
                return sales
            except ChildDied as death:
                number = buyers.index(death.child)
                raise RunFailed(
                    f"{death} after answering {answered[number].value:,} of its "
                    f"{len(job.share(number)):,} buyers: the run stopped there, with "
                    f"{sum(count.value for count in answered):,} of {job.buyers:,} answered "
                    "(a buyer killed holding the lock leaves the others waiting for it)"
                ) from None
            finally:
                stop_processes(buyers)


# The exception path: a child that died mid-run.


class ChildDied(Exception):
    """A child exited with an error or a signal before its part of the run was done."""

    def __init__(self, child: BaseProcess) -> None:
        super().__init__(f"{child.name} died ({how_it_ended(child)})")
        self.child = child


class Watch:
    """The parent's waits on its children, each ended early by a death (ChildDied) or a
    signal, and showing progress (tick) as it waits.

    Process.join, Queue.put and JoinableQueue.join would wait for ever on a child that
    was killed: for the task_done it never sent, or for a queue's lock it held.
    """

    def __init__(
        self, children: Sequence[BaseProcess], tick: Callable[[], None] = lambda: None
    ) -> None:
        self.children = children
        self.tick = tick

    def check(self, _: int = 0) -> None:
        """Raise ChildDied if a child died, KeyboardInterrupt if asked to stop; a Progress,
        so that collect() calls it as it waits."""
        interrupt.check()
        self.tick()
        for child in self.children:
            if child.exitcode not in (None, 0):
                raise ChildDied(child)

    def join(self, processes: Sequence[BaseProcess]) -> None:
        """Process.join() for each of processes."""
        while any(p.exitcode is None for p in processes):
            running = [c.sentinel for c in self.children if c.exitcode is None]
            multiprocessing.connection.wait(running, POLL_S)  # wakes at any exit
            self.check()
        self.check()

    def put(self, channel: Channel, obj: Any) -> None:
        """channel.put(obj), waiting while the channel is full."""
        while True:
            try:
                return channel.put(obj, timeout=POLL_S)
            except queue.Full:
                self.check()

    def join_queue(self, channel: JoinableQueue[Any]) -> None:
        """channel.join(). It takes no timeout, so it waits in a thread of its own, left
        waiting if a consumer dies (its item is never task_done)."""
        joining = threading.Thread(target=channel.join, name="join", daemon=True)
        joining.start()
        while joining.is_alive():
            joining.join(POLL_S)
            self.check()


class ReportNow(Exception):
    """In a consumer: the parent asks for its tally so far (REPORT_NOW), the run is over."""


def report_now(signum: int, frame: FrameType | None) -> None:
    raise ReportNow


def ask_for_tallies(
    consumers: Sequence[BaseProcess], results: Channel, tallies: list[Consumed]
) -> None:
    """Ask each consumer still running for its tally so far (REPORT_NOW), and add to
    tallies what comes within REPORT_S."""
    for consumer in consumers:
        if consumer.is_alive() and consumer.pid is not None:
            with contextlib.suppress(ProcessLookupError):  # it has just exited
                os.kill(consumer.pid, REPORT_NOW)
    deadline = time.monotonic() + REPORT_S
    while time.monotonic() < deadline:
        # Checked before the get: what a child put before exiting is in the pipe.
        all_exited = all(c.exitcode is not None for c in consumers)
        try:
            tallies.append(results.get(timeout=POLL_S))
        except queue.Empty:
            if all_exited:
                return
            interrupt.check()


def after_a_death(
    job: PipelineJob,
    dead: Sequence[BaseProcess],
    producers: Sequence[BaseProcess],
    consumers: Sequence[BaseProcess],
    sent: Sequence[Count],
    handled: Sequence[Count],
    tallies: Sequence[Consumed],
) -> Consumed:
    """What a pipeline that stopped at a death came to: who died, what the producers had
    sent, what the consumers reported."""
    consumed = Consumed()
    for tally in tallies:
        consumed.extend(tally)
    for number, (producer, count) in enumerate(zip(producers, sent, strict=True)):
        consumed.unsent.append(job.share(number)[count.value :])
        if producer in dead:
            consumed.deaths.append(
                f"{producer.name} died ({how_it_ended(producer)}) after sending "
                f"{count.value:,} of its {len(job.share(number)):,} items"
            )
    unreported = len(consumers) - len(tallies)
    for consumer, count in zip(consumers, handled, strict=True):
        if consumer in dead:
            unreported -= 1
            least = f" (at least {count.value:,} items)" if count.value else ""
            consumed.deaths.append(
                f"{consumer.name} died ({how_it_ended(consumer)}) before reporting what it "
                f"had handled{least}: their ids cannot be known, so they count as lost"
            )
    if unreported > 0:
        consumed.deaths.append(
            f"{unreported} consumer{'s' if unreported > 1 else ''} did not report in time: "
            "what they handled counts as lost"
        )
    consumed.deaths.append(
        "the run stopped there, as a child killed holding one of the queue's locks leaves "
        "it unusable: what was still queued counts as lost"
    )
    return consumed


def let_go(channel: Queue[Any], ended: bool) -> None:
    """This process's hold on channel, after a run that ended (True) or stopped.

    A process's puts go through a feeder thread of its own, which holds the queue's locks
    until it ends. After a normal run every item has been taken: the feeder is waited
    for, so that it lets go of the locks now, while the resource tracker still listens
    (a feeder ending as Python shuts down would free them too late to say so, and the
    tracker would warn of a leaked semaphore). After a stop nothing is waited for: a
    feeder that waits for a lock a killed child held, or for room in a pipe no one reads
    any more, would hold the exit for ever; what it held is dropped.
    """
    if ended:
        channel.close()
        channel.join_thread()
    else:
        channel.cancel_join_thread()
