"""`ladder rungs`: the ladder, bottom to top, and what each rung teaches."""

from __future__ import annotations

from ladder.cli.options import State, command, pass_state
from ladder.cli.output import Outcome, finish
from ladder.registry import INFO
from ladder.report import rungs_table


@command("rungs", help="List the rungs and what each teaches.")
@pass_state
def rungs(state: State) -> int:
    return finish(Outcome(None, [rungs_table(list(INFO.values()))], True), False, state.out)
