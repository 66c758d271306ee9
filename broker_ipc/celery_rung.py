"""The celery rung: tasks sent to Celery workers through Redis.

    sum:      chord(group(tasks.sum_range per chunk), tasks.add_totals) -> one total
    pipeline: producer processes -> apply_async(tasks.handle_item) -> Redis list "io"
              -> celery workers -> handled list in Redis -> parent verifies

The parent is a plain Celery client that sends tasks by name: it needs the workers'
broker, not their code.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence

from celery import chord, group
from celery.exceptions import TimeoutError as CeleryTimeout

from broker_ipc.base import POLL_S, BrokerRung
from broker_ipc.tickets import celery_tickets
from core import interrupt
from core.broker import RunKeys
from core.celery_workers import Topology, WorkerShape, worker_shapes
from core.errors import RunFailed
from core.jobs import Job, PipelineJob, SumJob, TicketsJob
from core.results import Consumed, Sales
from core.rung import Progress, Shown, no_progress
from core.settings import Settings
from core.stack import Stack
from core.work import CPU_QUEUE
from producers.celery_producer import BATCH_TASK, TASK, produce, queue_of
from tasks.celery_app import make_app
from tasks.workloads import batches, make_message


def topology(job: Job, cores: int = os.cpu_count() or 1) -> Topology:
    """The workers the embedded stack starts for a job (a broker URL uses what is there),
    serving the job's queue alone, as compose.yaml's workers each serve one."""
    queues = (queue_of(job),)
    if isinstance(job, SumJob):
        # CPU-bound chunks: one solo worker per requested worker, each a process.
        return Topology(instances=job.workers, pool="solo", queues=queues)
    consumers = job.workers if isinstance(job, TicketsJob) else job.consumers
    instances = min(consumers, cores)
    slots = math.ceil(consumers / instances)
    # One slot: the task runs in the worker's own process (solo), with no hand-off to a
    # pool thread or child (about 12% more tasks/s with no work, measured here). More:
    # waiting work overlaps in threads; CPU work needs processes (prefork) past the GIL.
    cpu_bound = queues == (CPU_QUEUE,)
    pool = "solo" if slots == 1 else "prefork" if cpu_bound else "threads"
    return Topology(instances=instances, pool=pool, concurrency=slots, queues=queues)


class CeleryRung(BrokerRung):
    name = "celery"

    def __init__(
        self,
        settings: Settings | None = None,
        stack: Stack | None = None,
        workers: Topology | None = None,
    ) -> None:
        """workers: the embedded stack's workers for every job, instead of topology(job)."""
        super().__init__(settings, stack)
        self.workers = workers

    def open(self) -> None:
        super().open()
        self.client = make_app(self.stack.url, self.stack.backend_url)

    def close(self) -> None:
        # An open that failed before the client was made has none to close.
        if client := self.__dict__.pop("client", None):
            client.close()
        super().close()

    def prepare(self, job: Job) -> None:
        self.stack.celery_workers(self.workers or topology(job))

    def run_sum(self, job: SumJob, progress: Progress = no_progress) -> int:
        chunks = group(self.client.signature("tasks.sum_range", (a, b)) for a, b in job.ranges())
        result = chord(chunks)(self.client.signature("tasks.add_totals"))
        header = result.parent
        shown, last_change = Shown(progress), time.monotonic()
        try:
            while True:
                try:
                    # Woken by the result backend as soon as the total is stored, not
                    # at the next poll; the wait is cut short only to show progress.
                    total = int(result.get(timeout=POLL_S / 2, propagate=True))
                    shown.to(job.n)
                    return total
                except CeleryTimeout:
                    pass
                numbers = job.n * header.completed_count() // job.chunks
                if numbers != shown.count:
                    shown.to(numbers)
                    last_change = time.monotonic()
                elif time.monotonic() - last_change > self.stall_s(job):
                    raise RunFailed(
                        f"celery workers stopped: {header.completed_count()} of {job.chunks} "
                        f"chunks done after {self.stall_s(job):.0f} s without progress"
                    )
                interrupt.check()
        finally:
            result.forget()
            header.forget()

    def served_by(self, job: Job) -> list[WorkerShape]:
        queue = queue_of(job)
        shapes = worker_shapes(self.stack.url, self.stack.backend_url)
        return [shape for shape in shapes if queue in shape.queues]

    def run_pipeline(self, job: PipelineJob, progress: Progress = no_progress) -> Consumed:
        return self.send_and_drain(job, produce, (self.stack.url, self.stack.backend_url), progress)

    def resend(self, keys: RunKeys, job: PipelineJob, ids: Sequence[int]) -> None:
        task = self.client.signature(BATCH_TASK if job.batched else TASK, queue=queue_of(job))
        for part in batches(ids, job.batch):
            message = make_message(part, job.payload, job.batched)
            task.apply_async((message, keys.run_id, job.work_ms, job.work_kind))

    def run_tickets(self, job: TicketsJob, progress: Progress = no_progress) -> Sales:
        """One tasks.buy_ticket per buyer, bought by the Celery workers from the Redis store."""
        return celery_tickets(self.client, self.stack.url, job, progress, self.stall_s(job))
