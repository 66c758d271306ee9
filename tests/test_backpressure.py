"""Backpressure and memory: with consumers slower than producers, no queue passes its bound.

Locally the queue's own maxsize holds the producers back. A Redis list has no maxsize:
the broker producers ask its length every few items (room_check_every), so it may pass
queue_size by what each producer puts between two checks, never more. Every run must
still verify. The peak RSS of long runs is the bench's (`ladder bench --memory`); here
the sampler is checked on small ones.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import types
from collections.abc import Callable
from dataclasses import replace
from types import TracebackType
from typing import Any, ClassVar, Self

import pytest

from core import forkserver
from core.broker import RunKeys, client
from core.celery_workers import CeleryWorkers
from core.jobs import PipelineJob
from core.results import RunResult
from core.settings import Settings
from core.work import IO_QUEUE as CELERY_QUEUE
from ladder.memory import MB, PeakRss
from ladder.registry import RUNGS
from ladder.runner import run
from local_ipc import threads
from producers.sending import room_check_every

QUEUE_SIZE = 20
# One consumer with 5 ms of work per item against two producers with none: the queue
# fills at once and stays full until the producers are done.
SLOW_CONSUMER = PipelineJob(items=400, producers=2, consumers=1, work_ms=5, queue_size=QUEUE_SIZE)
# The session's Celery workers are two, with two threads each, and each takes up to 8
# messages off the list ahead of its threads (prefetch): 50 ms of work per item keeps
# all four slower than two producers, once those 16 are taken.
SLOW_CELERY = PipelineJob(items=200, producers=2, consumers=1, work_ms=50, queue_size=QUEUE_SIZE)


def broker_bound(job: PipelineJob) -> int:
    """The longest a broker queue can get: each producer last saw it below queue_size,
    then put at most room_check_every items without looking."""
    return job.queue_size - 1 + job.producers * room_check_every(job.queue_size)


def check_verified(result: RunResult, job: PipelineJob) -> None:
    assert result.verified, result.note
    assert (result.got, result.lost, result.duplicates) == (job.items, 0, 0)


class Sampler:
    """Calls size() in a thread, as often as it can, and keeps the largest answer."""

    def __init__(self, size: Callable[[], int], interval_s: float = 0.001) -> None:
        self.size = size
        self.interval_s = interval_s
        self.largest = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="queue-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.largest = max(self.largest, self.size())
            self.samples += 1

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()


def assert_held_back(sampler: Sampler, bound: int, job: PipelineJob) -> None:
    assert sampler.samples > 0
    assert sampler.largest <= bound, f"the queue reached {sampler.largest}, bound {bound}"
    # Non-vacuous: the producers did outrun the consumers and met the bound.
    assert sampler.largest >= job.queue_size // 2, sampler.largest


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_kombu_queue_stays_bounded(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = RunKeys.new()
    monkeypatch.setattr(RunKeys, "new", classmethod(lambda cls: keys))
    redis = client(redis_url)
    with RUNGS["kombu"](Settings(broker_url=redis_url)) as rung:
        rung.prepare(SLOW_CONSUMER)
        with Sampler(lambda: int(redis.llen(keys.items))) as sampler:
            result = run(rung, SLOW_CONSUMER)
    check_verified(result, SLOW_CONSUMER)
    assert_held_back(sampler, broker_bound(SLOW_CONSUMER), SLOW_CONSUMER)


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_celery_queue_stays_bounded(redis_url: str, celery_workers: CeleryWorkers) -> None:
    redis = client(redis_url)
    with RUNGS["celery"](Settings(broker_url=redis_url)) as rung:
        rung.prepare(SLOW_CELERY)
        with Sampler(lambda: int(redis.llen(CELERY_QUEUE))) as sampler:
            result = run(rung, SLOW_CELERY)
    check_verified(result, SLOW_CELERY)
    assert_held_back(sampler, broker_bound(SLOW_CELERY), SLOW_CELERY)


# Items of 4 MB, 60 of them, and one slow consumer: counted in messages, the default bound
# of 1,000 would let every item wait on the list at once, 320 MB of it; counted in bytes,
# about a dozen at a time.
BIG_ITEMS = PipelineJob(items=60, producers=2, consumers=1, work_ms=20, payload_bytes=4_000_000)


@pytest.mark.slow
def test_a_broker_queue_of_big_items_is_bounded_in_bytes(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = RunKeys.new()
    monkeypatch.setattr(RunKeys, "new", classmethod(lambda cls: keys))
    redis = client(redis_url)

    def list_bytes() -> int:
        return int(redis.memory_usage(keys.items, samples=0) or 0)

    job = BIG_ITEMS
    bound = job.broker_queue_size - 1 + job.producers * room_check_every(job.broker_queue_size)
    assert bound < job.items  # else the test would show nothing
    with RUNGS["kombu"](Settings(broker_url=redis_url)) as rung:
        rung.prepare(job)
        with (
            Sampler(lambda: int(redis.llen(keys.items)), 0.005) as messages,
            Sampler(list_bytes, 0.05) as size,
        ):
            result = run(rung, job)
    check_verified(result, job)
    assert_held_back(messages, bound, replace(job, queue_size=job.broker_queue_size))
    # What Redis holds per message: its base64, rounded up by the allocator to its size
    # class (up to a quarter more for allocations this big).
    held = job.payload_bytes * 4 // 3 * 5 // 4
    print(f"at most {messages.largest} messages, {size.largest / MB:.0f} MB, on the list")
    assert size.largest <= bound * held


class RecordingQueue(queue.Queue[Any]):
    """queue.Queue, noting its longest length: _put runs under the queue's own lock."""

    built: ClassVar[list[RecordingQueue]] = []

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self.longest = 0
        RecordingQueue.built.append(self)

    def _put(self, item: Any) -> None:
        super()._put(item)
        self.longest = max(self.longest, len(self.queue))


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_threads_queue_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    RecordingQueue.built = []
    monkeypatch.setattr(threads, "queue", types.SimpleNamespace(Queue=RecordingQueue))
    with RUNGS["threads"](Settings()) as rung:
        result = run(rung, SLOW_CONSUMER)
    check_verified(result, SLOW_CONSUMER)
    (channel,) = RecordingQueue.built
    assert channel.maxsize == QUEUE_SIZE
    # Full, and never more: every put past the bound waited for a get.
    assert channel.longest == QUEUE_SIZE


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_processes_queue_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    make_queue = forkserver.CONTEXT.Queue

    def recording_queue(maxsize: int = 0) -> Any:
        channel = make_queue(maxsize)
        built.append((maxsize, channel))
        return channel

    monkeypatch.setattr(forkserver.CONTEXT, "Queue", recording_queue)
    with RUNGS["processes"](Settings()) as rung:
        rung.prepare(SLOW_CONSUMER)
        built.clear()  # the fork server's warm-up, if any
        # The run builds its bounded channel, then its unbounded results queue.
        started = threading.Event()

        def channel_size() -> int:
            bounded = [channel for maxsize, channel in built if maxsize == QUEUE_SIZE]
            if not bounded:
                return 0
            started.set()
            # Items put by a producer and not yet taken by the consumer, across processes.
            return int(bounded[0].qsize())

        with Sampler(channel_size) as sampler:
            result = run(rung, SLOW_CONSUMER)
    check_verified(result, SLOW_CONSUMER)
    assert started.is_set()
    assert_held_back(sampler, QUEUE_SIZE, SLOW_CONSUMER)


