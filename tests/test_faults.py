"""Faults injected for real: a Celery worker and a kombu consumer killed with SIGKILL
mid-run. What the dead one held unacknowledged comes back to the queue after the
visibility timeout, and what it handled but had not acknowledged is handled again and
counted once (at-least-once delivery, an exactly-once tally).

One message can still be lost, and these tests show how many: kombu's Redis transport
takes a message off the list with BRPOP and only then, in the consumer, records it as
unacknowledged. A consumer killed between the two (a Celery worker keeps a BRPOP
pending while it works, so its next message may already be on the way) takes that one
message with it. The tests assert that at most that one is lost, never more.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from consumers.celery_workers import CeleryWorkers, Topology
from ladder.broker import client
from ladder.jobs import PipelineJob
from ladder.results import RunResult
from ladder.runner import run
from ladder.settings import Settings
from ladder.stack import RedisServer
from producers.celery_producer import CeleryRung
from producers.kombu_producer import KombuRung

# Short, so that a dead consumer's messages come back within the test.
VISIBILITY_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def fault_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of these tests' own: the workers they kill serve no other test."""
    server = RedisServer(tmp_path_factory.mktemp("fault-redis"))
    try:
        yield server.start()
    finally:
        server.stop()


def settings(url: str) -> Settings:
    return Settings(broker_url=url, result_backend=url, visibility_timeout_s=VISIBILITY_TIMEOUT_S)


def handled_so_far(url: str) -> int:
    """Items handled in the run under way (this Redis serves one run at a time)."""
    redis = client(url)
    return sum(int(redis.llen(key)) for key in redis.scan_iter(match="ladder:*:handled"))


def run_and_kill(url: str, start: Callable[[], RunResult], kill: Callable[[], None]) -> RunResult:
    """Start the run in a thread, kill once 20% of it is handled, return its result."""
    with ThreadPoolExecutor(1) as pool:
        future: Future[RunResult] = pool.submit(start)
        deadline = time.monotonic() + 60
        while handled_so_far(url) < 300:
            assert not future.done(), future.result()
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.02)
        kill()
        return future.result(timeout=120)


# The message whose BRPOP was in flight when the consumer died (see the module's text).
IN_FLIGHT = 1


def check_at_most_in_flight_lost(result: RunResult, job: PipelineJob) -> None:
    assert result.lost <= IN_FLIGHT, result.note
    assert result.got + result.lost == job.items
    assert (result.duplicates, result.unexpected) == (0, 0)
    print(f"{result.rung}: lost {result.lost}, redelivered {result.redelivered}")


@pytest.mark.timeout(150)
def test_a_celery_worker_killed_mid_run_loses_at_most_one_in_flight(
    fault_redis: str, tmp_path: Path
) -> None:
    workers = CeleryWorkers(
        fault_redis,
        fault_redis,
        Topology(instances=3, pool="threads", concurrency=2),
        tmp_path,
        VISIBILITY_TIMEOUT_S,
    )
    job = PipelineJob(items=1_500, producers=2, consumers=6, work_ms=5)
    try:
        workers.start()
        victim = workers.processes[0]

        def kill() -> None:
            os.killpg(victim.pid, signal.SIGKILL)

        with CeleryRung(settings(fault_redis)) as rung:
            result = run_and_kill(fault_redis, lambda: run(rung, job), kill)
        assert victim.wait(5) == -signal.SIGKILL
        check_at_most_in_flight_lost(result, job)
    finally:
        workers.stop()


@pytest.mark.timeout(150)
def test_a_kombu_consumer_killed_mid_run_loses_at_most_one_in_flight(fault_redis: str) -> None:
    job = PipelineJob(items=1_500, producers=2, consumers=3, work_ms=5)

    def kill() -> None:
        # A consumer of the run, found by the name its Redis connection carries.
        names = [c["name"] for c in client(fault_redis).client_list()]
        pids = [int(n.rsplit("-", 1)[1]) for n in names if n.startswith("ladder-kombu-consumer-")]
        assert pids, names
        os.kill(pids[0], signal.SIGKILL)

    with KombuRung(settings(fault_redis)) as rung:
        result = run_and_kill(fault_redis, lambda: run(rung, job), kill)
    check_at_most_in_flight_lost(result, job)
