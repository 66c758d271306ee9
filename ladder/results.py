"""What a run hands back, and how it is checked: the sum against N(N+1)/2, the
pipeline item by item for exactly-once delivery."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ladder.jobs import PipelineJob, SumJob


@dataclass
class Consumed:
    """What the consumers of a pipeline handled: every id as handled, duplicates kept."""

    ids: list[int] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    # Deliveries beyond the first of an id, which an idempotent consumer handled but
    # recorded once (at-least-once delivery, exactly-once tally).
    redelivered: int = 0

    def record(self, item_id: int, latency_s: float) -> None:
        self.ids.append(item_id)
        self.latencies_s.append(latency_s)

    def extend(self, other: Consumed) -> None:
        self.ids.extend(other.ids)
        self.latencies_s.extend(other.latencies_s)
        self.redelivered += other.redelivered


@dataclass(frozen=True)
class Tally:
    """Exactly-once accounting of handled ids against the ids 0..expected-1."""

    expected: int
    got: int  # distinct expected ids handled at least once
    lost: int  # expected ids never handled
    duplicates: int  # extra deliveries of ids already handled
    unexpected: int  # ids no producer made

    @property
    def exactly_once(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.unexpected == 0


def tally(expected: int, ids: Iterable[int]) -> Tally:
    """Count lost, duplicated and unknown ids; nothing is hidden by a set."""
    seen = bytearray(expected)
    duplicates = unexpected = 0
    for item_id in ids:
        if not isinstance(item_id, int) or not 0 <= item_id < expected:
            unexpected += 1
        elif seen[item_id]:
            duplicates += 1
        else:
            seen[item_id] = 1
    got = expected - seen.count(0)
    return Tally(expected, got, expected - got, duplicates, unexpected)


def percentiles_ms(latencies_s: Sequence[float]) -> dict[str, float] | None:
    """p50 and p99 by nearest rank, in milliseconds; None when nothing was measured."""
    if not latencies_s:
        return None
    ordered = sorted(latencies_s)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000

    return {"p50": round(rank(0.50), 3), "p99": round(rank(0.99), 3)}


@dataclass(frozen=True)
class RunResult:
    """One run of one workload on one rung, verified."""

    rung: str
    workload: str
    params: dict[str, Any]
    seconds: float
    throughput: float
    unit: str
    verified: bool
    expected: int
    got: int
    lost: int = 0
    duplicates: int = 0
    unexpected: int = 0
    redelivered: int = 0
    latency_ms: dict[str, float] | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _throughput(size: int, seconds: float) -> float:
    return size / seconds if seconds > 0 else math.inf


def verify_sum(rung: str, job: SumJob, total: int, seconds: float) -> RunResult:
    verified = total == job.expected
    return RunResult(
        rung=rung,
        workload=job.workload,
        params=job.params(),
        seconds=seconds,
        throughput=_throughput(job.size, seconds),
        unit=job.unit,
        verified=verified,
        expected=job.expected,
        got=total,
        note="" if verified else f"sum is off by {total - job.expected:,}",
    )


def verify_pipeline(rung: str, job: PipelineJob, consumed: Consumed, seconds: float) -> RunResult:
    counts = tally(job.expected, consumed.ids)
    problems = [
        f"{count:,} {what}"
        for count, what in (
            (counts.lost, "lost"),
            (counts.duplicates, "duplicated"),
            (counts.unexpected, "unknown ids"),
        )
        if count
    ]
    return RunResult(
        rung=rung,
        workload=job.workload,
        params=job.params(),
        seconds=seconds,
        throughput=_throughput(counts.got, seconds),
        unit=job.unit,
        verified=counts.exactly_once,
        expected=counts.expected,
        got=counts.got,
        lost=counts.lost,
        duplicates=counts.duplicates,
        unexpected=counts.unexpected,
        redelivered=consumed.redelivered,
        latency_ms=percentiles_ms(consumed.latencies_s),
        note="; ".join(
            [*problems, f"{consumed.redelivered:,} redelivered, each counted once"]
            if consumed.redelivered
            else problems
        ),
    )


def failed(rung: str, job: PipelineJob | SumJob, reason: str) -> RunResult:
    """A run that could not finish, kept in the report with its reason."""
    return RunResult(
        rung=rung,
        workload=job.workload,
        params=job.params(),
        seconds=0.0,
        throughput=0.0,
        unit=job.unit,
        verified=False,
        expected=job.expected,
        got=0,
        note=reason,
    )
