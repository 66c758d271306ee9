"""The kombu rung: producer and consumer processes around a kombu SimpleQueue on Redis.

    producer processes -> SimpleQueue.put (JSON) -> Redis list -> kombu consumer processes
    consumers -> handled list in Redis -> parent verifies

SimpleQueue mimics queue.Queue (put, get, Empty, qsize): the processes rung's shape,
with the channel moved out of the machine's memory into a broker.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from kombu.simple import SimpleQueue

from consumers.kombu_consumer import (
    RECONNECT_S,
    PayloadQueue,
    connect,
    consume,
    session,
    sum_worker,
)
from ladder.broker import OUTAGE_ERRORS, RunKeys
from ladder.jobs import PipelineJob, SumJob, TicketsJob
from ladder.results import Consumed
from ladder.rung import Progress, no_progress
from local_ipc.loops import collect, put_all
from local_ipc.processes import Child, stop_processes
from producers.broker_rung import BrokerRung, SentCounter, Watch, room_check_every, sent_counter
from producers.tickets import kombu_tickets
from tasks.tickets import Sales
from tasks.workloads import STOP, batches, make_message

log = logging.getLogger(__name__)


def qsize(channel: SimpleQueue) -> int:
    """SimpleQueue.qsize(), minus its passive declare: to kombu an empty Redis queue does
    not exist, so the passive form fails exactly when the queue has room."""
    return int(channel.queue.queue_declare().message_count)


def produce(
    url: str, keys: RunKeys, ids: range, job: PipelineJob, visibility_s: float, sent: SentCounter
) -> None:
    """Put one item per id, pausing while the queue holds job.broker_queue_size messages
    (backpressure).

    A broker outage drops the connection: the producer makes a new one and goes on from
    the item it was sending (which may then arrive twice: a redelivery, counted once).
    """
    name = f"ladder-producer-{os.getpid()}"
    while sent.value < len(ids):
        try:
            with session(url, visibility_s, name) as connection:
                put_share(connection.SimpleQueue(keys.items, serializer="json"), ids, job, sent)
        except OUTAGE_ERRORS as error:
            # Quietly: the run reports the outage and how long it lasted, once.
            log.info("lost the broker (%s); reconnecting", error)
            time.sleep(RECONNECT_S)


def put_share(channel: SimpleQueue, ids: range, job: PipelineJob, sent: SentCounter) -> None:
    """Put the items of ids not sent yet, job.batch of them per message."""
    payload, bound = job.payload, job.broker_queue_size
    every = room_check_every(bound)
    for count, part in enumerate(batches(ids[sent.value :], job.batch)):
        message = make_message(part, payload, job.batched, job.produce_ms)
        if count % every == 0:
            while qsize(channel) >= bound:
                time.sleep(0.005)
        channel.put(message)
        sent.value += len(part)


class KombuRung(BrokerRung):
    name = "kombu"
    batches = True
    teaches = "queue.Queue's put/get on a broker: messages leave the process, acks, JSON"

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
