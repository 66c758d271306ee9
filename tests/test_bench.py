"""The bench: every raw transport limit verified, and ratios paired round by round."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ladder import bench, limits
from ladder.jobs import Job, PipelineJob
from ladder.results import RunResult

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


@pytest.mark.timeout(60)
@pytest.mark.parametrize("limit", ON_BROKER, ids=lambda f: f.__name__)
def test_broker_limit_is_verified(limit: Callable[[str, Job], RunResult], redis_url: str) -> None:
    check(limit(redis_url, TINY))


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
    assert {case.name for case in selected if case.on_broker} == {
        "raw redis push/pop",
        "raw redis pipelined x100",
        "raw kombu put/get",
        "kombu pipeline",
        "celery pipeline",
    }
