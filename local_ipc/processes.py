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
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.process import BaseProcess
from multiprocessing.queues import JoinableQueue, Queue
from multiprocessing.synchronize import Barrier, Lock
from pathlib import Path
from threading import BrokenBarrierError
from types import FrameType
from typing import Any, TypeAlias

from ladder import interrupt, procs
from ladder.errors import RunFailed
from ladder.jobs import Job, PipelineJob, SumJob, TicketsJob
from ladder.results import Consumed
from ladder.rung import Progress, Rung, no_progress
from local_ipc.loops import Channel, Count, collect, consume, produce, put_all, sum_chunks
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
# How often the parent's waits look at the children and the progress.
POLL_S = 0.1
# After a death: the signal that asks a consumer for its tally so far, and how long the
# consumers have to send it.
REPORT_NOW = signal.SIGUSR1
REPORT_S = 10.0


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


# How much of a child's last error it keeps for its parent to tell.
REASON_BYTES = 300


class Child(multiprocessing.context.ForkServerProcess):
    """A child that leaves interruptions to its parent, and says why it failed in one
    line: an error is not printed as a traceback on the parent's terminal (a broker out
    of memory would print one per child), but kept in shared memory for the parent, which
    tells of the death (how_it_ended), and the child exits with code 1."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reason = CONTEXT.RawArray("c", REASON_BYTES)

    @property
    def reason(self) -> str:
        """The child's error, in one line; empty while it has none."""
        return bytes(self._reason.value).decode(errors="replace")

    def run(self) -> None:
        quiet_child()
        try:
            super().run()
        except Exception as error:
            said = " ".join(f"{type(error).__name__}: {error}".split())
            self._reason.value = said.encode()[: REASON_BYTES - 1]
            raise SystemExit(1) from None


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


SentCounter: TypeAlias = Count


def shared_count() -> Count:
    """A number one child writes and the parent reads, in shared memory, still readable
    after the child died, even by SIGKILL. It has no lock: a lock held by a child killed
    mid-write would never be released, and the parent's next read would wait for ever."""
    count: Count = CONTEXT.RawValue("q", 0)
    return count


def sent_counter() -> SentCounter:
    """How many items one producer has sent, in memory shared with it."""
    return shared_count()


def how_it_ended(process: BaseProcess) -> str:
    """How a child exited, in a phrase: the signal that killed it, or its error."""
    code = process.exitcode
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    reason = process.reason if isinstance(process, Child) else ""
    return reason or f"exit code {code}"


def pool_workers(pool: ProcessPoolExecutor) -> list[BaseProcess]:
    """The pool's worker processes. Before Python 3.14 (terminate_workers, kill_workers)
    ProcessPoolExecutor has no public way to reach them: we read its _processes, a dict
    of pid to Process, as those two methods do; None once the pool is shut down."""
    workers: dict[int, BaseProcess] | None = getattr(pool, "_processes", None)
    return list((workers or {}).values())


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool at once: terminate its workers, then shut it down, cancelling the calls
    still queued. shutdown alone would wait for every running call to finish; with no
    worker left, the pool's own thread fails what it held and ends, and shutdown waits
    for that, so that the thread is not left cleaning up as ladder exits."""
    stop_processes(pool_workers(pool))
    pool.shutdown(wait=True, cancel_futures=True)


def pool_death(pool: ProcessPoolExecutor) -> str:
    """Which worker of a broken pool died, and how, in one phrase."""
    workers = pool_workers(pool)
    # The pool's own thread saw the death; it terminates the other workers and reaps them
    # all. Their exit codes are read once it is done: read while it reaps, one is lost.
    pool.shutdown(wait=True)
    terminated = -signal.SIGTERM
    dead = [w for w in workers if w.exitcode not in (None, 0, terminated)]
    dead = dead or [w for w in workers if w.exitcode]
    return f"a worker of the pool died ({how_it_ended(dead[0]) if dead else 'how is unknown'})"


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
        shown = 0

        def show_handled() -> None:
            nonlocal shown
            now = sum(count.value for count in handled)
            progress(now - shown)
            shown = now

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
        shown = 0

        def show_answered() -> None:
            nonlocal shown
            now = sum(count.value for count in answered)
            progress(now - shown)
            shown = now

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