@pytest.mark.timeout(30)
def test_peak_rss_covers_the_runs_processes() -> None:
    job = PipelineJob(items=2_000, producers=2, consumers=2)
    with RUNGS["processes"](Settings()) as rung:
        rung.prepare(job)
        with PeakRss(interval_s=0.01) as rss:
            result = run(rung, job)
    check_verified(result, job)
    peak = rss.peak()
    names = set(rss.names.values())
    assert "this process" in names
    # The producers and consumers, children of the fork server, were sampled too.
    assert "fork server child" in names, names
    assert peak.processes >= 1 + job.producers + job.consumers
    assert 0 < peak.process_mb <= peak.total_mb
    assert peak.process in names
    assert set(peak.by_name) == names
    assert max(peak.by_name.values()) == peak.process_mb


@pytest.mark.timeout(30)
def test_peak_rss_names_the_stack(celery_workers: CeleryWorkers) -> None:
    with PeakRss() as rss:
        pass
    names = set(rss.names.values())
    assert {"redis-server", "celery worker"} <= names, names
    with PeakRss(sessions=lambda: ()) as own:
        pass
    # redis-server and the workers run in sessions of their own: not a local run's.
    assert not {"redis-server", "celery worker"} & set(own.names.values())
    workers = [process.pid for process in celery_workers.processes]
    with PeakRss(sessions=lambda: workers) as celery:
        pass
    assert "celery worker" in set(celery.names.values())
    assert "redis-server" not in set(celery.names.values())


@pytest.mark.timeout(30)
def test_peak_rss_sees_a_spike_between_samples() -> None:
    with PeakRss(interval_s=60) as quiet:
        pass
    before_mb = quiet.peak().process_mb
    # No sample is taken while the 100 MB live: the thread waits 60 s between samples.
    with PeakRss(interval_s=60) as rss:
        spike = b"x" * (100 * MB)
        del spike
    assert rss.samples == 2  # one as it started, one as it ended
    assert rss.peak().process_mb >= before_mb + 90


@pytest.mark.timeout(30)
def test_peak_rss_skips_processes_that_exit() -> None:
    with PeakRss(interval_s=0.001) as rss:
        for _ in range(30):
            subprocess.run(["true"], check=True)
            rss.sample()
    assert rss.peak().process_mb > 0
