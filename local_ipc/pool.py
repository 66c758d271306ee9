"""What the thread-pool and process-pool rungs share: the concurrent.futures idioms.

    producer threads -> executor.submit(handle_item) -> pool workers
    pool workers -> future -> add_done_callback (in the parent) -> Consumed

The executor's own call queue is the channel: a subclass only says which executor.
A semaphore bounds the items in flight, as maxsize bounds a queue (backpressure).

    executor.submit(buy) per buyer -> pool workers -> a store and lock they can all reach
    -> as_completed -> Sales
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Executor, Future, as_completed
from contextlib import AbstractContextManager
from typing import Any

from ladder.jobs import PipelineJob, SumJob, TicketsJob
from ladder.results import Consumed
from ladder.rung import PROGRESS_EVERY, Progress, Rung, no_progress
from tasks.tickets import Sales, Store, buy
from tasks.workloads import handle_item, make_item, sum_range


class PoolRung(Rung):
    """Base of the pool rungs: a subclass writes executor() and ticket_store()."""

    def executor(self, workers: int) -> Executor:
        raise NotImplementedError

    def ticket_store(
        self, tickets: int
    ) -> AbstractContextManager[tuple[Store, AbstractContextManager[Any]]]:
        """A store holding `tickets`, and the lock that guards it, both reachable from
        the executor's workers; they last until the with-block ends."""
        raise NotImplementedError

    def run_sum(self, job: SumJob, progress: Progress = no_progress) -> int:
        with self.executor(job.workers) as pool:
            futures = {
                pool.submit(sum_range, start, stop): stop - start for start, stop in job.ranges()
            }
            total = 0
            for future in as_completed(futures):
                total += future.result()
                progress(futures[future])
        return total

    def run_pipeline(self, job: PipelineJob, progress: Progress = no_progress) -> Consumed:
        consumed = Consumed()
        lock = threading.Lock()
        in_flight = threading.BoundedSemaphore(job.queue_size)
        payload = job.payload

        def done(future: Future[tuple[int, float]]) -> None:
            # Runs in a thread of the parent; the lock keeps the tally and progress whole.
            try:
                if not future.exception():
                    with lock:
                        consumed.record(*future.result())
                        if len(consumed.ids) % PROGRESS_EVERY == 0:
                            progress(PROGRESS_EVERY)
            finally:
                in_flight.release()

        with self.executor(job.consumers) as pool:

            def produce(ids: range) -> None:
                for item_id in ids:
                    if job.produce_ms:
                        time.sleep(job.produce_ms / 1000)
                    in_flight.acquire()
                    future = pool.submit(
                        handle_item, make_item(item_id, payload), job.work_ms, job.work_kind
                    )
                    future.add_done_callback(done)

            producers = [
                threading.Thread(target=produce, args=(job.share(p),), name=f"producer-{p}")
                for p in range(job.producers)
            ]
            for thread in producers:
                thread.start()
            for thread in producers:
                thread.join()
        # Leaving the with-block called shutdown(wait=True): every submitted item has
        # run and its callback has fired, so the tally is complete.
        progress(len(consumed.ids) % PROGRESS_EVERY)
        return consumed

    def run_tickets(self, job: TicketsJob, progress: Progress = no_progress) -> Sales:
        sales = Sales(at_once=job.workers)
        with self.ticket_store(job.tickets) as (store, guard):
            lock = None if job.unsafe else guard
            with self.executor(job.workers) as pool:
                futures = [pool.submit(buy, store, job.gap_ms, lock) for _ in range(job.buyers)]
                for future in as_completed(futures):
                    sales.add(future.result())
                    progress(1)
            sales.left = store.read()
        return sales
