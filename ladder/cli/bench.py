"""`ladder bench`: a group of benches, each with the options that apply to it alone.

    ladder bench [rungs] [--quick --repeat N --peers]   rungs as ratios of their limits
    ladder bench memory [--repeat N]                     long pipelines' peak RSS
    ladder bench sweep [--quick]                         work per item and consumers grow
    ladder bench hosts [--quick]                         Celery workers on 1, 2, 3 hosts

`bench --sweep`, `bench --memory` and `bench --hosts` name the same benches.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from core.rung import no_progress
from ladder.cli.hosts import hosts
from ladder.cli.options import (
    Group,
    State,
    broker_option,
    json_option,
    out_option,
    pass_state,
    quick_option,
    repeat_option,
    rounds,
    writable_folder,
)
from ladder.cli.output import Outcome, finish, save, written
from ladder.cli.sweep import sweep
from ladder.progress import Progress
from ladder.report import bench_table

if TYPE_CHECKING:
    from core.results import RunResult
    from ladder.bench import Case

BENCHES = {"--memory": "memory", "--sweep": "sweep", "--hosts": "hosts"}


class Benches(Group):
    """With no bench named, `rungs`; `--sweep`, `--memory` and `--hosts` name the others."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0].startswith("-") and args[0] not in ctx.help_option_names):
            named = [arg for arg in args if arg in BENCHES]
            if len(named) > 1:
                raise click.UsageError(", ".join(named) + " are different benches: choose one")
            rest = [arg for arg in args if arg not in BENCHES]
            args = [BENCHES[named[0]] if named else "rungs", *rest]
        return super().parse_args(ctx, args)


@click.group(
    "bench",
    cls=Benches,
    help="Rungs as ratios of their limits, medians of rounds; and the other benches. "
    "With no bench named, `rungs`: `ladder bench --peers` is `ladder bench rungs --peers`. "
    "`--sweep`, `--memory` and `--hosts` name the bench of that name.",
)
def bench() -> None:
    pass


@bench.command("rungs", help="Every rung and the raw transports it stands on (the default).")
@quick_option("smaller sizes, fewer rounds")
@repeat_option("default 7, quick 3")
@click.option(
    "--peers",
    is_flag=True,
    help="also Dramatiq, Huey and RQ on the same Redis, against the celery rung "
    "(the optional peers extra: pip install -e '.[peers]')",
)
@out_option("bench.json")
@broker_option
@json_option("one JSON list")
@pass_state
def rungs(
    state: State, quick: bool, repeat: int | None, peers: bool, out: Path, as_json: bool
) -> int:
    from broker_ipc.peer_rung import PEERS
    from broker_ipc.peer_rung import load as load_peer
    from ladder import bench as benches

    times = rounds(repeat, 3 if quick else 7)
    writable_folder(out)
    if peers:
        for name in PEERS:
            load_peer(name)  # each installed, or one clear line before anything starts
    return measure(state, benches.cases(quick, peers), times, out, as_json, by_items=False)


@bench.command(
    "memory",
    help="Long pipelines, for their peak RSS against 300 MB per process: 1,000,000 items on "
    "each local rung, 200,000 on kombu and celery; 5 to 15 minutes on 2 cores.",
)
@repeat_option("default 1")
@out_option("bench.json")
@broker_option
@json_option("one JSON list")
@pass_state
def memory(state: State, repeat: int | None, out: Path, as_json: bool) -> int:
    from ladder import bench as benches

    times = rounds(repeat, 1)
    writable_folder(out)
    return measure(state, benches.memory_cases(), times, out, as_json, by_items=True)


bench.add_command(sweep)
bench.add_command(hosts)


def measure(
    state: State, selected: list[Case], repeat: int, out: Path, as_json: bool, by_items: bool
) -> int:
    """Every case, `repeat` rounds; a line as each run ends; the table and bench.json.
    The bar counts runs, or, by_items, the items of the long runs."""
    from ladder import bench as benches

    progress = Progress(Console(stderr=True), as_json)
    measured = [c for c in selected if not (c.runs_of or c.fastest_of)]
    steps = sum(c.job.size for c in measured) if by_items else len(measured)
    runs: Counter[str] = Counter()
    with progress.bar("bench", repeat * steps) as advance:

        def done(case: Case, result: RunResult) -> None:
            runs[case.name] += 1
            progress.finished(f"{case.name} ({runs[case.name]}/{repeat})", result)
            if not by_items:
                advance(1)

        results = benches.measure(
            selected,
            repeat,
            state.settings,
            lambda name: None,
            advance if by_items else no_progress,
            done,
        )
    table = benches.rows(results)
    problems: list[str] = []
    paths = save(lambda: [benches.write(table, out)], problems)
    verified = all(row["verified"] for row in table)
    return finish(
        Outcome(table, [bench_table(table), written(paths)], verified, problems), as_json, state.out
    )
