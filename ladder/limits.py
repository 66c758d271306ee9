"""Each transport's raw limit: a few lines of plain code that move small items through it.

    producer (this process) -> transport -> one consumer (a thread, or a child process)
    consumer -> the ids it took, once, at the sentinel -> verify_pipeline

No rung, no progress, no per-item bookkeeping but the id: the fastest this machine moves
the rungs' own items (tasks.workloads.make_item, same payload) through that channel, so a
rung's throughput divided by its transport's limit is what the rung's own logic costs.
A consumer process is started, and ready, before the clock; the time to hand its ids
back is timed, as it is for the rungs.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from multiprocessing.connection import Connection as PipeEnd
from pathlib import Path
from typing import Any

from celery import Celery

from core import interrupt, procs
from core.broker import RunKeys, client
from core.celery_workers import CeleryWorkers, Topology
from core.forkserver import CONTEXT, Child, start_fork_server, stop_processes
from core.jobs import Job, PipelineJob
from core.results import Consumed, RunResult, percentiles_ms, verify_pipeline
from core.settings import Settings
from core.transport import connect
from core.wait import wait_while_moving
from local_ipc.loops import Channel, collect
from tasks.celery_app import make_app
from tasks.workloads import STOP, make_item

RUNG = "raw"
PIPELINE_BATCH = 100  # commands per round trip in redis_pipelined
BRPOP_TIMEOUT_S = 30  # a consumer that waits this long for an item gives up: a lost run


def pipeline_job(job: Job) -> PipelineJob:
    if not isinstance(job, PipelineJob):
        raise TypeError(f"a raw transport limit needs a pipeline job (got {job.workload})")
    return job


def queue_threads(job: Job) -> RunResult:
    """queue.Queue(job.queue_size), as the threads rung bounds it: this thread puts, one
    consumer thread gets."""
    job = pipeline_job(job)
    channel: queue.Queue[Any] = queue.Queue(job.queue_size)
    ids: list[int] = []

    def consume() -> None:
        while (item := channel.get()) is not STOP:
            ids.append(item["id"])

    consumer = threading.Thread(target=consume, name="raw-consumer")
    start = time.perf_counter()
    consumer.start()
    for item_id in range(job.items):
        channel.put(make_item(item_id, job.payload))
    channel.put(STOP)
    consumer.join()
    return verify_pipeline(RUNG, job, Consumed(ids=ids), time.perf_counter() - start)


def in_child(
    job: PipelineJob,
    target: Callable[..., None],
    args: tuple[Any, ...],
    put_all: Callable[[], None],
) -> RunResult:
    """Start target(*args, results) in a child, wait for its "ready", then time put_all()
    and the child's handing back of the ids it took."""
    start_fork_server()
    results = CONTEXT.Queue()
    child = Child(target=target, args=(*args, results), name="raw-consumer")
    try:
        child.start()
        for _ in collect(results, 1, [child], lambda _: None):
            break  # "ready"
        start = time.perf_counter()
        put_all()
        ids: list[int] = next(iter(collect(results, 1, [child], lambda _: None)), [])
        seconds = time.perf_counter() - start
        child.join()
    finally:
        stop_processes([child])
    return verify_pipeline(RUNG, job, Consumed(ids=ids), seconds)


def get_from_queue(channel: Channel, results: Channel) -> None:
    results.put("ready")
    ids: list[int] = []
    while (item := channel.get()) is not STOP:
        ids.append(item["id"])
    results.put(ids)


def multiprocessing_queue(job: Job) -> RunResult:
    """multiprocessing.Queue(job.queue_size), as the processes rung bounds it: this
    process puts, one child process gets."""
    job = pipeline_job(job)
    channel = CONTEXT.Queue(job.queue_size)

    def put_all() -> None:
        for item_id in range(job.items):
            channel.put(make_item(item_id, job.payload))
        channel.put(STOP)

    return in_child(job, get_from_queue, (channel,), put_all)


def recv_from_pipe(reader: PipeEnd, results: Channel) -> None:
    results.put("ready")
    ids: list[int] = []
    while (item := reader.recv()) is not STOP:
        ids.append(item["id"])
    results.put(ids)


def multiprocessing_pipe(job: Job) -> RunResult:
    """multiprocessing.Pipe(duplex=False): this process sends, one child process receives;
    no feeder thread and no lock, unlike multiprocessing.Queue."""
    job = pipeline_job(job)
    reader, writer = CONTEXT.Pipe(duplex=False)

    def put_all() -> None:
        for item_id in range(job.items):
            writer.send(make_item(item_id, job.payload))
        writer.send(STOP)

    return in_child(job, recv_from_pipe, (reader,), put_all)


def brpop_ids(url: str, key: str, items: int, batch: int, results: Channel) -> None:
    """Pop `items` JSON items from key, `batch` BRPOPs per round trip."""
    redis = client(url, name="ladder-raw-consumer")
    results.put("ready")
    ids: list[int] = []
    while len(ids) < items:
        pipe = redis.pipeline(transaction=False)
        for _ in range(min(batch, items - len(ids))):
            pipe.brpop([key], timeout=BRPOP_TIMEOUT_S)
        for popped in pipe.execute():
            if popped is None:
                results.put(ids)  # timed out: the rest is lost, as verification will say
                return
            ids.append(json.loads(popped[1])["id"])
    results.put(ids)


def redis_push_pop(url: str, job: Job, batch: int) -> RunResult:
    job = pipeline_job(job)
    keys = RunKeys.new()
    redis = client(url, name="ladder-raw-producer")

    def put_all() -> None:
        for first in range(0, job.items, batch):
            pipe = redis.pipeline(transaction=False)
            for item_id in range(first, min(first + batch, job.items)):
                pipe.lpush(keys.items, json.dumps(make_item(item_id, job.payload)))
            pipe.execute()

    try:
        return in_child(job, brpop_ids, (url, keys.items, job.items, batch), put_all)
    finally:
        keys.cleanup(url)


