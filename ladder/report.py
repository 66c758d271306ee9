"""How results are shown: rich tables for people, JSON for programs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.table import Table

from core.results import RunResult

if TYPE_CHECKING:
    from ladder.demo import Row
    from ladder.registry import RungInfo
    from local_ipc.deadlock import Outcome


def fmt_rate(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def verdict(result: RunResult) -> str:
    return "[green]yes[/green]" if result.verified else f"[red]NO[/red] {result.note}"


def result_table(result: RunResult) -> Table:
    """One run, one field a row."""
    table = Table(
        title=f"{result.workload} on {result.rung}", show_header=False, title_justify="left"
    )
    table.add_column(style="bold")
    table.add_column()
    table.add_row("verified", verdict(result))
    table.add_row("seconds", f"{result.seconds:.3f}")
    table.add_row("throughput", f"{fmt_rate(result.throughput)} {result.unit}")
    table.add_row("expected", f"{result.expected:,}")
    table.add_row("got", f"{result.got:,}")
    if result.workload == "pipeline":
        table.add_row("lost / duplicates", f"{result.lost:,} / {result.duplicates:,}")
        if result.redelivered:
            table.add_row("redelivered", f"{result.redelivered:,} (handled again, counted once)")
        if result.latency_ms:
            table.add_row(
                "latency p50 / p99",
                f"{result.latency_ms['p50']:.3f} / {result.latency_ms['p99']:.3f} ms",
            )
    if result.workload == "tickets":
        table.add_row("sold / turned away", f"{result.got:,} / {result.turned_away:,}")
        table.add_row("oversold", f"{result.oversold:,}")
        if result.lost:
            table.add_row("never answered", f"{result.lost:,}")
        if result.verified and result.note:
            table.add_row("note", result.note)
    params = ", ".join(f"{k}={v}" for k, v in result.params.items())
    table.add_row("params", params)
    return table


def comparison_table(rows: Sequence[Row]) -> Table:
    """The demo's table: every rung on every workload, with its speedup over serial."""
    from ladder.demo import speedups  # the demo's rows: only the demo imports the demo

    gains = speedups(rows)
    table = Table(title="Every rung, side by side", title_justify="left")
    for column in ("workload", "rung", "seconds", "throughput", "vs serial", "verified"):
        table.add_column(
            column, justify="right" if column in ("seconds", "throughput", "vs serial") else "left"
        )
    previous = None
    for row in rows:
        r = row.result
        gain = gains[(row.label, r.rung)]
        table.add_row(
            row.label if row.label != previous else "",
            r.rung,
            f"{r.seconds:.2f}",
            f"{fmt_rate(r.throughput)} {r.unit}",
            f"{gain:.2f}x" if gain is not None else "-",
            verdict(r),
            end_section=False,
        )
        previous = row.label
    return table


def bench_table(rows: Sequence[dict[str, Any]]) -> Table:
    """The bench's table: medians, the noise, each ratio against its goal, and the largest
    RSS any one process of a case reached (the goal of the --memory cases)."""
    table = Table(title="Bench: medians of interleaved rounds", title_justify="left")
    right = ("throughput (median)", "min .. max", "ratio", "peak RSS")
    columns = ("case", "throughput (median)", "min .. max", "ratio", "against", "peak RSS")
    for column in (*columns, "goal", "met"):
        table.add_column(column, justify="right" if column in right else "left")
    for row in rows:
        met = {True: "[green]yes[/green]", False: "[red]no[/red]", None: ""}[row["met"]]
        table.add_row(
            row["name"],
            f"{fmt_rate(row['throughput'])} {row['unit']}",
            f"{fmt_rate(row['throughput_min'])} .. {fmt_rate(row['throughput_max'])}",
            f"{row['ratio']:.2f}x" if row["ratio"] is not None else "",
            (f"latency p50 vs {row['limit_name']}" if row.get("compare") == "latency p50" else "")
            or row["limit_name"]
            or "",
            f"{row['peak_rss_mb']:,.0f} MB" if row.get("peak_rss_mb") is not None else "",
            row["goal"] or "",
            met if row["verified"] else "[red]NOT VERIFIED[/red]",
        )
    return table


def worker_lines(rows: Sequence[Row]) -> list[str]:
    """Which workers served each run that had workers to report (the celery rung's), as
    they report themselves: one line a run."""
    lines = []
    for row in rows:
        if row.workers:
            shapes = Counter(
                f"{w.pool} x{w.concurrency} on {', '.join(w.queues)}" for w in row.workers
            )
            served = ", ".join(
                f"{n} worker{'s' if n > 1 else ''} {shape}" for shape, n in shapes.items()
            )
            lines.append(f"{row.label} on {row.result.rung}: served by {served}")
    return lines


def rungs_table(rungs: Sequence[RungInfo]) -> Table:
    table = Table(
        "rung", "what it teaches", title="The ladder, bottom to top", title_justify="left"
    )
    for rung in rungs:
        table.add_row(rung.name, rung.teaches)
    return table


def deadlock_table(outcomes: Sequence[Outcome]) -> Table:
    table = Table(
        "case", "deadlocked", "what happened", title="Two locks, two threads", title_justify="left"
    )
    for outcome in outcomes:
        mark = "yes" if outcome.deadlocked else "no"
        if not outcome.as_meant:
            mark = f"[red]{mark} (unexpected)[/red]"
        table.add_row(outcome.case, mark, outcome.detail)
    return table
