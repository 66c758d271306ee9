"""Verification: lost, duplicated and unknown ids are each counted, never hidden."""

from __future__ import annotations

import math

import pytest

from core.jobs import PipelineJob, SumJob
from core.results import Consumed, percentiles_ms, tally, verify_pipeline, verify_sum


def consumed(ids: list[int], latency_s: float = 0.001) -> Consumed:
    result = Consumed()
    for item_id in ids:
        result.record(item_id, latency_s)
    return result


def test_tally_exactly_once() -> None:
    counts = tally(5, [4, 2, 0, 1, 3])
    assert (counts.expected, counts.got, counts.lost) == (5, 5, 0)
    assert (counts.duplicates, counts.unexpected) == (0, 0)
    assert counts.exactly_once


def test_tally_counts_a_lost_item() -> None:
    counts = tally(5, [0, 1, 3, 4])
    assert (counts.got, counts.lost, counts.duplicates, counts.unexpected) == (4, 1, 0, 0)
    assert not counts.exactly_once


def test_tally_counts_a_duplicated_item() -> None:
    counts = tally(5, [0, 1, 2, 2, 3, 4])
    assert (counts.got, counts.lost, counts.duplicates, counts.unexpected) == (5, 0, 1, 0)
    assert not counts.exactly_once


def test_tally_counts_every_extra_delivery() -> None:
    counts = tally(3, [0, 1, 2, 1, 1, 1])
    assert (counts.got, counts.duplicates) == (3, 3)


@pytest.mark.parametrize("unknown", [5, 6, 1_000, -1])
def test_tally_counts_an_unknown_id(unknown: int) -> None:
    counts = tally(5, [0, 1, 2, 3, 4, unknown])
    assert (counts.got, counts.lost, counts.duplicates, counts.unexpected) == (5, 0, 0, 1)
    assert not counts.exactly_once


def test_tally_counts_a_non_int_id_as_unknown() -> None:
    counts = tally(2, [0, 1, "1"])  # type: ignore[list-item]
    assert (counts.got, counts.unexpected) == (2, 1)


def test_tally_counts_all_three_at_once() -> None:
    # 2 and 4 lost, 0 delivered twice, 7 made by no producer.
    counts = tally(5, [0, 0, 1, 3, 7])
    assert (counts.got, counts.lost, counts.duplicates, counts.unexpected) == (3, 2, 1, 1)


def test_tally_of_nothing() -> None:
    counts = tally(4, [])
    assert (counts.got, counts.lost, counts.duplicates, counts.unexpected) == (0, 4, 0, 0)


def test_verify_pipeline_exactly_once() -> None:
    job = PipelineJob(items=4, producers=2, consumers=2)
    result = verify_pipeline("threads", job, consumed([3, 1, 0, 2], 0.002), seconds=2.0)
    assert result.verified
    assert (result.rung, result.workload, result.unit) == ("threads", "pipeline", "items/s")
    assert (result.expected, result.got, result.lost, result.duplicates) == (4, 4, 0, 0)
    assert result.unexpected == 0
    assert result.throughput == 2.0
    assert result.latency_ms == {"p50": 2.0, "p99": 2.0}
    assert result.params == job.params()
    assert result.note == ""


@pytest.mark.parametrize(
    ("ids", "field", "word"),
    [
        ([0, 1, 3], "lost", "1 lost"),
        ([0, 1, 2, 3, 1], "duplicates", "1 duplicated"),
        ([0, 1, 2, 3, 4], "unexpected", "1 unknown ids"),
    ],
    ids=["lost", "duplicated", "unknown"],
)
def test_verify_pipeline_counts_each_fault(ids: list[int], field: str, word: str) -> None:
    job = PipelineJob(items=4, producers=1, consumers=1)
    result = verify_pipeline("threads", job, consumed(ids), seconds=1.0)
    assert not result.verified
    assert getattr(result, field) == 1
    assert word in result.note
    assert result.lost + result.duplicates + result.unexpected == 1


def test_verify_pipeline_all_faults_together() -> None:
    job = PipelineJob(items=5, producers=1, consumers=1)
    result = verify_pipeline("processes", job, consumed([0, 0, 1, 3, 7]), seconds=1.0)
    assert not result.verified
    assert (result.expected, result.got) == (5, 3)
    assert (result.lost, result.duplicates, result.unexpected) == (2, 1, 1)
    assert result.note == "2 lost; 1 duplicated; 1 unknown ids"
    assert result.throughput == 3.0  # distinct items handled, not deliveries


def test_verify_pipeline_without_latencies() -> None:
    job = PipelineJob(items=1, producers=1, consumers=1)
    result = verify_pipeline("serial", job, Consumed(), seconds=1.0)
    assert not result.verified
    assert result.lost == 1
    assert result.latency_ms is None


def test_verify_sum_right() -> None:
    job = SumJob(n=100, chunks=4, workers=2)
    result = verify_sum("serial", job, 5_050, seconds=0.5)
    assert result.verified
    assert (result.expected, result.got) == (5_050, 5_050)
    assert (result.workload, result.unit) == ("sum", "numbers/s")
    assert result.throughput == 200.0
    assert result.latency_ms is None
    assert result.note == ""


@pytest.mark.parametrize("total", [5_049, 5_051, 0, -5_050])
def test_verify_sum_wrong_is_not_verified(total: int) -> None:
    job = SumJob(n=100, chunks=4, workers=2)
    result = verify_sum("serial", job, total, seconds=0.5)
    assert not result.verified
    assert (result.expected, result.got) == (5_050, total)
    assert result.note == f"sum is off by {total - 5_050:,}"


def test_verify_sum_in_no_time() -> None:
    result = verify_sum("serial", SumJob(n=1, chunks=1, workers=1), 1, seconds=0.0)
    assert result.verified
    assert math.isinf(result.throughput)


def test_percentiles_of_nothing() -> None:
    assert percentiles_ms([]) is None


def test_percentiles_one_to_a_hundred_ms() -> None:
    latencies_s = [ms / 1000 for ms in range(100, 0, -1)]  # unsorted on purpose
    assert percentiles_ms(latencies_s) == {"p50": 50.0, "p99": 99.0}


def test_percentiles_one_to_ten_ms() -> None:
    # Nearest rank: p50 is the 5th of 10, p99 the 10th.
    latencies_s = [0.003, 0.001, 0.010, 0.002, 0.007, 0.005, 0.004, 0.009, 0.006, 0.008]
    assert percentiles_ms(latencies_s) == {"p50": 5.0, "p99": 10.0}


def test_percentiles_of_one() -> None:
    assert percentiles_ms([0.0125]) == {"p50": 12.5, "p99": 12.5}


def test_percentiles_see_the_tail() -> None:
    latencies_s = [0.001] * 98 + [0.5, 2.0]
    assert percentiles_ms(latencies_s) == {"p50": 1.0, "p99": 500.0}


def test_percentiles_round_to_microseconds() -> None:
    assert percentiles_ms([0.0012344]) == {"p50": 1.234, "p99": 1.234}
