"""The demo's sentences and plot, from rows built by hand: no rung runs here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.results import RunResult
from ladder.demo import Row
from ladder.findings import (
    BROKER_RUNGS,
    CHANNELS,
    IO_PIPELINE,
    NO_WORK,
    SUM,
    findings,
    short_rate,
)
from ladder.plot import plot_comparison
from ladder.registry import RUNGS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Throughputs of a real quick demo on 2 cores, rounded: numbers/s for the sum, items/s after.
FIGURES = {
    SUM: {
        "serial": 13.9e6,
        "threads": 13.2e6,
        "processes": 5.57e6,
        "thread-pool": 15.1e6,
        "process-pool": 17.1e6,
        "asyncio": 17.2e6,
        "kombu": 13.2e6,
        "celery": 14.1e6,
    },
    IO_PIPELINE: {
        "serial": 191.5,
        "threads": 1485,
        "processes": 174,
        "thread-pool": 1517,
        "process-pool": 211,
        "asyncio": 1303,
        "kombu": 74.6,
        "celery": 190,
    },
    NO_WORK: {
        "serial": 1.1e6,
        "threads": 217_000,
        "processes": 12_200,
        "thread-pool": 55_300,
        "process-pool": 4_300,
        "asyncio": 221_000,
        "kombu": 226,
        "celery": 232,
    },
}


def row(label: str, rung: str, throughput: float, verified: bool = True, note: str = "") -> Row:
    """A result as the demo would hand it back, with the params of that workload."""
    params: dict[str, Any]
    if label == SUM:
        workload, unit, params = "sum", "numbers/s", {"n": 5_000_000, "chunks": 16, "workers": 2}
    else:
        work_ms, consumers = (5, 8) if label == IO_PIPELINE else (0.0, 2)
        params = {"items": 400, "producers": 2, "consumers": consumers, "work_ms": work_ms}
        workload, unit = "pipeline", "items/s"
    result = RunResult(
        rung=rung,
        workload=workload,
        params=params,
        seconds=1.0 if throughput else 0.0,
        throughput=throughput,
        unit=unit,
        verified=verified,
        expected=400,
        got=400 if verified else 0,
        note=note,
    )
    return Row(label, result)


def matrix() -> list[Row]:
    return [row(label, rung, x) for label, rates in FIGURES.items() for rung, x in rates.items()]


def one(sentences: list[str], start: str) -> str:
    """The one sentence that starts with start."""
    (found,) = [s for s in sentences if s.startswith(start)]
    return found


@pytest.mark.timeout(10)
def test_the_full_matrix_yields_every_sentence() -> None:
    sentences = findings(matrix(), cores=2)
    assert len(sentences) == 6
    assert all(s.endswith(".") for s in sentences)


@pytest.mark.timeout(10)
def test_threads_on_the_sum_are_held_back_by_the_gil() -> None:
    rows = [row(SUM, "serial", 10e6), row(SUM, "threads", 9e6)]
    sentence = one(findings(rows, cores=2), "On the CPU-bound sum")
    assert "threads ran at 0.9x serial (9M vs 10M numbers/s)" in sentence
    assert "GIL" in sentence


@pytest.mark.timeout(10)
def test_processes_are_measured_against_the_core_count() -> None:
    rows = [row(SUM, "serial", 10e6), row(SUM, "processes", 18e6), row(SUM, "process-pool", 7e6)]
    sentence = one(findings(rows, cores=2), "On the sum")
    assert "processes ran at 1.8x serial and process-pool at 0.7x" in sentence
    assert "of a possible 2x on 2 cores: nearly every core's worth" in sentence


@pytest.mark.timeout(10)
def test_processes_slower_than_serial_are_explained() -> None:
    rows = [row(SUM, "serial", 10e6), row(SUM, "processes", 4e6)]
    sentence = one(findings(rows, cores=4), "On the sum")
    assert "0.4x serial, of a possible 4x on 4 cores" in sentence
    assert "cost more than the sum saved" in sentence


@pytest.mark.timeout(10)
def test_waits_overlap_on_the_io_pipeline() -> None:
    rows = [
        row(IO_PIPELINE, r, x) for r, x in (("serial", 190), ("threads", 1520), ("asyncio", 1330))
    ]
    sentence = one(findings(rows, cores=2), "With 5 ms of I/O per item, threads")
    assert "threads ran at 8.0x serial and asyncio at 7.0x" in sentence
    assert "8 consumers waiting at once" in sentence


@pytest.mark.timeout(10)
def test_a_message_through_the_broker_costs_more_than_a_local_hand_off() -> None:
    # 1 / 217,391 items/s is 4.6 µs; 1 / 476 items/s is 2.1 ms: 460 times as much.
    rows = [row(NO_WORK, "threads", 217_391), row(NO_WORK, "celery", 476.19)]
    sentence = one(findings(rows, cores=2), "With no work per item")
    assert "2.1 ms through Celery on Redis" in sentence
    assert "460x the 4.6 µs of a queue.Queue between threads" in sentence


@pytest.mark.timeout(10)
def test_brokers_catch_up_as_work_per_item_grows() -> None:
    rows = [
        row(IO_PIPELINE, "serial", 190),
        row(IO_PIPELINE, "threads", 1500),
        row(IO_PIPELINE, "celery", 150),
        row(NO_WORK, "celery", 500),
    ]
    first, second = findings(rows, cores=2)[-2:]
    assert "Celery on Redis reached 10% of the threads rung's throughput" in first
    assert "79% of serial's" in first
    # 2 ms of overhead beside 5 ms of work is 29%; under 10% from 9 x 2 = 18 ms of work.
    assert "~2 ms for Celery on Redis" in second
    assert "at 5 ms of work it is 29% of each task, from about 18 ms under 10%" in second


@pytest.mark.timeout(10)
def test_no_sentence_without_its_rows() -> None:
    assert findings([], cores=2) == []
    assert findings([row(label, "serial", 100) for label in FIGURES], cores=2) == []
    # A broker without a local queue to compare with, and the reverse.
    assert findings([row(NO_WORK, "celery", 230)], cores=2) == []
    assert findings([row(NO_WORK, "threads", 217_000)], cores=2) == []


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("label", "rung", "claim"),
    [
        (SUM, "threads", "On the CPU-bound sum"),
        (SUM, "serial", "On the sum,"),
        (IO_PIPELINE, "serial", "of I/O per item, threads ran"),
        (NO_WORK, "threads", "of a queue.Queue between threads"),
        (NO_WORK, "kombu", "through kombu"),
        (IO_PIPELINE, "threads", "of the threads rung's throughput"),
    ],
)
def test_no_claim_from_a_run_that_failed_verification(label: str, rung: str, claim: str) -> None:
    rows = [
        row(label, rung, r.result.throughput, verified=False, note="3 lost")
        if (r.label, r.result.rung) == (label, rung)
        else r
        for r in matrix()
    ]
    assert any(claim in s for s in findings(matrix(), cores=2))
    assert not any(claim in s for s in findings(rows, cores=2))


@pytest.mark.timeout(10)
def test_a_failed_broker_run_drops_only_the_claims_that_need_it() -> None:
    rows = [r for r in matrix() if r.result.rung != "celery"]
    rows.append(row(NO_WORK, "celery", 0.0, verified=False, note="broker gone"))
    sentences = findings(rows, cores=2)
    assert "a message costs 4.4 ms through kombu on Redis (1 / throughput)" in one(
        sentences, "With no work per item"
    )
    assert not any("Celery" in s for s in sentences)


@pytest.mark.timeout(10)
def test_the_sentences_name_known_rungs() -> None:
    assert set(CHANNELS) <= set(RUNGS)
    assert set(BROKER_RUNGS) == {"kombu", "celery"}


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (1485.3, "items/s", "1.5k items/s"),
        (19.2e6, "numbers/s", "19M numbers/s"),
        (191.5, "items/s", "192 items/s"),
        (217_282, "items/s", "217k items/s"),
        (4.6, "items/s", "4.6 items/s"),
        (0.0, "items/s", "0 items/s"),
    ],
)
def test_short_rate(value: float, unit: str, shown: str) -> None:
    assert short_rate(value, unit) == shown


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_plot_of_the_full_matrix(tmp_path: Path) -> None:
    path = tmp_path / "comparison.png"
    assert plot_comparison(matrix(), path) == path
    assert_png(path)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_plot_of_a_subset(tmp_path: Path) -> None:
    rows = [r for r in matrix() if r.label != SUM and r.result.rung in ("serial", "celery")]
    assert_png(plot_comparison(rows, tmp_path / "comparison.png"))


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_plot_with_failed_and_unverified_rows(tmp_path: Path) -> None:
    rows = [r for r in matrix() if r.result.rung != "celery"]
    rows.append(row(NO_WORK, "celery", 0.0, verified=False, note="broker gone"))
    rows.append(row(IO_PIPELINE, "celery", 150, verified=False, note="3 lost"))
    assert_png(plot_comparison(rows, tmp_path / "comparison.png"))


@pytest.mark.timeout(60)
def test_plot_of_a_panel_where_every_run_failed(tmp_path: Path) -> None:
    rows = [row(SUM, rung, 0.0, verified=False, note="no workers") for rung in ("serial", "kombu")]
    assert_png(plot_comparison(rows, tmp_path / "comparison.png"))


@pytest.mark.timeout(10)
def test_plot_needs_rows(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no rows to plot"):
        plot_comparison([], tmp_path / "comparison.png")
