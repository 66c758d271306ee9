"""The `ladder` command: rungs, run (and the demo and bench built on run).

Bad input is one line on stderr and exit code 2; a run that fails or does not verify
exits 1; a verified run exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ladder import bench, interrupt
from ladder.demo import Row, run_demo
from ladder.demo import write as write_demo
from ladder.errors import BadInput, LadderError
from ladder.findings import findings
from ladder.jobs import Job, PipelineJob, SumJob
from ladder.registry import RUNGS, WORKLOADS, get_rung
from ladder.report import bench_table, comparison_table, fmt_rate, print_result, to_json
from ladder.results import RunResult
from ladder.rung import Progress as Advance
from ladder.runner import open_rung, run
from ladder.settings import Settings
from ladder.stack import FLOWER_PORT, Stack

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM

EXAMPLES = """\
examples:
  ladder rungs
  ladder run --rung process-pool --workload sum --n 20000000 --workers 2
  ladder run --rung threads --workload pipeline --consumers 8 --work-ms 5
  ladder run --rung processes --workload pipeline --items 100000 --end join --json
  ladder run --rung celery --workload sum --n 20000000 --chunks 16
  ladder run --rung kombu --workload pipeline --broker redis://:secret@127.0.0.1:6380/0
  ladder demo --quick
  ladder bench
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


def rung_list(text: str) -> list[str]:
    return [rung_name(name.strip()) for name in text.split(",") if name.strip()]


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

    demo = commands.add_parser("demo", help="every rung on three workloads, side by side")
    demo.add_argument("--quick", action="store_true", help="small sizes: under a minute")
    demo.add_argument("--rungs", type=rung_list, default=list(RUNGS), help="comma-separated subset")
    demo.add_argument("--out", type=Path, default=Path("results"), help="folder for results files")
    demo.add_argument(
        "--hold", action="store_true", help="keep Redis, workers, Flower up until Ctrl-C"
    )
    demo.add_argument(
        "--flower-port", type=whole, default=FLOWER_PORT, help="(default %(default)s)"
    )
    demo.add_argument("--no-flower", action="store_true", help="do not start Flower")
    add_shared_options(demo)

    bench = commands.add_parser(
        "bench", help="rungs as ratios of their baselines, medians of rounds"
    )
    bench.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    bench.add_argument("--repeat", type=whole, default=None, help="rounds (default 7, quick 3)")
    bench.add_argument("--out", type=Path, default=Path("results"), help="folder for bench.json")
    add_shared_options(bench)
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
    show = err.is_terminal and not args.json
    with ExitStack() as cleanup:
        # Starting a broker and workers takes seconds: say so while it happens.
        with err.status(f"starting the {args.rung} rung") if show else nullcontext():
            rung = cleanup.enter_context(open_rung(args.rung, settings))
            rung.prepare(job)
        label = f"{job.workload} on {args.rung}"
        with progress_bar(err, label, job.size, enabled=show) as advance:
            result = run(rung, job, advance)
    emit(result, args.json, out)
    return EXIT_OK if result.verified else EXIT_FAILED


def writable_folder(folder: Path) -> Path:
    """Check before the runs, not after, that results can be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInput(f"--out cannot be created: {folder} ({error.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise BadInput(f"--out is not writable: {folder}")
    return folder


def cmd_demo(args: argparse.Namespace, out: Console) -> int:
    writable_folder(args.out)
    err = Console(stderr=True)
    show = err.is_terminal and not args.json
    rows: list[Row] = []
    reported = False

    def announce(stack: Stack) -> None:
        if not args.json:
            where = "a private Redis" if stack.embedded else "the given broker"
            err.print(f"broker: {where} at {stack.masked_url}")
            if stack.flower:
                err.print(f"Flower: {stack.flower.address}  (watch the tasks arrive)")

    def report() -> None:
        nonlocal reported
        if reported or not rows:
            return
        reported = True
        # matplotlib takes most of a second to import: only the demo's report needs it.
        from ladder.plot import plot_comparison

        paths = [*write_demo(rows, args.out), plot_comparison(rows, args.out / "comparison.png")]
        if args.json:
            print(json.dumps([{"workload_label": r.label, **r.result.to_dict()} for r in rows]))
        else:
            out.print(comparison_table(rows))
            for sentence in findings(rows, os.cpu_count() or 1):
                out.print(f"- {sentence}")
            out.print("written: " + ", ".join(str(p) for p in paths))

    def at_end() -> None:
        report()
        if args.hold:
            err.print("holding Redis, the workers and Flower up: Ctrl-C to stop them")
            interrupt.wait()

    try:
        for row in run_demo(
            Settings.load(broker=args.broker),
            args.quick,
            args.rungs,
            lambda label, total: progress_bar(err, label, total, enabled=show),
            announce,
            flower_port=None if args.no_flower else args.flower_port,
            at_end=at_end,
        ):
            rows.append(row)
            if not args.json:
                r = row.result
                mark = "ok" if r.verified else f"FAILED {r.note}"
                err.print(
                    f"  {row.label:<28} {r.rung:<13} "
                    f"{fmt_rate(r.throughput):>12} {r.unit:<10} {mark}"
                )
    finally:
        report()  # also when interrupted: what was measured is kept
    return EXIT_OK if rows and all(r.result.verified for r in rows) else EXIT_FAILED


def cmd_bench(args: argparse.Namespace, out: Console) -> int:
    repeat = args.repeat or (3 if args.quick else 7)
    if repeat < 1:
        raise BadInput(f"--repeat must be at least 1 (got {repeat})")
    writable_folder(args.out)
    selected = bench.cases(args.quick)
    err = Console(stderr=True)
    with progress_bar(
        err, "bench", repeat * len(selected), enabled=err.is_terminal and not args.json
    ) as advance:

        def tick(name: str) -> None:
            advance(1)

        measured = bench.measure(selected, repeat, Settings.load(broker=args.broker), tick)
    table = bench.rows(measured)
    path = bench.write(table, args.out)
    if args.json:
        print(json.dumps(table))
    else:
        out.print(bench_table(table))
        out.print(f"written: {path}")
    return EXIT_OK if all(row["verified"] for row in table) else EXIT_FAILED


def emit(result: RunResult, as_json: bool, out: Console) -> None:
    if as_json:
        print(to_json(result))
    else:
        print_result(result, out)


COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "rungs": cmd_rungs,
    "run": cmd_run,
    "demo": cmd_demo,
    "bench": cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Piped into a file, a table keeps its columns rather than wrapping at 80.
    out = Console() if sys.stdout.isatty() else Console(width=140)
    interrupt.install()
    try:
        return COMMANDS[args.command](args, out)
    except BadInput as error:
        fail(str(error), EXIT_BAD_INPUT)
    except LadderError as error:
        fail(str(error), EXIT_FAILED)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except interrupt.Terminated:
        fail("terminated", EXIT_TERMINATED)


if __name__ == "__main__":
    sys.exit(main())
