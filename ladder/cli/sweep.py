"""`ladder bench sweep`: the I/O-bound pipeline as work per item and consumers grow."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from rich.console import Console, RenderableType

from ladder.cli.options import (
    State,
    broker_option,
    command,
    json_option,
    out_option,
    pass_state,
    quick_option,
    writable_folder,
)
from ladder.cli.output import Outcome, finish, save, written
from ladder.progress import Progress, case_line


@command(
    "sweep",
    help="The I/O-bound pipeline on threads, processes, kombu and celery as work per item "
    "(0, 1, 10, 100 ms) and consumers (1, 2, 4, 8) grow: sweep.json and two plots.",
)
@quick_option("fewer items per point")
@out_option("sweep.json and its plots")
@broker_option
@json_option("one JSON list")
@pass_state
def sweep(state: State, quick: bool, out: Path, as_json: bool) -> int:
    from ladder import sweep as sweeps

    writable_folder(out)
    progress = Progress(Console(stderr=True), as_json)

    def done(p: sweeps.Point) -> None:
        label = f"{p.sweep} = {p.x:g} on {p.rung}"
        progress.say(case_line(label, p.throughput, "items/s", p.verified, p.note))

    points = sweeps.sweep(state.settings, quick, done=done)
    problems: list[str] = []
    paths = save(lambda: sweeps.write(points, out), problems)
    shown: list[RenderableType] = [
        sweeps.table(points),
        *(f"- {sentence}" for sentence in sweeps.findings(points)),
        written(paths),
    ]
    verified = all(p.verified for p in points)
    return finish(
        Outcome([asdict(p) for p in points], shown, verified, problems), as_json, state.out
    )
