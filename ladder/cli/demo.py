"""`ladder demo`: every rung on four workloads side by side, then the TCP servers."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console, RenderableType

from core import interrupt
from core.commandline import PORT_NUMBER
from core.settings import FLOWER_PORT, flower_login_file
from ladder.cli.options import (
    RUNG_LIST,
    State,
    broker_option,
    command,
    json_option,
    out_option,
    pass_state,
    writable_folder,
)
from ladder.cli.output import Outcome, exit_code_of, save, show, written
from ladder.progress import Progress
from ladder.registry import INFO
from ladder.report import comparison_table, worker_lines

if TYPE_CHECKING:
    from core.stack import Stack
    from ladder.demo import Row

# Requests per server and K in the demo's short servers section.
DEMO_REQUESTS, DEMO_REQUESTS_QUICK = 20_000, 5_000


@command("demo", help="Every rung on three workloads, side by side.")
@click.option("--quick", is_flag=True, help="small sizes: under a minute")
@click.option("--rungs", type=RUNG_LIST, default=",".join(INFO), help="comma-separated subset")
@out_option("results files")
@click.option("--hold", is_flag=True, help="keep Redis, workers, Flower up until Ctrl-C")
@click.option(
    "--flower-port",
    type=PORT_NUMBER,
    default=FLOWER_PORT,
    show_default=True,
    help="0 picks a free one; another if it is taken",
)
@click.option("--no-flower", is_flag=True, help="do not start Flower")
@click.option("--no-servers", is_flag=True, help="leave out the TCP servers' comparison")
@broker_option
@json_option("one JSON list")
@pass_state
def demo(
    state: State,
    quick: bool,
    rungs: list[str],
    out: Path,
    hold: bool,
    flower_port: int,
    no_flower: bool,
    no_servers: bool,
    as_json: bool,
) -> int:
    from ladder.demo import run_demo

    writable_folder(out)
    err = Console(stderr=True)
    progress = Progress(err, as_json)
    rows: list[Row] = []
    report: list[Outcome] = []

    def announce(stack: Stack) -> None:
        where = "a private Redis" if stack.embedded else "the given broker"
        progress.say(f"broker: {where} at {stack.masked_url}")
        if stack.flower:
            flower = stack.flower
            progress.say(
                f"Flower: {flower.address}  (user {flower.user}; its password: "
                f"cat {shlex.quote(str(flower_login_file()))}; watch the tasks arrive)"
            )

    def report_rungs() -> None:
        if not report and rows:
            report.append(rungs_outcome(rows, out))
            show(report[0], as_json, state.out)

    def at_end() -> None:
        report_rungs()
        if hold:
            err.print("holding Redis, the workers and Flower up: Ctrl-C to stop them")
            interrupt.wait()

    try:
        for row in run_demo(
            state.settings,
            quick,
            rungs,
            progress.bar,
            announce,
            flower_port=None if no_flower else flower_port,
            at_end=at_end,
        ):
            rows.append(row)
            progress.finished(f"{row.label:<28} {row.result.rung}", row.result)
    finally:
        report_rungs()  # also when interrupted: what was measured is kept
    if not report:
        report.append(Outcome(None, [], False))
    if not no_servers:
        report.append(servers_outcome(quick, out, progress))
        show(report[-1], as_json, state.out)
    return exit_code_of(*report)


def rungs_outcome(rows: list[Row], out: Path) -> Outcome:
    """The table, the workers, the findings; results.json, results.csv, comparison.png."""
    from ladder.demo import write
    from ladder.findings import findings

    # matplotlib takes most of a second to import: only the demo's report needs it.
    from ladder.plot import plot_comparison

    problems: list[str] = []
    paths = save(lambda: write(rows, out), problems)
    if not problems:
        plot = out / "comparison.png"
        paths += save(lambda: [plot_comparison(rows, plot)], problems, str(plot))
    return Outcome(
        [{"workload_label": r.label, **r.result.to_dict()} for r in rows],
        [
            comparison_table(rows),
            *worker_lines(rows),
            *(f"- {sentence}" for sentence in findings(rows, os.cpu_count() or 1)),
            written(paths),
        ],
        all(r.result.verified for r in rows),
        problems,
    )


def servers_outcome(quick: bool, out: Path, progress: Progress) -> Outcome:
    """The demo's last section: the upper-case TCP server in each concurrency model,
    loaded at K = 1, 50 and 500 connections; servers.json."""
    from servers.compare import compare, findings, progress_line, table

    progress.say("servers: each concurrency model under 1, 50 and 500 connections")
    rows = compare(
        requests=DEMO_REQUESTS_QUICK if quick else DEMO_REQUESTS,
        on_row=lambda row: progress.say(progress_line(row)),
    )
    path = out / "servers.json"
    records = [{"model": r.model, **r.load.to_dict()} for r in rows]

    def write() -> list[Path]:
        path.write_text(json.dumps(records, indent=2) + "\n")
        return [path]

    problems: list[str] = []
    paths = save(write, problems)
    shown: list[RenderableType] = [
        table(rows),
        *(f"- {sentence}" for sentence in findings(rows)),
        written(paths),
    ]
    return Outcome(None, shown, all(row.load.ok for row in rows), problems)
