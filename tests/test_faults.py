"""Faults injected for real, mid-run: a Celery worker and a kombu consumer killed with
SIGKILL, the Redis server stopped and started again, a producer killed with SIGKILL.

- A dead consumer's unacknowledged messages come back after the visibility timeout;
  what it handled but had not acknowledged is handled again and counted once
  (at-least-once delivery, an exactly-once tally).
- kombu's Redis transport takes a message off the list with BRPOP and only then, in
  the consumer, files it as unacknowledged. A consumer killed between the two (a Celery
  worker keeps a BRPOP pending while it works, so its next message may already be on
  the way) takes that message with it. The rung sends what is still missing again once
  nothing has moved for longer than the visibility timeout, so nothing is lost.
- A restarted Redis (append-only file on) comes back with its queues; producers,
  consumers and workers reconnect on their own, and the run reports the outage.
- A dead producer's unsent items are not lost but never made: the run says how many
  were sent and handled, and fails without waiting for the rest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from broker_ipc.base import POLL_S
from broker_ipc.celery_rung import CeleryRung
from broker_ipc.kombu_rung import KombuRung
from core.broker import client
from core.celery_workers import CeleryWorkers, Topology
from core.jobs import PipelineJob
from core.results import RunResult
from core.settings import Settings
from core.stack import RedisServer
from core.work import CPU_QUEUE, IO_QUEUE
from ladder.runner import run
from tests.support.redis_servers import RedisServers
from tests.support.watch import poll_until, wait_for

# Each fault needs a run well under way, then the time to recover from it.
pytestmark = pytest.mark.slow

# Short, so that a dead consumer's messages come back within the test.
VISIBILITY_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def fault_redis(redis_servers: RedisServers) -> Iterator[str]:
    """A Redis of these tests' own: the workers they kill serve no other test."""
    with redis_servers.running("fault-redis") as server:
        yield server.url


def settings(url: str) -> Settings:
    return Settings(broker_url=url, result_backend=url, visibility_timeout_s=VISIBILITY_TIMEOUT_S)


def handled_so_far(url: str) -> int:
    """Items handled in the run under way (this Redis serves one run at a time)."""
    redis = client(url)
    return sum(int(redis.hlen(key)) for key in redis.scan_iter(match="ladder:*:deliveries"))


def in_flight(url: str) -> int:
    """Messages sent and not yet handled: on the queues, and held unacknowledged."""
    redis = client(url)
    queues = [CPU_QUEUE, IO_QUEUE, *redis.scan_iter(match="ladder:*:items")]
    return sum(int(redis.llen(q)) for q in queues) + int(redis.hlen("unacked"))


def run_with_fault(
    url: str, start: Callable[[], RunResult], fault: Callable[[], None], what: str
) -> RunResult:
    """Start the run in a thread, inject the fault once 300 items are handled, return
    the run's result. Prints one row of the README's reliability table."""
    with ThreadPoolExecutor(1) as pool:
        future: Future[RunResult] = pool.submit(start)

        def still_going() -> None:
            assert not future.done(), future.result()

        poll_until(
            lambda: handled_so_far(url) >= 300, 60, "the run never got going", still_going, 0.02
        )
        held = in_flight(url)
        fault()
        result = future.result(timeout=150)
    print(
        f"\n| {what} | {result.rung} | {result.expected:,} | {held:,} | {result.lost:,} "
        f"| {result.redelivered:,} | {result.resent:,} | {result.unsent:,} "
        f"| {'verified' if result.verified else 'failed'}: {result.note or 'clean'} |"
    )
    return result


def check_nothing_lost(result: RunResult) -> None:
    assert result.verified, result.note
    assert (result.lost, result.duplicates, result.unexpected) == (0, 0, 0), result.note
    assert result.got == result.expected


def celery_workers(url: str, folder: Path) -> CeleryWorkers:
    topology = Topology(instances=3, pool="threads", concurrency=2)
    return CeleryWorkers(url, url, topology, folder, VISIBILITY_TIMEOUT_S)


@pytest.mark.timeout(200)
def test_a_celery_worker_killed_mid_run_loses_nothing(fault_redis: str, tmp_path: Path) -> None:
    workers = celery_workers(fault_redis, tmp_path)
    job = PipelineJob(items=1_500, producers=2, consumers=6, work_ms=5)
    try:
        workers.start()
        victim = workers.processes[0]

        def kill() -> None:
            os.killpg(victim.pid, signal.SIGKILL)

        with CeleryRung(settings(fault_redis)) as rung:
            result = run_with_fault(
                fault_redis, lambda: run(rung, job), kill, "worker killed (SIGKILL)"
            )
        assert victim.wait(5) == -signal.SIGKILL
        check_nothing_lost(result)
    finally:
        workers.stop()


def kill_one(url: str, kind: str) -> None:
    """SIGKILL one process of the run, found by the name its Redis connection carries."""
    names = [c["name"] for c in client(url).client_list()]
    pids = sorted({int(n.rsplit("-", 1)[1]) for n in names if n.startswith(f"ladder-{kind}-")})
    assert pids, names
    os.kill(pids[0], signal.SIGKILL)


@pytest.mark.timeout(200)
def test_a_kombu_consumer_killed_mid_run_loses_nothing(fault_redis: str) -> None:
    job = PipelineJob(items=1_500, producers=2, consumers=3, work_ms=5)
    with KombuRung(settings(fault_redis)) as rung:
        result = run_with_fault(
            fault_redis,
            lambda: run(rung, job),
            lambda: kill_one(fault_redis, "kombu-consumer"),
            "consumer killed (SIGKILL)",
        )
    check_nothing_lost(result)


