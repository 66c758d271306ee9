"""The kombu rung: producer and consumer processes around a kombu SimpleQueue on Redis.

    producer processes -> SimpleQueue.put (JSON) -> Redis list -> kombu consumer processes
    consumers -> handled list in Redis -> parent verifies

SimpleQueue mimics queue.Queue (put, get, Empty, qsize): the processes rung's shape,
with the channel moved out of the machine's memory into a broker.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker_ipc.base import BrokerRung, Watch
from broker_ipc.tickets import kombu_tickets
from consumers.kombu_consumer import consume, sum_worker
from core.broker import RunKeys
from core.forkserver import Child, sent_counter, stop_processes
from core.jobs import PipelineJob, SumJob, TicketsJob
from core.results import Consumed, Sales
from core.rung import Progress, no_progress
from core.transport import PayloadQueue, connect
from local_ipc.loops import collect, put_all
from producers.kombu_producer import produce
from tasks.workloads import STOP, batches, make_message


class KombuRung(BrokerRung):
    name = "kombu"

    def run_sum(self, job: SumJob, progress: Progress = no_progress) -> int:
        url, keys = self.stack.url, RunKeys.new()
        visibility_s = self.settings.visibility_timeout_s
        workers = [
            Child(target=sum_worker, args=(url, keys, visibility_s), name=f"sum-{w}")
            for w in range(job.workers)
        ]
        with keys.lease(url), connect(url, visibility_s) as connection:
            try:
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

    def run_pipeline(self, job: PipelineJob, progress: Progress = no_progress) -> Consumed:
        url, keys = self.stack.url, RunKeys.new()
        visibility_s = self.settings.visibility_timeout_s
        sent = [sent_counter() for _ in range(job.producers)]
        producers = [
            Child(
                target=produce,
                args=(url, keys, job.share(p), job, visibility_s, sent[p]),
                name=f"producer-{p}",
            )
            for p in range(job.producers)
        ]
        consumers = [
            Child(target=consume, args=(url, keys, job, visibility_s), name=f"consumer-{c}")
            for c in range(job.consumers)
        ]
        watch = Watch(url, keys, progress, outage_limit_s=self.stall_s(job))
        with keys.lease(url):
            try:
                for process in producers + consumers:
                    process.start()
                # The stream ends once every item sent is handled, as JoinableQueue.join
                # would tell: a sentinel sent as soon as the producers finish could stop
                # the last consumers before the items of one that died come back.
                consumed = self.drain(job, keys, producers, sent, watch)
                with connect(url, visibility_s) as connection:
                    channel = connection.SimpleQueue(keys.items, serializer="json")
                    for _ in consumers:
                        channel.put(STOP)
                watch.until(lambda _: not any(c.is_alive() for c in consumers))
                return consumed
            finally:
                stop_processes(producers + consumers)

    def resend(self, keys: RunKeys, job: PipelineJob, ids: Sequence[int]) -> None:
        with connect(self.stack.url, self.settings.visibility_timeout_s) as connection:
            channel = connection.SimpleQueue(keys.items, serializer="json")
            for part in batches(ids, job.batch):
                channel.put(make_message(part, job.payload, job.batched))

    def run_tickets(self, job: TicketsJob, progress: Progress = no_progress) -> Sales:
        """Buyers as messages, job.workers consumer processes buying from the Redis store."""
        return kombu_tickets(
            self.stack.url, job, progress, self.settings.visibility_timeout_s, self.stall_s(job)
        )
