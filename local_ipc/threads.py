"""The threads rung: threading.Thread workers around a bounded queue.Queue.

    producer threads -> queue.Queue(maxsize) -> consumer threads -> one Consumed each
    buyer threads -> one count in shared memory, guarded by a threading.Lock -> Sales

Threads share memory, so each consumer's tally is simply read after join. The GIL
lets one thread run Python at a time: no gain on CPU-bound work, a real one when
threads wait (sleep, sockets), because waiting releases it.
"""

from __future__ import annotations

import queue
import threading

from core.jobs import PipelineJob, SumJob, TicketsJob
from core.results import Consumed, Sales
from core.rung import Progress, Rung, no_progress
from local_ipc.loops import consume, produce, put_all, sum_chunks
from tasks.tickets import MemoryStore, buy
from tasks.workloads import STOP


class ThreadsRung(Rung):
    name = "threads"

    def run_sum(self, job: SumJob, progress: Progress = no_progress) -> int:
        chunks: queue.Queue[tuple[int, int] | None] = queue.Queue()
        totals: queue.Queue[tuple[int, int]] = queue.Queue()
        workers = [
            threading.Thread(target=sum_chunks, args=(chunks, totals), name=f"sum-{w}")
            for w in range(job.workers)
        ]
        for worker in workers:
            worker.start()
        # One sentinel per worker: each takes exactly one and stops.
        put_all(chunks, [*job.ranges(), *[STOP] * job.workers])
        total = 0
        for _ in range(job.chunks):
            numbers, chunk_total = totals.get()
            total += chunk_total
            progress(numbers)
        for worker in workers:
            worker.join()
        return total

    def run_pipeline(self, job: PipelineJob, progress: Progress = no_progress) -> Consumed:
        channel: queue.Queue[object] = queue.Queue(maxsize=job.queue_size)
        tallies: list[Consumed] = []

        def consumer() -> None:
            # list.append is atomic under the GIL: no lock needed to collect tallies.
            tallies.append(consume(channel, job, progress))

        producers = [
            threading.Thread(
                target=produce, args=(channel, job.share(p), job), name=f"producer-{p}"
            )
            for p in range(job.producers)
        ]
        consumers = [
            threading.Thread(target=consumer, name=f"consumer-{c}") for c in range(job.consumers)
        ]
        for thread in producers + consumers:
            thread.start()
        for thread in producers:
            thread.join()
        if job.end == "join":
            channel.join()  # returns once every item put so far has been task_done
        # Only now is the stream over: a sentinel sent earlier could overtake items
        # still being put by a slower producer.
        put_all(channel, [STOP] * job.consumers)
        for thread in consumers:
            thread.join()
        consumed = Consumed()
        for tally in tallies:
            consumed.extend(tally)
        return consumed

    def run_tickets(self, job: TicketsJob, progress: Progress = no_progress) -> Sales:
        store = MemoryStore(job.tickets)
        # The GIL makes each read and each write whole, not the check-then-buy between
        # them: a thread can be switched out in the gap, and is, since it sleeps there.
        lock = None if job.unsafe else threading.Lock()
        tallies: list[Sales] = []

        def buyer(ids: range) -> None:
            sales = Sales()
            for _ in ids:
                sales.add(buy(store, job.gap_ms, lock))
                progress(1)
            tallies.append(sales)

        workers = [
            threading.Thread(target=buyer, args=(job.share(w),), name=f"buyer-{w}")
            for w in range(job.workers)
        ]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        sales = Sales(left=store.read(), at_once=job.workers)
        for tally in tallies:
            sales.extend(tally)
        return sales
