"""The celery rung: tasks sent to Celery workers through Redis.

    sum:      chord(group(tasks.sum_range per chunk), tasks.add_totals) -> one total
    pipeline: producer processes -> apply_async(tasks.handle_item) -> Redis list "celery"
              -> celery workers -> handled list in Redis -> parent verifies

The parent is a plain Celery client that sends tasks by name: it needs the workers'
broker, not their code.
"""

from __future__ import annotations

import math
import os
import time
from types import TracebackType

from celery import chord, group

from consumers.celery_workers import Topology
from ladder import broker, interrupt
from ladder.broker import RunKeys
from ladder.errors import RunFailed
from ladder.jobs import Job, PipelineJob, SumJob
from ladder.results import Consumed
from ladder.rung import Progress, no_progress
from local_ipc.processes import Child, stop_processes
from producers.broker_rung import POLL_S, BrokerRung, Watch
from producers.kombu_producer import room_check_every
from tasks.celery_app import make_app
from tasks.workloads import make_item

QUEUE = "celery"  # Celery's default queue: the Redis list the workers read


def produce(url: str, backend_url: str, keys: RunKeys, ids: range, job: PipelineJob) -> None:
    """Send one tasks.handle_item per id, pausing while the queue holds queue_size."""
    client = make_app(url, backend_url)
    handle = client.signature("tasks.handle_item")
    redis = broker.client(url)
    payload = job.payload
    every = room_check_every(job.queue_size)
    for count, item_id in enumerate(ids):
        if job.produce_ms:
            time.sleep(job.produce_ms / 1000)
        if count % every == 0:
            while redis.llen(QUEUE) >= job.queue_size:
                time.sleep(0.005)
        handle.apply_async((make_item(item_id, payload), keys.run_id, job.work_ms, job.work_kind))


def topology(job: Job, cores: int = os.cpu_count() or 1) -> Topology:
    """The workers the embedded stack starts for a job (a broker URL uses what is there)."""
    if isinstance(job, SumJob):
        # CPU-bound chunks: one solo worker per requested worker, each a process.
        return Topology(instances=job.workers, pool="solo")
    instances = min(job.consumers, cores)
    slots = math.ceil(job.consumers / instances)
    # Waiting work overlaps in threads; CPU work needs processes (prefork) past the GIL.
    pool = "prefork" if job.work_kind == "cpu" and job.work_ms else "threads"
    return Topology(instances=instances, pool=pool, concurrency=slots)


class CeleryRung(BrokerRung):
    name = "celery"
    teaches = "tasks and workers: apply_async, group/chord, acks_late, events, Flower"

    def __enter__(self) -> CeleryRung:
        super().__enter__()
        self.client = make_app(self.stack.url, self.stack.backend_url)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.client.close()
        super().__exit__(exc_type, exc, tb)

    def prepare(self, job: Job) -> None:
        self.stack.celery_workers(topology(job))

    def run_sum(self, job: SumJob, progress: Progress = no_progress) -> int:
        chunks = group(self.client.signature("tasks.sum_range", (a, b)) for a, b in job.ranges())
        result = chord(chunks)(self.client.signature("tasks.add_totals"))
        header = result.parent
        shown, last_change = 0, time.monotonic()
        try:
            while not result.ready():
                numbers = job.n * header.completed_count() // job.chunks
                if numbers != shown:
                    progress(numbers - shown)
                    shown, last_change = numbers, time.monotonic()
                elif time.monotonic() - last_change > self.stall_s(job):
                    raise RunFailed(
                        f"celery workers stopped: {header.completed_count()} of {job.chunks} "
                        f"chunks done after {self.stall_s(job):.0f} s without progress"
                    )
                interrupt.check()
                time.sleep(POLL_S / 2)
            progress(job.n - shown)
            return int(result.get(propagate=True))
        finally:
            result.forget()
            header.forget()

    def run_pipeline(self, job: PipelineJob, progress: Progress = no_progress) -> Consumed:
        url, backend_url, keys = self.stack.url, self.stack.backend_url, RunKeys.new()
        producers = [
            Child(
                target=produce,
                args=(url, backend_url, keys, job.share(p), job),
                name=f"producer-{p}",
            )
            for p in range(job.producers)
        ]
        watch = Watch(url, keys, progress)
        try:
            for process in producers:
                process.start()
            watch.until(lambda _: not any(p.is_alive() for p in producers))
            # No sentinel: tasks are independent. The run is over when every item is
            # recorded, or when nothing more arrives (what is missing is then lost).
            watch.until(lambda handled: handled >= job.items, stall_s=self.stall_s(job))
            return watch.read()
        finally:
            stop_processes(producers)
            keys.cleanup(url)
