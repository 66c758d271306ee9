"""The kombu rung: producer and consumer processes around a kombu SimpleQueue on Redis.

    producer processes -> SimpleQueue.put (JSON) -> Redis list -> kombu consumer processes
    consumers -> handled list in Redis -> parent verifies

SimpleQueue mimics queue.Queue (put, get, Empty, qsize): the processes rung's shape,
with the channel moved out of the machine's memory into a broker.
"""

from __future__ import annotations

import time

from kombu.connection import Connection
from kombu.simple import SimpleQueue

from consumers.kombu_consumer import PayloadQueue, connect, consume, sum_worker
from ladder.broker import RunKeys
from ladder.jobs import PipelineJob, SumJob
from ladder.results import Consumed
from ladder.rung import Progress, no_progress
from local_ipc.loops import collect, put_all
from local_ipc.processes import Child, stop_processes
from producers.broker_rung import BrokerRung, Watch
from tasks.workloads import STOP, make_item


def room_check_every(queue_size: int) -> int:
    """How often a producer asks the queue's length: a Redis list has no maxsize."""
    return max(1, min(100, queue_size // 4))


def qsize(channel: SimpleQueue) -> int:
    """SimpleQueue.qsize(), minus its passive declare: to kombu an empty Redis queue does
    not exist, so the passive form fails exactly when the queue has room."""
    return int(channel.queue.queue_declare().message_count)


def produce(url: str, keys: RunKeys, ids: range, job: PipelineJob) -> None:
    """Put one item per id, pausing while the queue holds queue_size items (backpressure)."""
    payload = job.payload
    every = room_check_every(job.queue_size)
    with Connection(url) as connection:
        channel = connection.SimpleQueue(keys.items, serializer="json")
        for count, item_id in enumerate(ids):
            if job.produce_ms:
                time.sleep(job.produce_ms / 1000)
            if count % every == 0:
                while qsize(channel) >= job.queue_size:
                    time.sleep(0.005)
            channel.put(make_item(item_id, payload))


class KombuRung(BrokerRung):
    name = "kombu"
    teaches = "queue.Queue's put/get on a broker: messages leave the process, acks, JSON"

    def run_sum(self, job: SumJob, progress: Progress = no_progress) -> int:
        url, keys = self.stack.url, RunKeys.new()
        visibility_s = self.settings.visibility_timeout_s
        workers = [
            Child(target=sum_worker, args=(url, keys, visibility_s), name=f"sum-{w}")
            for w in range(job.workers)
        ]
        try:
            with connect(url, self.settings.visibility_timeout_s) as connection:
                chunks = PayloadQueue(connection, keys.queue("chunks"))
                totals = PayloadQueue(connection, keys.queue("totals"))
                put_all(chunks, [*job.ranges(), *[STOP] * job.workers])
                for worker in workers:
                    worker.start()
                total = 0
                for numbers, chunk_total in collect(totals, job.chunks, workers, no_progress):
                    total += chunk_total
                    progress(numbers)
            return total
        finally:
            stop_processes(workers)
            keys.cleanup(url)

    def run_pipeline(self, job: PipelineJob, progress: Progress = no_progress) -> Consumed:
        url, keys = self.stack.url, RunKeys.new()
        visibility_s = self.settings.visibility_timeout_s
        producers = [
            Child(target=produce, args=(url, keys, job.share(p), job), name=f"producer-{p}")
            for p in range(job.producers)
        ]
        consumers = [
            Child(target=consume, args=(url, keys, job, visibility_s), name=f"consumer-{c}")
            for c in range(job.consumers)
        ]
        watch = Watch(url, keys, progress)
        try:
            for process in producers + consumers:
                process.start()
            watch.until(lambda _: not any(p.is_alive() for p in producers))
            # The stream ends once every item is handled, as JoinableQueue.join would
            # tell: a sentinel sent as soon as the producers finish could stop the last
            # consumers before the items of one that died come back to the queue.
            watch.until(lambda handled: handled >= job.items, stall_s=self.stall_s(job))
            with connect(url, self.settings.visibility_timeout_s) as connection:
                channel = connection.SimpleQueue(keys.items, serializer="json")
                for _ in consumers:
                    channel.put(STOP)
            watch.until(lambda _: not any(c.is_alive() for c in consumers))
            return watch.read()
        finally:
            stop_processes(producers + consumers)
            keys.cleanup(url)
