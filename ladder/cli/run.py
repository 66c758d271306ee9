"""`ladder run`: one workload on one rung, timed and verified."""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from typing import Any

import click
from rich.console import Console

from core.commandline import OneOf
from core.errors import BadInput
from ladder.cli.jobs import job_options, make_job
from ladder.cli.options import RUNG, State, broker_option, command, json_option, pass_state
from ladder.cli.output import Outcome, finish
from ladder.progress import Progress
from ladder.registry import INFO, WORKLOADS, info, names
from ladder.report import result_table
from ladder.runner import open_rung, run

EXAMPLES = """\b
examples:
  ladder run --rung process-pool --workload sum --n 20000000 --workers 2
  ladder run --rung threads --workload pipeline --consumers 8 --work-ms 5
  ladder run --rung processes --workload pipeline --items 100000 --end join --json
  ladder run --rung celery --workload sum --n 20000000 --chunks 16
  ladder run --rung kombu --workload pipeline --broker @broker-url.txt
  ladder run --rung threads --workload tickets --tickets 100 --buyers 200 --unsafe
  ladder run --rung celery --workload tickets --lock redis-lock
"""


@command("run", help="Run one workload on one rung and verify it.", epilog=EXAMPLES)
@click.option("--rung", "rung_name", required=True, type=RUNG, help=", ".join(INFO))
@click.option("--workload", required=True, type=OneOf(list(WORKLOADS)))
@job_options
@broker_option
@json_option()
@pass_state
def run_command(
    state: State, /, rung_name: str, workload: str, as_json: bool, **options: Any
) -> int:
    job = make_job(workload, options)
    check_lock(rung_name, workload, options)
    err = Console(stderr=True)
    progress = Progress(err, as_json)
    with ExitStack() as cleanup:
        # Starting a broker and workers takes seconds: say so while it happens.
        starting = err.status(f"starting the {rung_name} rung") if progress.live else nullcontext()
        with starting:
            rung = cleanup.enter_context(open_rung(rung_name, state.settings))
            with rung.failures():
                rung.prepare(job)
        with progress.bar(f"{job.workload} on {rung_name}", job.size) as advance:
            result = run(rung, job, advance)
    return finish(
        Outcome(result.to_dict(), [result_table(result)], result.verified), as_json, state.out
    )


def check_lock(rung: str, workload: str, options: dict[str, Any]) -> None:
    """--lock picks how the broker rungs guard their Redis store: refused where it would
    silently mean nothing."""
    if options["lock"] is None or workload != "tickets":
        return
    if options["unsafe"]:
        raise BadInput("--lock guards a safe run: drop --unsafe or --lock")
    if info(rung).channel != "broker":
        broker_rungs = ", ".join(names("broker"))
        raise BadInput(
            f"--lock applies to the broker rungs ({broker_rungs}); "
            f"the {rung} rung guards its store with a lock of its own"
        )
