"""What the thread-pool and process-pool rungs share: the concurrent.futures idioms.

    producer threads -> executor.submit(handle_item) -> pool workers
    pool workers -> future -> add_done_callback (in the parent) -> Consumed

The executor's own call queue is the channel: a subclass only says which executor.
A semaphore bounds the items in flight, as maxsize bounds a queue (backpressure).

    executor.submit(buy) per buyer -> pool workers -> a store and lock they can all reach
    -> as_completed -> Sales

A pool whose worker died is broken (BrokenExecutor): every call still in it fails, and
so does every submit after. The run ends there and its report says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import BrokenExecutor, Executor, Future, as_completed
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Generic, TypeVar

from core.errors import RunFailed
from core.jobs import PipelineJob, SumJob, TicketsJob
from core.results import Consumed, Sales
from core.rung import PROGRESS_EVERY, Progress, Rung, no_progress
from tasks.tickets import Store, buy
from tasks.workloads import handle_item, make_item, sum_range

PoolT = TypeVar("PoolT", bound=Executor)


class PoolRung(Rung, Generic[PoolT]):
    """Base of the pool rungs: a subclass writes executor() and ticket_store(), and
    where it can do more, stop() and death()."""

    def executor(self, workers: int) -> PoolT:
        raise NotImplementedError

    def stop(self, pool: PoolT) -> None:
        """Stop the pool without waiting for it: the calls still queued are cancelled.
        A running thread cannot be stopped; ladder does not wait for it at exit."""
        pool.shutdown(wait=False, cancel_futures=True)

    def death(self, pool: PoolT) -> str:
        """Why the pool broke, in one phrase."""
        return "the pool broke"

    @contextmanager
    def running(self, workers: int) -> Iterator[PoolT]:
        """The executor, shut down with wait=True at the end of the with-block, as its
        own with-block does; but stopped at once (stop) after an error or a signal, when
        shutdown(wait=True) would first run every call still queued."""
        pool = self.executor(workers)
        try:
            yield pool
        except BaseException:
            self.stop(pool)
            raise
        pool.shutdown(wait=True)

    def ticket_store(
        self, tickets: int
    ) -> AbstractContextManager[tuple[Store, AbstractContextManager[Any]]]:
        """A store holding `tickets`, and the lock that guards it, both reachable from
        the executor's workers; they last until the with-block ends."""
        raise NotImplementedError

    def run_sum(self, job: SumJob, progress: Progress = no_progress) -> int:
        summed = 0
        with self.running(job.workers) as pool:
            futures = {
                pool.submit(sum_range, start, stop): stop - start for start, stop in job.ranges()
            }
            total = 0
            try:
                for future in as_completed(futures):
                    total += future.result()
                    summed += 1
                    progress(futures[future])
            except BrokenExecutor:
                raise RunFailed(
                    f"{self.death(pool)}: the pool is broken, with {summed:,} of "
                    f"{job.chunks:,} chunks summed"
                ) from None
        return total

    def run_pipeline(self, job: PipelineJob, progress: Progress = no_progress) -> Consumed:
        consumed = Consumed()
        lock = threading.Lock()
        in_flight = threading.BoundedSemaphore(job.queue_size)
        payload = job.payload
        submitted = [0] * job.producers
        broken = threading.Event()

        def done(future: Future[tuple[int, float]]) -> None:
            # Runs in a thread of the parent; the lock keeps the tally and progress whole.
            try:
                if future.cancelled():
                    return
                if isinstance(future.exception(), BrokenExecutor):
                    broken.set()
                elif not future.exception():
                    with lock:
                        consumed.record(*future.result())
                        if len(consumed.ids) % PROGRESS_EVERY == 0:
                            progress(PROGRESS_EVERY)
            finally:
                in_flight.release()

        with self.running(job.consumers) as pool:

            def produce(number: int, ids: range) -> None:
                for item_id in ids:
                    if job.produce_ms:
                        time.sleep(job.produce_ms / 1000)
                    in_flight.acquire()
                    try:
                        future = pool.submit(
                            handle_item, make_item(item_id, payload), job.work_ms, job.work_kind
                        )
                    except BrokenExecutor:
                        broken.set()
                        return
                    except RuntimeError:
                        return  # shut down: the run is being stopped
                    submitted[number] += 1
                    future.add_done_callback(done)

            producers = [
                threading.Thread(target=produce, args=(p, job.share(p)), name=f"producer-{p}")
                for p in range(job.producers)
            ]
            for thread in producers:
                thread.start()
            for thread in producers:
                thread.join()
            if broken.is_set():
                consumed.deaths.append(
                    f"{self.death(pool)}: the pool is broken, and every item it held or "
                    "had queued failed"
                )
                consumed.unsent = [job.share(p)[n:] for p, n in enumerate(submitted)]
        # Leaving the with-block called shutdown(wait=True): every submitted item has
        # run and its callback has fired, so the tally is complete.
        progress(len(consumed.ids) % PROGRESS_EVERY)
        return consumed

    def run_tickets(self, job: TicketsJob, progress: Progress = no_progress) -> Sales:
        sales = Sales(at_once=job.workers)
        with self.ticket_store(job.tickets) as (store, guard):
            lock = None if job.unsafe else guard
            with self.running(job.workers) as pool:
                futures = [pool.submit(buy, store, job.gap_ms, lock) for _ in range(job.buyers)]
                try:
                    for future in as_completed(futures):
                        sales.add(future.result())
                        progress(1)
                except BrokenExecutor:
                    answered = sales.sold + sales.turned_away
                    raise RunFailed(
                        f"{self.death(pool)}: the pool is broken, with {answered:,} of "
                        f"{job.buyers:,} buyers answered"
                    ) from None
            sales.left = store.read()
        return sales
