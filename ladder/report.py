"""How results are shown: rich tables for people, JSON for programs."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from ladder.results import RunResult


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
        if result.latency_ms:
            table.add_row(
                "latency p50 / p99",
                f"{result.latency_ms['p50']:.3f} / {result.latency_ms['p99']:.3f} ms",
            )
    params = ", ".join(f"{k}={v}" for k, v in result.params.items())
    table.add_row("params", params)
    return table


def print_result(result: RunResult, console: Console) -> None:
    console.print(result_table(result))


def to_json(results: RunResult | Sequence[RunResult]) -> str:
    if isinstance(results, RunResult):
        return json.dumps(results.to_dict())
    return json.dumps([r.to_dict() for r in results], indent=2)