# How long the broker stays down: long enough that every client notices.
DOWN_S = 2.0
# The parent times an outage from its first failed poll to its first answered one: each
# end up to a poll late, so the time it reports may fall that much short of DOWN_S.
REPORTED_DOWN_S = DOWN_S - POLL_S


@pytest.fixture
def restartable_redis(redis_servers: RedisServers) -> Iterator[RedisServer]:
    """A Redis with its append-only file on, for one test to stop and start again."""
    with redis_servers.running("restartable-redis", appendonly=True) as server:
        yield server


def restart(server: RedisServer) -> Callable[[], None]:
    def fault() -> None:
        server.stop()  # SIGTERM: Redis writes its append-only file and exits
        time.sleep(DOWN_S)
        server.start()  # the same port, password and folder: the data comes back

    return fault


@pytest.mark.timeout(200)
def test_redis_restarted_mid_run_kombu_loses_nothing(restartable_redis: RedisServer) -> None:
    url = restartable_redis.url
    job = PipelineJob(items=1_500, producers=2, consumers=3, work_ms=2)
    with KombuRung(settings(url)) as rung:
        result = run_with_fault(
            url, lambda: run(rung, job), restart(restartable_redis), "Redis restarted"
        )
    check_nothing_lost(result)
    assert result.outage_s >= REPORTED_DOWN_S, result.note


@pytest.mark.timeout(200)
def test_redis_restarted_mid_run_celery_loses_nothing(
    restartable_redis: RedisServer, tmp_path: Path
) -> None:
    url = restartable_redis.url
    workers = celery_workers(url, tmp_path)
    job = PipelineJob(items=1_500, producers=2, consumers=6, work_ms=2)
    try:
        workers.start()
        with CeleryRung(settings(url)) as rung:
            result = run_with_fault(
                url, lambda: run(rung, job), restart(restartable_redis), "Redis restarted"
            )
        check_nothing_lost(result)
        assert result.outage_s >= REPORTED_DOWN_S, result.note
        # Workers that crashed on the way (see core/celery_workers.py) were restarted.
        print(f"celery workers restarted: {workers.restarts}")
        assert all(w.poll() is None for w in workers.processes)
    finally:
        workers.stop()


def check_producer_death_reported(result: RunResult, job: PipelineJob) -> None:
    assert not result.verified
    assert "producer-" in result.note and "killed by SIGKILL" in result.note, result.note
    # Everything the dead producer sent was handled; the rest was never made.
    assert result.lost == 0, result.note
    assert result.unsent > 0, result.note
    assert result.got + result.unsent == job.items, result.note
    # The run did not wait for items that will never come: nothing was resent.
    assert result.resent == 0, result.note


@pytest.mark.timeout(200)
def test_a_kombu_producer_killed_mid_run_is_reported(fault_redis: str) -> None:
    # Slow producers, so that the one killed has items left to send.
    job = PipelineJob(items=3_000, producers=2, consumers=2, produce_ms=1)
    with KombuRung(settings(fault_redis)) as rung:
        result = run_with_fault(
            fault_redis,
            lambda: run(rung, job),
            lambda: kill_one(fault_redis, "producer"),
            "producer killed (SIGKILL)",
        )
    check_producer_death_reported(result, job)


@pytest.mark.timeout(200)
def test_a_celery_producer_killed_mid_run_is_reported(fault_redis: str, tmp_path: Path) -> None:
    workers = celery_workers(fault_redis, tmp_path)
    job = PipelineJob(items=3_000, producers=2, consumers=6, produce_ms=1)
    try:
        workers.start()
        with CeleryRung(settings(fault_redis)) as rung:
            result = run_with_fault(
                fault_redis,
                lambda: run(rung, job),
                lambda: kill_one(fault_redis, "producer"),
                "producer killed (SIGKILL)",
            )
        check_producer_death_reported(result, job)
    finally:
        workers.stop()


@pytest.mark.timeout(200)
def test_a_frozen_worker_that_wakes_after_its_run_makes_none_of_its_keys(
    fault_redis: str, tmp_path: Path
) -> None:
    """A Celery worker stopped (SIGSTOP) mid-run: the others finish the run, which ends
    and cleans up; woken (SIGCONT), the worker handles what it held, and records nothing:
    its run is over, and none of the run's keys comes back."""
    workers = celery_workers(fault_redis, tmp_path)
    job = PipelineJob(items=1_500, producers=2, consumers=6, work_ms=5)
    r = client(fault_redis)
    try:
        workers.start()
        frozen = workers.processes[0]
        with CeleryRung(settings(fault_redis)) as rung:
            result = run_with_fault(
                fault_redis,
                lambda: run(rung, job),
                lambda: os.killpg(frozen.pid, signal.SIGSTOP),
                "worker frozen (SIGSTOP)",
            )
        check_nothing_lost(result)
        assert list(r.scan_iter(match="ladder:*")) == []
        os.killpg(frozen.pid, signal.SIGCONT)
        # It works through what it held: its task, its prefetched messages.
        assert wait_for(lambda: r.llen(IO_QUEUE) == 0 and r.hlen("unacked") == 0, 30)
        time.sleep(2 * VISIBILITY_TIMEOUT_S)
        assert frozen.poll() is None  # it lived on, and did its work
        assert list(r.scan_iter(match="ladder:*")) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(workers.processes[0].pid, signal.SIGCONT)
        workers.stop()
