"""The bench: every raw transport limit verified, ratios paired round by round, and the
peak RSS of every case recorded, against a bound in --memory."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import psutil
import pytest
import redis

from core.jobs import Job, PipelineJob
from core.results import RunResult
from core.settings import Settings
from ladder import bench, limits
from ladder.memory import Peak

TINY = PipelineJob(items=200, producers=1, consumers=1, payload_bytes=16)

LOCAL: list[Callable[[Job], RunResult]] = [
    limits.queue_threads,
    limits.multiprocessing_queue,
    limits.multiprocessing_pipe,
]
ON_BROKER: list[Callable[[str, Job], RunResult]] = [
    limits.redis_unpipelined,
    limits.redis_pipelined,
    limits.kombu_simple_queue,
]


def check(result: RunResult) -> None:
    assert result.verified, result.note
    assert result.got == TINY.items
    assert result.throughput > 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("limit", LOCAL, ids=lambda f: f.__name__)
def test_local_limit_is_verified(limit: Callable[[Job], RunResult]) -> None:
    check(limit(TINY))


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("limit", ON_BROKER, ids=lambda f: f.__name__)
def test_broker_limit_is_verified(limit: Callable[[str, Job], RunResult], redis_url: str) -> None:
    check(limit(redis_url, TINY))


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_the_celery_no_op_limit_is_verified(redis_url: str) -> None:
    check(limits.celery_noop(redis_url, TINY))


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_the_celery_no_op_limit_ends_when_its_worker_dies(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait for the worker's own count ends once the count stops moving: a killed
    worker makes an unverified result, not a wait without end."""
    monkeypatch.setattr(limits, "NOOP_STALL_S", 3.0)
    me = psutil.Process()

    def kill_the_worker() -> None:
        """The worker and its pool, 1 s after the tasks began to arrive: mid-run."""
        broker = redis.Redis.from_url(redis_url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers = [p for p in me.children() if "celery" in " ".join(p.cmdline())]
            if workers and broker.llen(limits.NOOP_QUEUE):
                time.sleep(1)
                for worker in workers:
                    for process in [*worker.children(recursive=True), worker]:
                        with contextlib.suppress(psutil.Error):
                            process.kill()
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_the_worker, daemon=True)
    killer.start()
    outcome = limits.celery_noop(redis_url, replace(TINY, items=20_000))
    killer.join(timeout=5)
    assert not outcome.verified
    assert 0 <= outcome.got < 20_000


def result(throughput: float) -> RunResult:
    return RunResult(
        rung="test",
        workload="pipeline",
        params={},
        seconds=1.0,
        throughput=throughput,
        unit="items/s",
        verified=True,
        expected=1,
        got=1,
    )


def measured(case: bench.Case, throughputs: list[float]) -> bench.Measured:
    return bench.Measured(case, [result(t) for t in throughputs])


@pytest.mark.timeout(10)
def test_rows_pair_ratios_by_round() -> None:
    limit = bench.Case("limit", "raw", TINY, raw=limits.queue_threads)
    fast = bench.Case("fast", "threads", TINY, "limit", bench.Goal(0.5))
    slow = bench.Case("slow", "threads", TINY, "limit", bench.Goal(0.9))
    # Round 2 is a slow spell for both: paired, its ratio is as good as the others.
    table = bench.rows(
        [
            measured(limit, [100.0, 10.0, 100.0]),
            measured(fast, [60.0, 6.0, 70.0]),
            measured(slow, [80.0, 8.0, 90.0]),
        ]
    )
    by_name = {row["name"]: row for row in table}
    assert by_name["limit"]["ratio"] is None and by_name["limit"]["met"] is None
    assert by_name["fast"]["ratio"] == pytest.approx(0.6)
    assert by_name["fast"]["met"] is True
    assert by_name["fast"]["limit_throughput"] == 100.0
    assert by_name["fast"]["throughput_min"] == 6.0
    assert by_name["slow"]["ratio"] == pytest.approx(0.8)
    assert by_name["slow"]["met"] is False
    assert by_name["slow"]["goal"] == ">= 0.9x"


@pytest.mark.timeout(10)
def test_every_limit_named_is_a_case() -> None:
    selected = bench.cases(quick=True)
    names = {case.name for case in selected}
    assert all(case.limit in names for case in selected if case.limit)
    assert all(case.runs_of in names for case in selected if case.runs_of)
    assert {case.name for case in selected if case.on_broker} == {
        "raw redis push/pop",
        "raw redis pipelined x100",
        "raw kombu put/get",
        "raw celery no-op",
        "raw celery round trip",
        "celery pipeline paced",
        "celery pipeline, default worker",
        "celery topology vs default",
        "kombu pipeline",
        "celery pipeline",
        "celery sum",
        "kombu pipeline batch 100",
        "celery pipeline batch 100",
        "kombu batch 100 vs redis",
        "celery batch 100 vs redis",
    }


