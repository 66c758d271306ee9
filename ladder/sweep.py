"""`ladder bench --sweep`: where the broker rungs catch up with the local ones.

    work per item 0, 1, 10, 100 ms (8 consumers)  x  threads, processes, kombu, celery
    consumers 1, 2, 4, 8 (10 ms of work per item)  x  the same rungs

The work is I/O-bound (a sleep), so a consumer can wait while another works and the
ideal throughput is consumers x 1000 / work_ms. A broker message costs a millisecond or
so: it hides behind long enough work, and the sweep says from which work size and how
many consumers each rung gets within reach of that ideal.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.table import Table

from core.jobs import PipelineJob
from core.rung import Rung
from core.settings import Settings
from core.stack import Stack
from ladder.findings import short, sig
from ladder.registry import info
from ladder.runner import open_rung, run

RUNGS = ("threads", "processes", "kombu", "celery")
WORK_MS = (0.0, 1.0, 10.0, 100.0)
CONSUMERS = (1, 2, 4, 8)
WORK_CONSUMERS = 8  # consumers in the work sweep
CONSUMERS_WORK_MS = 10.0  # work per item in the consumers sweep
# Within this share of the threads rung's throughput, a rung has caught up with it.
NEAR = 0.8
# Each run lasts about this long at the ideal rate, and moves at least MIN_ITEMS.
RUN_S, QUICK_RUN_S = 2.0, 0.3
MIN_ITEMS, MAX_ITEMS = 40, 2_000


@dataclass(frozen=True)
class Point:
    """One rung on one job of a sweep."""

    sweep: str  # "work_ms" or "consumers"
    x: float  # the swept value
    rung: str
    throughput: float
    ideal: float | None  # consumers x 1000 / work_ms; None with no work
    verified: bool
    note: str


def items_for(consumers: int, work_ms: float, quick: bool) -> int:
    """Enough items for a run of about RUN_S at the ideal rate, within bounds."""
    if work_ms <= 0:
        return MAX_ITEMS // (4 if quick else 1)
    ideal = consumers * 1000 / work_ms
    return max(MIN_ITEMS, min(MAX_ITEMS, round(ideal * (QUICK_RUN_S if quick else RUN_S))))


def jobs(quick: bool) -> Iterator[tuple[str, float, PipelineJob]]:
    """(sweep, x, job) for every point of both sweeps."""
    for work_ms in WORK_MS:
        items = items_for(WORK_CONSUMERS, work_ms, quick)
        job = PipelineJob(items=items, producers=2, consumers=WORK_CONSUMERS, work_ms=work_ms)
        yield "work_ms", work_ms, job
    for consumers in CONSUMERS:
        items = items_for(consumers, CONSUMERS_WORK_MS, quick)
        job = PipelineJob(items=items, producers=2, consumers=consumers, work_ms=CONSUMERS_WORK_MS)
        yield "consumers", consumers, job


def ideal(job: PipelineJob) -> float | None:
    return job.consumers * 1000 / job.work_ms if job.work_ms else None


def sweep(
    settings: Settings,
    quick: bool,
    rungs: Sequence[str] = RUNGS,
    done: Callable[[Point], None] = lambda point: None,
) -> list[Point]:
    """Every rung at every point, on one broker stack; a run that fails is a point too.
    done(point) is called as each point is measured."""
    points = []
    with ExitStack() as opened:
        on_broker = any(info(rung).channel == "broker" for rung in rungs)
        stack = opened.enter_context(Stack(settings)) if on_broker else None
        started: dict[str, Rung] = {}
        for name, x, job in jobs(quick):
            for rung in rungs:
                if rung not in started:
                    started[rung] = opened.enter_context(open_rung(rung, settings, stack))
                result = run(started[rung], job)
                point = Point(
                    name, x, rung, result.throughput, ideal(job), result.verified, result.note
                )
                points.append(point)
                done(point)
    return points


def of(points: Sequence[Point], name: str, rung: str) -> list[Point]:
    return sorted((p for p in points if p.sweep == name and p.rung == rung), key=lambda p: p.x)


def within(points: Sequence[Point], rung: str, of_rung: str) -> Point | None:
    """The first point of the work sweep from which rung keeps within NEAR of of_rung's
    throughput (and verified), or None."""
    series = of(points, "work_ms", rung)
    base = {p.x: p for p in of(points, "work_ms", of_rung)}

    def near(p: Point) -> bool:
        other = base.get(p.x)
        return p.verified and other is not None and p.throughput >= NEAR * other.throughput

    for i, point in enumerate(series):
        if all(near(p) for p in series[i:]):
            return point
    return None


def findings(points: Sequence[Point]) -> list[str]:
    """What the sweeps show, computed from their figures."""
    sentences = []
    rungs = list(dict.fromkeys(p.rung for p in points))
    sizes = [
        x for x in WORK_MS if any(p.sweep == "work_ms" and p.x == x and p.ideal for p in points)
    ]
    shares = {
        rung: [f"{p.throughput / p.ideal:.0%}" for p in of(points, "work_ms", rung) if p.ideal]
        for rung in rungs
    }
    if sizes and any(shares.values()):
        listed = "; ".join(f"{rung} {' / '.join(share)}" for rung, share in shares.items() if share)
        sentences.append(
            f"Share of the ideal (consumers x 1000 / work_ms items/s) with {WORK_CONSUMERS} "
            f"consumers, at {' / '.join(f'{x:g}' for x in sizes)} ms of work per item: {listed}."
        )
    others = [r for r in rungs if r != "threads"]
    if "threads" in rungs and others:
        reached = []
        for rung in others:
            first = within(points, rung, "threads")
            reached.append(f"{rung} from {first.x:g} ms" if first else f"{rung} at none")
        threads = {p.x: p.throughput for p in of(points, "work_ms", "threads")}
        ahead = [
            p.rung for p in points if p.sweep == "work_ms" and p.throughput > threads.get(p.x, 0)
        ]
        sentences.append(
            f"Within {1 - NEAR:.0%} of the threads rung's throughput on the same host: "
            f"{'; '.join(reached)}"
            + (
                f"; {', '.join(dict.fromkeys(ahead))} overtook it somewhere."
                if ahead
                else "; none overtook it, at any size: a broker message costs about a "
                "millisecond, which long work hides but never repays on one host."
            )
        )
    scaled = []
    for rung in rungs:
        series = of(points, "consumers", rung)
        if len(series) > 1 and series[0].throughput > 0:
            gain = series[-1].throughput / series[0].throughput
            scaled.append(
                f"{rung} {short(series[0].throughput)} -> {short(series[-1].throughput)} "
                f"items/s ({sig(gain)}x)"
            )
    if scaled:
        fewest, most = CONSUMERS[0], CONSUMERS[-1]
        sentences.append(
            f"With {CONSUMERS_WORK_MS:g} ms of work per item, from {fewest} consumer to {most} "
            f"(ideal {most // fewest}x): {'; '.join(scaled)}."
        )
    return sentences


def write(points: Sequence[Point], folder: Path) -> list[Path]:
    """sweep.json and a plot of each sweep, in folder."""
    # matplotlib takes most of a second to import: only the sweep needs it here.
    from ladder.plot import plot_sweep

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweep.json"
    path.write_text(json.dumps([asdict(p) for p in points], indent=2) + "\n")
    plots = [
        plot_sweep(
            points,
            "work_ms",
            "work per item (ms)",
            f"{WORK_CONSUMERS} consumers, I/O-bound",
            folder / "sweep-work.png",
        ),
        plot_sweep(
            points,
            "consumers",
            "consumers",
            f"{CONSUMERS_WORK_MS:g} ms of I/O per item",
            folder / "sweep-consumers.png",
        ),
    ]
    return [path, *plots]


def table(points: Sequence[Point]) -> Table:
    """The sweeps as one table: each rung's items/s beside the ideal."""
    out = Table(title="Sweeps: I/O-bound pipeline", title_justify="left")
    for column in ("sweep", "value", "rung", "items/s", "ideal", "of ideal", "verified"):
        out.add_column(column, justify="left" if column in ("sweep", "rung") else "right")
    previous = None
    for p in points:
        label = (p.sweep, p.x)
        share = f"{p.throughput / p.ideal:.0%}" if p.ideal else ""
        out.add_row(
            p.sweep if label != previous else "",
            f"{p.x:g}" if label != previous else "",
            p.rung,
            f"{p.throughput:,.0f}",
            f"{p.ideal:,.0f}" if p.ideal else "",
            share,
            "yes" if p.verified else f"no: {p.note}",
            end_section=False,
        )
        previous = label
    return out
