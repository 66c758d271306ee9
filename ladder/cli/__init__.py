"""The `ladder` command: one module per command, the options they share in options.py.

Bad input is one line on stderr and exit code 2; a run that fails or does not verify
exits 1; a verified run exits 0; Ctrl-C 130 and SIGTERM 143, once everything the command
started is stopped.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click
from rich.console import Console

from core import interrupt
from core.commandline import invoke
from core.errors import EXIT_INTERRUPTED, EXIT_TERMINATED
from core.output import guard_stdout
from ladder.cli.bench import bench
from ladder.cli.deadlock import deadlock
from ladder.cli.demo import demo
from ladder.cli.options import Group, State
from ladder.cli.run import run_command
from ladder.cli.rungs import rungs
from ladder.cli.servers import load, serve

EXAMPLES = """\b
examples:
  ladder rungs
  ladder run --rung process-pool --workload sum --n 20000000 --workers 2
  ladder run --rung threads --workload pipeline --consumers 8 --work-ms 5
  ladder run --rung kombu --workload pipeline --broker @broker-url.txt
  ladder run --rung threads --workload tickets --tickets 100 --buyers 200 --unsafe
  ladder deadlock
  ladder demo --quick
  ladder bench
  ladder bench sweep --quick
  ladder serve --model asyncio --port 8765
  ladder load --port 8765 --connections 50 --messages 200
  ladder load --compare --connections 1,50,500
"""


@click.group(
    "ladder",
    cls=Group,
    epilog=EXAMPLES,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
def ladder() -> None:
    """The same workloads on every rung from queue.Queue to Celery, verified."""


for each in (rungs, run_command, demo, bench, deadlock, serve, load):
    ladder.add_command(each)


def main(argv: Sequence[str] | None = None) -> int:
    output = guard_stdout()
    # Piped into a file, a table keeps its columns rather than wrapping at 80.
    out = Console() if output.isatty() else Console(width=140)
    interrupt.install()
    notes = logging.StreamHandler(sys.stderr)
    notes.setFormatter(logging.Formatter("ladder: note: %(message)s"))
    logging.getLogger("ladder").addHandler(notes)
    try:
        return invoke(ladder, sys.argv[1:] if argv is None else argv, "ladder", State(out))
    # Everything the run started is stopped by now; threads still running Python cannot
    # be, and the exit does not wait for them.
    except KeyboardInterrupt:
        interrupt.exit_now(EXIT_INTERRUPTED, "ladder: error: interrupted")
    except interrupt.Terminated:
        interrupt.exit_now(EXIT_TERMINATED, "ladder: error: terminated")