@pytest.mark.timeout(10)
def test_a_case_read_against_a_second_limit_reuses_the_runs_of_another() -> None:
    selected = {case.name: case for case in bench.cases(quick=True)}
    again = selected["celery batch 100 vs redis"]
    assert again.runs_of == "celery pipeline batch 100"
    assert again.job == selected["celery pipeline batch 100"].job


@pytest.mark.timeout(10)
def test_rows_hold_the_largest_peak_against_a_memory_goal() -> None:
    bound = bench.MemoryGoal(300)
    under = bench.Case("under", "threads", TINY, goal=bound)
    over = bench.Case("over", "threads", TINY, goal=bound)
    table = bench.rows(
        [
            bench.Measured(
                under,
                [result(100.0), result(90.0)],
                [
                    Peak(120.0, "this process", 200.0, 3, {"this process": 120.0, "redis": 9.0}),
                    Peak(150.0, "fork server child", 180.0, 3, {"fork server child": 150.0}),
                ],
            ),
            bench.Measured(over, [result(100.0)], [Peak(301.0, "celery worker", 400.0, 5)]),
        ]
    )
    by_name = {row["name"]: row for row in table}
    assert by_name["under"]["peak_rss_mb"] == 150.0
    assert by_name["under"]["peak_rss_process"] == "fork server child"
    assert by_name["under"]["peak_rss_total_mb"] == 200.0
    assert by_name["under"]["peak_rss_by_process"] == {
        "fork server child": 150.0,
        "this process": 120.0,
        "redis": 9.0,
    }
    assert by_name["under"]["goal"] == "<= 300 MB per process"
    assert by_name["under"]["met"] is True
    assert by_name["under"]["ratio"] is None
    assert by_name["over"]["met"] is False


@pytest.mark.timeout(10)
def test_memory_cases_are_long_and_bounded() -> None:
    selected = bench.memory_cases()
    items = {case.rung: case.job.items for case in selected}
    assert items == {
        "serial": 1_000_000,
        "threads": 1_000_000,
        "processes": 1_000_000,
        "asyncio": 1_000_000,
        "thread-pool": 1_000_000,
        "process-pool": 1_000_000,
        "kombu": 200_000,
        "celery": 200_000,
    }
    assert all(case.goal == bench.MEMORY_GOAL for case in selected)
    assert {case.rung for case in selected if case.on_broker} == {"kombu", "celery"}


@pytest.mark.timeout(30)
def test_every_run_measured_has_its_peak_rss() -> None:
    cases = [
        bench.Case("threads tiny", "threads", TINY, goal=bench.MEMORY_GOAL),
        bench.Case("raw queue.Queue", "raw", TINY, raw=limits.queue_threads),
    ]
    measured = bench.measure(cases, 2, Settings(), lambda name: None)
    assert [len(m.peaks) for m in measured] == [2, 2]
    for row in bench.rows(measured):
        assert row["verified"] and row["lost"] == 0
        assert 0 < row["peak_rss_mb"] <= row["peak_rss_total_mb"]
        assert row["peak_rss_process"] == "this process"
    assert bench.rows(measured)[0]["met"] is True


def test_a_latency_case_compares_the_p50_lower_being_better() -> None:
    selected = {case.name: case for case in bench.cases(quick=True)}
    paced = selected["celery pipeline paced"]
    assert (paced.compare, paced.limit) == ("latency p50", "raw celery round trip")
    assert str(paced.goal) == "<= 1.2x"
    assert paced.goal is not None and paced.goal.met(0.6) and not paced.goal.met(1.3)

    def timed(p50_ms: float, rate: float) -> RunResult:
        latency = {"p50": p50_ms, "p99": 2 * p50_ms}
        return RunResult("x", "pipeline", {}, 1.0, rate, "items/s", True, 1, 1, latency_ms=latency)

    fast, slow = timed(1.0, rate=10.0), timed(2.0, rate=99.0)
    assert bench.compared(paced, fast) / bench.compared(paced, slow) == 0.5


def test_the_default_worker_case_runs_the_celery_rung_on_celerys_defaults() -> None:
    selected = {case.name: case for case in bench.cases(quick=True)}
    default = selected["celery pipeline, default worker"]
    assert default.workers is not None and default.workers == limits.DEFAULT_WORKER
    assert (default.workers.instances, default.workers.pool) == (1, "prefork")
    against = selected["celery topology vs default"]
    assert (against.runs_of, against.limit) == ("celery pipeline", default.name)


@pytest.mark.timeout(10)
def test_a_fastest_of_case_takes_the_runs_of_the_highest_median() -> None:
    def case(name: str) -> bench.Case:
        return bench.Case(name, "raw", TINY, raw=lambda job: pytest.fail("not run"))

    slow, fast = bench.Measured(case("slow"), []), bench.Measured(case("fast"), [])
    slow.runs = [result(100), result(900)]  # median 500, the fastest single run
    fast.runs = [result(600), result(700)]  # median 650
    either = bench.Case("fastest", "peer", TINY, fastest_of=("slow", "fast"))
    fastest = bench.Measured(either, [])
    bench.share_runs([slow, fast, fastest])
    assert (fastest.source, fastest.runs) == ("fast", fast.runs)