def redis_unpipelined(url: str, job: Job) -> RunResult:
    """redis-py, one round trip per item: this process LPUSHes, a child BRPOPs."""
    return redis_push_pop(url, job, batch=1)


def redis_pipelined(url: str, job: Job) -> RunResult:
    """redis-py, PIPELINE_BATCH commands per round trip on both sides."""
    return redis_push_pop(url, job, batch=PIPELINE_BATCH)


def get_from_simple_queue(url: str, name: str, results: Channel) -> None:
    with connect(url, Settings().visibility_timeout_s) as connection:
        channel = connection.SimpleQueue(name, serializer="json", accept=["json"])
        results.put("ready")
        ids: list[int] = []
        while (message := channel.get(timeout=BRPOP_TIMEOUT_S)).payload is not STOP:
            ids.append(message.payload["id"])
            message.ack()
        message.ack()
        results.put(ids)


def kombu_simple_queue(url: str, job: Job) -> RunResult:
    """Bare kombu SimpleQueue, JSON, connected as the kombu rung connects: this process puts, one
    child process gets and acks; no backpressure check and no record in Redis."""
    job = pipeline_job(job)
    keys = RunKeys.new()
    try:
        with connect(url, Settings().visibility_timeout_s) as connection:
            channel = connection.SimpleQueue(keys.items, serializer="json")

            def put_all() -> None:
                for item_id in range(job.items):
                    channel.put(make_item(item_id, job.payload))
                channel.put(STOP)

            return in_child(job, get_from_simple_queue, (url, keys.items), put_all)
    finally:
        keys.cleanup(url)


# `celery -A tasks worker` as it starts with no options on 2 cores: one instance,
# prefork, 2 children, prefetch 4.
DEFAULT_WORKER = Topology(instances=1, pool="prefork", concurrency=2)
NOOP_QUEUE = "ladder-noop"  # served by the bare worker alone, not by a rung's workers
STATS_EVERY_S = 0.1
NOOP_STALL_S = 30.0  # no task run for this long: the bare worker has stopped


@contextmanager
def bare_worker(url: str) -> Iterator[tuple[Celery, str]]:
    """A client, and the name of one worker in Celery's default configuration serving
    NOOP_QUEUE alone; the worker is stopped on the way out."""
    app = make_app(url, url)
    with procs.scratch("ladder-bare-") as folder:
        workers = CeleryWorkers(
            url, url, replace(DEFAULT_WORKER, queues=(NOOP_QUEUE,)), Path(folder)
        )
        try:
            workers.start()
            yield app, workers.names()[0]
        finally:
            workers.stop()
            app.close()


def counted(job: PipelineJob, done: int, seconds: float, trips: Sequence[float] = ()) -> RunResult:
    """A raw Celery limit's result: how many of job.items were done, in how long."""
    return RunResult(
        rung=RUNG,
        workload=job.workload,
        params=job.params(),
        seconds=seconds,
        throughput=done / seconds,
        unit=job.unit,
        verified=done == job.items,
        expected=job.items,
        got=done,
        latency_ms=percentiles_ms(trips),
    )


def celery_noop(url: str, job: Job) -> RunResult:
    """A bare Celery no-op task end to end: this process sends job.items `tasks.noop`
    with apply_async to one worker in Celery's default configuration (prefork -c 2,
    prefetch 4, acknowledged early), and the clock stops once the worker's own count of
    tasks run says all of them ran."""
    job = pipeline_job(job)
    with bare_worker(url) as (app, worker):
        noop = app.signature("tasks.noop", queue=NOOP_QUEUE)
        before = noops_run(app, worker)
        start = time.perf_counter()
        for _ in range(job.items):
            noop.apply_async()
        ran = 0

        def count() -> int:
            # The most seen: a worker that died answers nothing, which counts as 0.
            nonlocal ran
            ran = max(ran, noops_run(app, worker) - before)
            return ran

        # A worker that stopped running tasks (killed, its broker gone) ends the wait:
        # the result then says how many of the tasks ran.
        wait_while_moving(count, lambda n: n >= job.items, NOOP_STALL_S, STATS_EVERY_S)
        return counted(job, ran, time.perf_counter() - start)


def noops_run(app: Celery, worker: str) -> int:
    """How many tasks.noop this worker has run, by its own count (its answer is awaited
    alone: the timeout bounds a worker that does not answer)."""
    stats = app.control.inspect([worker], timeout=5.0, limit=1).stats() or {}
    return sum(int(s.get("total", {}).get("tasks.noop", 0)) for s in stats.values())


def celery_round_trip(url: str, job: Job) -> RunResult:
    """A bare Celery task's whole round trip, job.items times one after the other: send
    `tasks.sum_range(0, 1)` with apply_async to one worker in Celery's default
    configuration, wait for its result. Its latency is that round trip."""
    job = pipeline_job(job)
    trips: list[float] = []
    with bare_worker(url) as (app, _):
        task = app.signature("tasks.sum_range", (0, 1), queue=NOOP_QUEUE)
        task.apply_async().get(timeout=10)  # the first connection, before the clock
        start = time.perf_counter()
        for _ in range(job.items):
            sent = time.perf_counter()
            result = task.apply_async()
            result.get(timeout=10)
            trips.append(time.perf_counter() - sent)
            result.forget()
            interrupt.check()
        return counted(job, len(trips), time.perf_counter() - start, trips)
