"""The processes rung: multiprocessing.Process workers around a bounded multiprocessing.Queue.

    producer processes -> multiprocessing.Queue(maxsize) -> consumer processes
    consumer processes -> results queue (one Consumed each, at the sentinel) -> parent
    buyer processes -> a JSON file, guarded by a multiprocessing.Lock -> Sales each -> parent

The loops are those of the threads rung; what changes is isolation: every item is
pickled through a pipe, and a child's tally must be sent back, since the parent cannot
read a child's memory. With end="join" the channel is a JoinableQueue and the parent
waits on join() instead of counting.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import signal
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier, Lock
from pathlib import Path
from threading import BrokenBarrierError
from typing import Any

from ladder import procs
from ladder.jobs import Job, PipelineJob, SumJob, TicketsJob
from ladder.results import Consumed
from ladder.rung import Progress, Rung, no_progress
from local_ipc.loops import Channel, collect, consume, produce, put_all, sum_chunks
from tasks.tickets import FileStore, Sales, buy
from tasks.workloads import STOP

# Children start from a fork server: a clean process, started once, that forks a
# child per request. A plain fork would copy whatever the parent holds, among it a
# broker client's sockets, which kombu's after-fork hooks then try to close from the
# child, hanging it. The server imports, once, the main script and every module a
# child may need (the registry imports all rungs; the rest is what `ladder` imports),
# so that a child starts in milliseconds instead of re-importing them all.
CONTEXT = multiprocessing.get_context("forkserver")
CONTEXT.set_forkserver_preload(
    [
        "__main__",
        "ladder.registry",
        "ladder.bench",
        "ladder.demo",
        "ladder.findings",
        "ladder.report",
        "rich.progress",
    ]
)


_fork_server_ready = False
# How long a buyer waits for the others to start before it buys anyway.
START_TIMEOUT_S = 30.0


def start_fork_server() -> None:
    """Start the fork server and wait for its imports, so they are not timed as a run's."""
    global _fork_server_ready
    if not _fork_server_ready:
        warm_up = Child(target=time.sleep, args=(0,), name="warm-up")
        warm_up.start()
        warm_up.join()
        _fork_server_ready = True


def quiet_child() -> None:
    """In a child: Ctrl-C and SIGTERM are the parent's to handle; it stops its children.

    A child the parent could not stop (the parent was killed with SIGKILL, say) still
    ends with it. The child's own parent is the fork server, which lives as long as
    some process holds its "alive" pipe: the parent, and by default every child too, so
    that a child could start children of its own. Ours start none, so each lets go of
    the pipe: the fork server then exits with the parent, and the child, told to by
    Linux, with the fork server.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    procs.die_with_parent()
    # The pipe's write end, as the fork server handed it to this child (CPython keeps it
    # here; there is no public way to let go of it).
    server: Any = multiprocessing.forkserver._forkserver
    if server._forkserver_alive_fd is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor whose workers are forked and leave interruptions to us."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=CONTEXT, initializer=quiet_child)


class Child(multiprocessing.context.ForkServerProcess):
    """A child that leaves interruptions to its parent."""

    def run(self) -> None:
        quiet_child()
        super().run()


def consumer_main(
    channel: Channel, results: Channel, job: PipelineJob, handled: Synchronized[int]
) -> None:
    def progress(n: int) -> None:
        with handled.get_lock():
            handled.value += n

    results.put(consume(channel, job, progress))


def buyer_main(
    path: Path,
    ids: range,
    gap_ms: float,
    lock: Lock | None,
    results: Channel,
    answered: Synchronized[int],
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
        with answered.get_lock():
            answered.value += 1
    results.put(sales)


def stop_processes(processes: Iterable[BaseProcess], timeout_s: float = 5.0) -> None:
    """Terminate what is still running, then kill what ignores it: no orphans."""
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.terminate()
    deadline = time.monotonic() + timeout_s
    for process in alive:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in alive:
        if process.is_alive():
            process.kill()
            process.join()


class ProcessesRung(Rung):
    name = "processes"
    batches = True
    teaches = "isolation: one interpreter per process, items pickled through pipes, sentinels, join"

    def prepare(self, job: Job) -> None:
        start_fork_server()

    def run_sum(self, job: SumJob, progress: Progress = no_progress) -> int:
        chunks = CONTEXT.Queue()
        totals = CONTEXT.Queue()
        workers = [
            Child(target=sum_chunks, args=(chunks, totals), name=f"sum-{w}")
            for w in range(job.workers)
        ]
        try:
            for worker in workers:
                worker.start()
            put_all(chunks, [*job.ranges(), *[STOP] * job.workers])
            total = 0
            for numbers, chunk_total in collect(totals, job.chunks, workers, no_progress):
                total += chunk_total
                progress(numbers)
            # Join only after every result is read: a child that has put data on a
            # queue does not exit until that data has been taken from the pipe.
            for worker in workers:
                worker.join()
            return total
        finally:
            stop_processes(workers)

    def run_pipeline(self, job: PipelineJob, progress: Progress = no_progress) -> Consumed:
        channel = (
            CONTEXT.JoinableQueue(job.queue_size)
            if job.end == "join"
            else CONTEXT.Queue(job.queue_size)
        )
        results = CONTEXT.Queue()
        handled = CONTEXT.Value("q", 0)
        producers = [
            Child(target=produce, args=(channel, job.share(p), job), name=f"producer-{p}")
            for p in range(job.producers)
        ]
        consumers = [
            Child(target=consumer_main, args=(channel, results, job, handled), name=f"consumer-{c}")
            for c in range(job.consumers)
        ]
        try:
            for process in producers + consumers:
                process.start()
            for process in producers:
                process.join()
            if job.end == "join":
                channel.join()  # type: ignore[attr-defined]
            put_all(channel, [STOP] * job.consumers)
            consumed = Consumed()
            shown = 0

            def show_handled(_: int) -> None:
                nonlocal shown
                progress(handled.value - shown)
                shown = handled.value

            for tally in collect(results, job.consumers, consumers, show_handled):
                consumed.extend(tally)
            show_handled(0)
            for process in consumers:
                process.join()
            return consumed
        finally:
            stop_processes(producers + consumers)

    def run_tickets(self, job: TicketsJob, progress: Progress = no_progress) -> Sales:
        # Processes share no memory: the store is a file all of them open, and the lock
        # one the operating system keeps, made here and handed to each child at start.
        lock = None if job.unsafe else CONTEXT.Lock()
        results = CONTEXT.Queue()
        answered = CONTEXT.Value("q", 0)
        start = CONTEXT.Barrier(job.workers)
        shown = 0

        def show_answered(_: int) -> None:
            nonlocal shown
            progress(answered.value - shown)
            shown = answered.value

        with tempfile.TemporaryDirectory(prefix="ladder-tickets-") as folder:
            store = FileStore.create(Path(folder) / "tickets.json", job.tickets)
            buyers = [
                Child(
                    target=buyer_main,
                    args=(store.path, job.share(w), job.gap_ms, lock, results, answered, start),
                    name=f"buyer-{w}",
                )
                for w in range(job.workers)
            ]
            try:
                for process in buyers:
                    process.start()
                sales = Sales(at_once=job.workers)
                for tally in collect(results, job.workers, buyers, show_answered):
                    sales.extend(tally)
                show_answered(0)
                for process in buyers:
                    process.join()
                sales.left = store.read()
                return sales
            finally:
                stop_processes(buyers)
