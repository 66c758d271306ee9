"""What a run hands back, and how it is checked: the sum against N(N+1)/2, the
pipeline item by item for exactly-once delivery."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from core.jobs import PipelineJob, SumJob, TicketsJob


@dataclass
class Sales:
    """What one run of buyers came to: each buyer told yes (sold) or no (turned away)."""

    sold: int = 0
    turned_away: int = 0
    left: int = 0  # what the store shows at the end
    at_once: int = 1  # buyers that ran at the same time: with one, no race can happen

    def add(self, bought: bool) -> None:
        if bought:
            self.sold += 1
        else:
            self.turned_away += 1

    def extend(self, other: Sales) -> None:
        self.sold += other.sold
        self.turned_away += other.turned_away


@dataclass
class Consumed:
    """What the consumers of a pipeline handled: every id as handled, duplicates kept."""

    ids: list[int] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    # Deliveries beyond the first of an id, which an idempotent consumer handled but
    # recorded once (at-least-once delivery, exactly-once tally).
    redelivered: int = 0
    # Ids never sent, because their producer died first: not lost, never made.
    unsent: list[range] = field(default_factory=list)
    # What went wrong on the way, each said in one phrase: a producer that died.
    deaths: list[str] = field(default_factory=list)
    # Items sent a second time by the rung, because their message vanished in transit.
    resent: int = 0
    # The broker outages the run rode through, in seconds each.
    outages_s: list[float] = field(default_factory=list)

    def record(self, item_id: int, latency_s: float) -> None:
        self.ids.append(item_id)
        self.latencies_s.append(latency_s)

    def record_all(self, handled: Sequence[tuple[int, float]]) -> None:
        """Record many (id, latency_s) at once: a batch."""
        self.ids.extend(item_id for item_id, _ in handled)
        self.latencies_s.extend(latency_s for _, latency_s in handled)

    def extend(self, other: Consumed) -> None:
        self.ids.extend(other.ids)
        self.latencies_s.extend(other.latencies_s)
        self.redelivered += other.redelivered


@dataclass(frozen=True)
class Tally:
    """Exactly-once accounting of handled ids against the ids 0..expected-1."""

    expected: int
    got: int  # distinct expected ids handled at least once
    lost: int  # expected ids sent but never handled
    duplicates: int  # extra deliveries of ids already handled
    unexpected: int  # ids no producer made
    unsent: int = 0  # expected ids never sent (their producer died) and never handled

    @property
    def exactly_once(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.unexpected == 0


def tally(expected: int, ids: Iterable[int], unsent: Iterable[range] = ()) -> Tally:
    """Count lost, duplicated and unknown ids; nothing is hidden by a set.

    An id in `unsent` that was handled anyway was on its way when its producer died:
    it counts as sent and handled.
    """
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
    never_sent = sum(seen[ids.start : ids.stop].count(0) for ids in unsent)
    return Tally(expected, got, expected - got - never_sent, duplicates, unexpected, never_sent)


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
    unsent: int = 0
    resent: int = 0
    outage_s: float = 0.0

    oversold: int = 0  # tickets: sold beyond the tickets there were
    turned_away: int = 0  # tickets: buyers told no

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
    counts = tally(job.expected, consumed.ids, consumed.unsent)
    if consumed.deaths:
        sent = job.expected - counts.unsent
        head = [
            *consumed.deaths,
            f"of {sent:,} items sent, {counts.got:,} handled and {counts.lost:,} lost; "
            f"{counts.unsent:,} never sent",
        ]
    else:
        head = [f"{counts.lost:,} lost"] if counts.lost else []
    others = ((counts.duplicates, "duplicated"), (counts.unexpected, "unknown ids"))
    problems = head + [f"{count:,} {what}" for count, what in others if count]
    rode = [
        f"{consumed.resent:,} resent after vanishing in transit" if consumed.resent else "",
        f"{consumed.redelivered:,} redelivered, each counted once" if consumed.redelivered else "",
        outages(consumed.outages_s),
    ]
    return RunResult(
        rung=rung,
        workload=job.workload,
        params=job.params(),
        seconds=seconds,
        throughput=_throughput(counts.got, seconds),
        unit=job.unit,
        verified=counts.exactly_once and not consumed.deaths,
        expected=counts.expected,
        got=counts.got,
        lost=counts.lost,
        duplicates=counts.duplicates,
        unexpected=counts.unexpected,
        redelivered=consumed.redelivered,
        latency_ms=percentiles_ms(consumed.latencies_s),
        note="; ".join([*problems, *filter(None, rode)]),
        unsent=counts.unsent,
        resent=consumed.resent,
        outage_s=round(sum(consumed.outages_s), 3),
    )


def outages(seconds: Sequence[float]) -> str:
    """The broker outages a run rode through, in words; empty when there were none."""
    if not seconds:
        return ""
    each = ", ".join(f"{s:.1f} s" for s in seconds)
    return f"rode through {len(seconds)} broker outage{'s' if len(seconds) > 1 else ''} ({each})"


def verify_tickets(rung: str, job: TicketsJob, sales: Sales, seconds: float) -> RunResult:
    """Safe: exactly min(tickets, buyers) sold, never more, every buyer answered, and the
    store agrees. Unsafe: verified when the race is seen and counted (or cannot happen)."""
    answered = sales.sold + sales.turned_away
    unanswered = job.buyers - answered
    oversold = max(0, sales.sold - job.tickets)
    # Sales the store does not show: each one overwritten by another buyer's write.
    overwritten = sales.sold - (job.tickets - sales.left)
    plural = "s" if unanswered != 1 else ""
    problems = [f"{unanswered:,} buyer{plural} never answered"] if unanswered else []
    if not job.unsafe:
        if oversold:
            problems.append(f"oversold by {oversold:,}")
        elif sales.sold != job.expected:
            problems.append(f"sold {sales.sold:,} of {job.expected:,}")
        if overwritten:
            problems.append(f"the store shows {sales.left:,} left after {sales.sold:,} sold")
        verified, note = not problems, "; ".join(problems)
    elif problems:
        verified, note = False, "; ".join(problems)
    elif oversold:
        verified, note = True, f"oversold by {oversold:,}: the race, shown"
    elif overwritten > 0:
        verified, note = (
            True,
            f"{overwritten:,} sales overwritten by another's: the race, shown "
            f"(no oversell: {job.buyers:,} buyers cannot overrun {job.tickets:,} tickets)",
        )
    elif sales.at_once == 1:
        verified = sales.sold == job.expected and overwritten == 0
        note = "unsafe, but no oversell: one buyer at a time cannot race"
    else:
        verified = False
        note = (
            "unsafe, but no oversell observed: the race did not happen this time "
            "(a longer --gap-ms or more --workers makes it likely)"
        )
    return RunResult(
        rung=rung,
        workload=job.workload,
        params=job.params(),
        seconds=seconds,
        throughput=_throughput(sales.sold, seconds),
        unit=job.unit,
        verified=verified,
        expected=job.expected,
        got=sales.sold,
        lost=unanswered,
        note=note,
        oversold=oversold,
        turned_away=sales.turned_away,
    )


def failed(rung: str, job: PipelineJob | SumJob | TicketsJob, reason: str) -> RunResult:
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
