"""`ladder deadlock`: two threads, two locks, a deadlock caught by a timeout, and its fixes."""

from __future__ import annotations

import click

from core.commandline import Number
from core.errors import BadInput
from ladder.cli.options import State, command, json_option, pass_state
from ladder.cli.output import Outcome, finish
from ladder.report import deadlock_table
from local_ipc import deadlock as locks


@command("deadlock", help="Two threads, two locks: a deadlock caught by a timeout, and its fixes.")
@click.option(
    "--timeout-s",
    type=Number(),
    default=locks.TIMEOUT_S,
    show_default=True,
    help="how long a thread waits for a lock before giving up",
)
@json_option("one JSON list")
@pass_state
def deadlock(state: State, timeout_s: float, as_json: bool) -> int:
    if not 0 < timeout_s <= 60:
        raise BadInput(f"--timeout-s must be between 0 and 60 (got {timeout_s:g})")
    outcomes = locks.demo(timeout_s)
    return finish(
        Outcome(
            [outcome.to_dict() for outcome in outcomes],
            [deadlock_table(outcomes)],
            all(outcome.as_meant for outcome in outcomes),
        ),
        as_json,
        state.out,
    )
