"""The `ladder` command: rungs, run (and the demo and bench built on run).

Bad input is one line on stderr and exit code 2; a run that fails or does not verify
exits 1; a verified run exits 0.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ladder.errors import BadInput, LadderError
from ladder.jobs import Job, PipelineJob, SumJob
from ladder.registry import RUNGS, WORKLOADS, get_rung
from ladder.report import print_result, to_json
from ladder.results import RunResult
from ladder.rung import Progress as Advance
from ladder.runner import run_on
from ladder.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM

EXAMPLES = """\
examples:
  ladder rungs
  ladder run --rung process-pool --workload sum --n 20000000 --workers 2
  ladder run --rung threads --workload pipeline --consumers 8 --work-ms 5
  ladder run --rung processes --workload pipeline --items 100000 --end join --json
"""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        fail(message, EXIT_BAD_INPUT)


def fail(message: str, code: int) -> NoReturn:
    print(f"ladder: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def whole(text: str) -> int:
    try:
        return int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number (got {text!r})") from None


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number (got {text!r})") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number (got {text!r})")
    return value


def rung_name(text: str) -> str:
    try:
        get_rung(text)
    except BadInput as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def build_parser() -> Parser:
    parser = Parser(
        prog="ladder",
        description="The same workloads on every rung from queue.Queue to Celery, verified.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("rungs", help="list the rungs and what each teaches")

    run = commands.add_parser(
        "run",
        help="run one workload on one rung and verify it",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--rung", required=True, type=rung_name, help=", ".join(RUNGS))
    run.add_argument("--workload", required=True, choices=WORKLOADS)
    add_job_options(run)
    add_shared_options(run)
    return parser


def add_job_options(parser: argparse.ArgumentParser) -> None:
    defaults_sum, defaults_pipe = SumJob(), PipelineJob()
    g = parser.add_argument_group("sum")
    g.add_argument("--n", type=whole, default=defaults_sum.n, help="add 1..N (default %(default)s)")
    g.add_argument(
        "--chunks", type=whole, default=defaults_sum.chunks, help="ranges to split 1..N into"
    )
    g.add_argument(
        "--workers", type=whole, default=os.cpu_count() or 1, help="workers (default: cores)"
    )
    g = parser.add_argument_group("pipeline")
    g.add_argument(
        "--items",
        type=whole,
        default=defaults_pipe.items,
        help="items in all, split across producers",
    )
    g.add_argument("--producers", type=whole, default=defaults_pipe.producers)
    g.add_argument("--consumers", type=whole, default=defaults_pipe.consumers)
    g.add_argument("--payload-bytes", type=whole, default=defaults_pipe.payload_bytes)
    g.add_argument(
        "--work-ms", type=number, default=defaults_pipe.work_ms, help="work per item, in ms"
    )
    g.add_argument(
        "--work-kind",
        choices=("io", "cpu"),
        default=defaults_pipe.work_kind,
        help="io: sleep (releases the GIL); cpu: a pure-Python loop",
    )
    g.add_argument(
        "--produce-ms", type=number, default=defaults_pipe.produce_ms, help="delay per item made"
    )
    g.add_argument(
        "--queue-size", type=whole, default=defaults_pipe.queue_size, help="bound of the queue"
    )
    g.add_argument(
        "--end",
        choices=("sentinel", "join"),
        default=defaults_pipe.end,
        help="end of stream: a sentinel per consumer, or JoinableQueue.join",
    )


def add_shared_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker", help="broker URL (default: $CELERY_BROKER_URL, else a private Redis)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")


def make_job(workload: str, args: argparse.Namespace) -> Job:
    """The job asked for; every option is checked, the other workload's included."""
    try:
        jobs: dict[str, Job] = {
            "sum": SumJob(n=args.n, chunks=args.chunks, workers=args.workers),
            "pipeline": PipelineJob(
                items=args.items,
                producers=args.producers,
                consumers=args.consumers,
                payload_bytes=args.payload_bytes,
                work_ms=args.work_ms,
                work_kind=args.work_kind,
                produce_ms=args.produce_ms,
                queue_size=args.queue_size,
                end=args.end,
            ),
        }
    except BadInput as error:
        # A job's message starts with its field's name; say it as the option is spelt.
        field, _, rest = str(error).partition(" ")
        raise BadInput(f"--{field.replace('_', '-')} {rest}") from None
    return jobs[workload]


@contextmanager
def progress_bar(
    console: Console, description: str, total: int, enabled: bool
) -> Iterator[Advance]:
    """A live bar on stderr for a terminal; nothing at all otherwise."""
    if not enabled:
        yield lambda n: None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def cmd_rungs(args: argparse.Namespace, out: Console) -> int:
    table = Table(
        "rung", "what it teaches", title="The ladder, bottom to top", title_justify="left"
    )
    for name, rung in RUNGS.items():
        table.add_row(name, rung.teaches)
    out.print(table)
    return EXIT_OK


def cmd_run(args: argparse.Namespace, out: Console) -> int:
    job = make_job(args.workload, args)
    settings = Settings.load(broker=args.broker)
    err = Console(stderr=True)
    label = f"{job.workload} on {args.rung}"
    with progress_bar(err, label, job.size, enabled=err.is_terminal and not args.json) as advance:
        result = run_on(args.rung, job, settings, advance)
    emit(result, args.json, out)
    return EXIT_OK if result.verified else EXIT_FAILED


def emit(result: RunResult, as_json: bool, out: Console) -> None:
    if as_json:
        print(to_json(result))
    else:
        print_result(result, out)


COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "rungs": cmd_rungs,
    "run": cmd_run,
}


class Terminated(Exception):
    """SIGTERM arrived: unwind like Ctrl-C, so that every child is stopped."""


def on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Console()
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return COMMANDS[args.command](args, out)
    except BadInput as error:
        fail(str(error), EXIT_BAD_INPUT)
    except LadderError as error:
        fail(str(error), EXIT_FAILED)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except Terminated:
        fail("terminated", EXIT_TERMINATED)


if __name__ == "__main__":
    sys.exit(main())
