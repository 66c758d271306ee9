"""The `ladder` command: rungs, run (and the demo and bench built on run).

Bad input is one line on stderr and exit code 2; a run that fails or does not verify
exits 1; a verified run exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core import interrupt
from core.errors import BadInput, LadderError
from core.jobs import TICKET_LOCKS, Job, PipelineJob, SumJob, TicketsJob
from core.output import CheckedParser, guard_stdout
from core.results import RunResult
from core.rung import Progress as Advance
from core.settings import FLOWER_PORT, Settings, forget_celery_variables
from ladder.registry import INFO, RUNGS, WORKLOADS, get_rung, info, names
from ladder.report import (
    bench_table,
    comparison_table,
    fmt_rate,
    print_result,
    to_json,
    worker_lines,
)
from ladder.runner import open_rung, run
from local_ipc import deadlock
from servers import HOST, MODELS, PORT
from servers.protocol import port_number

# The broker's side, the bench and the demo import celery, kombu and redis: each command
# imports what it runs, so that `ladder rungs` or a local run imports none of them.
if TYPE_CHECKING:
    from core.stack import Stack
    from ladder.demo import Row

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM

EXAMPLES = """\
examples:
  ladder rungs
  ladder run --rung process-pool --workload sum --n 20000000 --workers 2
  ladder run --rung threads --workload pipeline --consumers 8 --work-ms 5
  ladder run --rung processes --workload pipeline --items 100000 --end join --json
  ladder run --rung celery --workload sum --n 20000000 --chunks 16
  ladder run --rung kombu --workload pipeline --broker @broker-url.txt
  ladder run --rung threads --workload tickets --tickets 100 --buyers 200 --unsafe
  ladder run --rung celery --workload tickets --lock redis-lock
  ladder deadlock
  ladder demo --quick
  ladder bench
  ladder serve --model asyncio --port 8765
  ladder load --port 8765 --connections 50 --messages 200
  ladder load --compare --connections 1,50,500
"""


class Parser(CheckedParser):
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
    names = [rung_name(name.strip()) for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"must name at least one rung of: {', '.join(RUNGS)}")
    return names


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
        "--flower-port",
        type=port_number,
        default=FLOWER_PORT,
        help="0 picks a free one (default %(default)s; another if it is taken)",
    )
    demo.add_argument("--no-flower", action="store_true", help="do not start Flower")
    demo.add_argument(
        "--no-servers", action="store_true", help="leave out the TCP servers' comparison"
    )
    add_shared_options(demo)

    bench = commands.add_parser(
        "bench", help="rungs as ratios of their baselines, medians of rounds"
    )
    bench.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    bench.add_argument("--repeat", type=whole, default=None, help="rounds (default 7, quick 3)")
    bench.add_argument("--out", type=Path, default=Path("results"), help="folder for bench.json")
    bench.add_argument(
        "--memory",
        action="store_true",
        help="long pipelines, for their peak RSS against 300 MB per process: 1,000,000 "
        "items on each local rung, 200,000 on kombu and celery; one round by default, "
        "5 to 15 minutes on 2 cores (celery alone 3 to 8)",
    )
    bench.add_argument(
        "--peers",
        action="store_true",
        help="also Dramatiq, Huey and RQ on the same Redis, no-op and I/O-bound pipelines, "
        "against the celery rung (the optional peers extra: pip install -e '.[peers]')",
    )
    bench.add_argument(
        "--hosts",
        action="store_true",
        help="scale-out: Redis in one network namespace, a Celery worker in each of 1, 2 "
        "and 3 others (root and iproute2 needed); the I/O-bound pipeline on each",
    )
    bench.add_argument(
        "--sweep",
        action="store_true",
        help="the I/O-bound pipeline on threads, processes, kombu and celery as work per "
        "item (0, 1, 10, 100 ms) and consumers (1, 2, 4, 8) grow: sweep.json and two plots",
    )
    add_shared_options(bench)

    locks = commands.add_parser(
        "deadlock", help="two threads, two locks: a deadlock caught by a timeout, and its fixes"
    )
    locks.add_argument(
        "--timeout-s",
        type=number,
        default=deadlock.TIMEOUT_S,
        help="how long a thread waits for a lock before giving up (default %(default)s)",
    )
    locks.add_argument("--json", action="store_true", help="print one JSON list, nothing else")
    add_server_commands(commands)
    return parser


def add_server_commands(commands: argparse._SubParsersAction[Parser]) -> None:
    serve = commands.add_parser("serve", help="a TCP server that upper-cases lines, in one model")
    serve.add_argument("--model", required=True, choices=MODELS, help=", ".join(MODELS))
    serve.add_argument("--host", default=HOST, help="(default %(default)s)")
    serve.add_argument(
        "--port", type=port_number, default=PORT, help="0 picks a free one (default %(default)s)"
    )

    load = commands.add_parser(
        "load", help="K connections sending M lines each to a server, every reply checked"
    )
    load.add_argument("--host", default=HOST, help="(default %(default)s)")
    load.add_argument("--port", type=port_number, default=PORT, help="(default %(default)s)")
    load.add_argument(
        "--connections",
        type=counts,
        default=None,
        metavar="K",
        help="K, or several such as 1,50,500 (default 50; with --compare 1,50,500)",
    )
    load.add_argument(
        "--messages",
        type=whole,
        default=None,
        metavar="M",
        help="per connection (default: 50,000 in all)",
    )
    load.add_argument(
        "--compare",
        action="store_true",
        help="start each model's server on a free port, load it at every K, and compare",
    )
    load.add_argument(
        "--models", type=model_list, default=list(MODELS), help="with --compare: a subset"
    )
    load.add_argument("--json", action="store_true", help="print JSON, nothing else")


def counts(text: str) -> list[int]:
    return [whole(part) for part in text.split(",") if part.strip()]


def model_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in MODELS:
            raise argparse.ArgumentTypeError(
                f"unknown model {name!r}; choose one of: {', '.join(MODELS)}"
            )
    return names


def add_job_options(parser: argparse.ArgumentParser) -> None:
    defaults_sum, defaults_pipe = SumJob(), PipelineJob()
    g = parser.add_argument_group("sum")
    g.add_argument("--n", type=whole, default=defaults_sum.n, help="add 1..N (default %(default)s)")
    g.add_argument(
        "--chunks", type=whole, default=defaults_sum.chunks, help="ranges to split 1..N into"
    )
    g.add_argument(
        "--workers",
        type=whole,
        default=None,
        help="workers (default: cores; tickets: buyers at once, default 8)",
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
    g.add_argument(
        "--batch",
        type=whole,
        default=defaults_pipe.batch,
        help="items per message (threads, processes, kombu, celery; default %(default)s)",
    )
    defaults_tickets = TicketsJob()
    g = parser.add_argument_group("tickets")
    g.add_argument("--tickets", type=whole, default=defaults_tickets.tickets, help="for sale")
    g.add_argument("--buyers", type=whole, default=defaults_tickets.buyers, help="racing for them")
    g.add_argument(
        "--gap-ms",
        type=number,
        default=defaults_tickets.gap_ms,
        help="a buyer's wait between checking the count and buying (default %(default)s)",
    )
    g.add_argument(
        "--unsafe", action="store_true", help="the naive read-modify-write: shows the oversell"
    )
    g.add_argument(
        "--lock",
        choices=TICKET_LOCKS,
        default=None,
        help="kombu and celery: one atomic Lua script (default), or a Redis lock with a timeout",
    )


def add_shared_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        metavar="URL|@FILE",
        help="broker URL, or @FILE holding it (default: $CELERY_BROKER_URL, else a private Redis)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")


def make_job(workload: str, args: argparse.Namespace) -> Job:
    """The job asked for; every option is checked, the other workload's included."""
    try:
        jobs: dict[str, Job] = {
            "sum": SumJob(
                n=args.n,
                chunks=args.chunks,
                workers=os.cpu_count() or 1 if args.workers is None else args.workers,
            ),
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
                batch=args.batch,
            ),
            "tickets": TicketsJob(
                tickets=args.tickets,
                buyers=args.buyers,
                gap_ms=args.gap_ms,
                unsafe=args.unsafe,
                lock=args.lock or TicketsJob.lock,
                **({} if args.workers is None else {"workers": args.workers}),
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


def cmd_rungs(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    table = Table(
        "rung", "what it teaches", title="The ladder, bottom to top", title_justify="left"
    )
    for rung in INFO.values():
        table.add_row(rung.name, rung.teaches)
    out.print(table)
    return EXIT_OK


def check_lock(args: argparse.Namespace) -> None:
    """--lock picks how the broker rungs guard their Redis store: refused where it would
    silently mean nothing."""
    if args.lock is None or args.workload != "tickets":
        return
    if args.unsafe:
        raise BadInput("--lock guards a safe run: drop --unsafe or --lock")
    if info(args.rung).channel != "broker":
        broker_rungs = ", ".join(names("broker"))
        raise BadInput(
            f"--lock applies to the broker rungs ({broker_rungs}); "
            f"the {args.rung} rung guards its store with a lock of its own"
        )


def cmd_run(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    job = make_job(args.workload, args)
    check_lock(args)
    err = Console(stderr=True)
    show = err.is_terminal and not args.json
    with ExitStack() as cleanup:
        # Starting a broker and workers takes seconds: say so while it happens.
        with err.status(f"starting the {args.rung} rung") if show else nullcontext():
            rung = cleanup.enter_context(open_rung(args.rung, settings))
            with rung.failures():
                rung.prepare(job)
        label = f"{job.workload} on {args.rung}"
        with progress_bar(err, label, job.size, enabled=show) as advance:
            result = run(rung, job, advance)
    emit(result, args.json, out)
    return EXIT_OK if result.verified else EXIT_FAILED


def save(
    write: Callable[[], Sequence[Path]], problems: list[str], what: str = "the results"
) -> list[Path]:
    """The files write() wrote; a failure to write (a full disk, say) is kept in problems
    in one line, and what was written before it stays."""
    try:
        return list(write())
    except OSError as error:
        where = error.filename or what
        problems.append(f"cannot write {where}: {error.strerror or error}")
        return []


def written(paths: Sequence[Path]) -> str:
    return "written: " + (", ".join(str(p) for p in paths) or "nothing")


def writable_folder(folder: Path) -> Path:
    """Check before the runs, not after, that results can be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInput(f"--out cannot be created: {folder} ({error.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise BadInput(f"--out is not writable: {folder}")
    return folder


def cmd_demo(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from ladder.demo import run_demo
    from ladder.demo import write as write_demo
    from ladder.findings import findings

    writable_folder(args.out)
    err = Console(stderr=True)
    show = err.is_terminal and not args.json
    rows: list[Row] = []
    reported = False
    problems: list[str] = []

    def announce(stack: Stack) -> None:
        if not args.json:
            where = "a private Redis" if stack.embedded else "the given broker"
            err.print(f"broker: {where} at {stack.masked_url}")
            if stack.flower:
                flower = stack.flower
                err.print(
                    f"Flower: {flower.address}  (user {flower.user}, password {flower.password}; "
                    "watch the tasks arrive)",
                    highlight=False,
                )

    def report() -> None:
        nonlocal reported
        if reported or not rows:
            return
        reported = True
        # matplotlib takes most of a second to import: only the demo's report needs it.
        from ladder.plot import plot_comparison

        paths = save(lambda: write_demo(rows, args.out), problems)
        if not problems:
            plot = args.out / "comparison.png"
            paths += save(lambda: [plot_comparison(rows, plot)], problems, str(plot))
        if args.json:
            print(json.dumps([{"workload_label": r.label, **r.result.to_dict()} for r in rows]))
        else:
            out.print(comparison_table(rows))
            for line in worker_lines(rows):
                out.print(line, highlight=False)
            for sentence in findings(rows, os.cpu_count() or 1):
                out.print(f"- {sentence}")
            out.print(written(paths))

    def at_end() -> None:
        report()
        if args.hold:
            err.print("holding Redis, the workers and Flower up: Ctrl-C to stop them")
            interrupt.wait()

    try:
        for row in run_demo(
            settings,
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
    verified = bool(rows) and all(r.result.verified for r in rows)
    if not args.no_servers and not demo_servers(args, out, err, problems):
        verified = False
    if problems:
        fail(problems[0], EXIT_FAILED)
    return EXIT_OK if verified else EXIT_FAILED


# Requests per server and K in the demo's short servers section.
DEMO_REQUESTS, DEMO_REQUESTS_QUICK = 20_000, 5_000


def demo_servers(args: argparse.Namespace, out: Console, err: Console, problems: list[str]) -> bool:
    """The demo's last section: the upper-case TCP server in each concurrency model,
    loaded at K = 1, 50 and 500 connections. True when every reply was right."""
    from servers.compare import compare, findings, progress_line, table

    if not args.json:
        err.print("servers: each concurrency model under 1, 50 and 500 connections")
    rows = compare(
        requests=DEMO_REQUESTS_QUICK if args.quick else DEMO_REQUESTS,
        on_row=lambda row: None if args.json else err.print(progress_line(row)),
    )
    path = args.out / "servers.json"
    records = [{"model": r.model, **r.load.to_dict()} for r in rows]

    def write() -> list[Path]:
        path.write_text(json.dumps(records, indent=2) + "\n")
        return [path]

    paths = save(write, problems)
    if not args.json:
        out.print(table(rows))
        for sentence in findings(rows):
            out.print(f"- {sentence}")
        out.print(written(paths))
    return all(row.load.ok for row in rows)


def cmd_bench(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from broker_ipc.peer_rung import PEERS
    from broker_ipc.peer_rung import load as load_peer
    from ladder import bench

    if sum((args.sweep, args.memory, args.hosts)) > 1:
        raise BadInput("--sweep, --memory and --hosts are different benches: choose one")
    if args.repeat is not None and args.repeat < 1:
        raise BadInput(f"--repeat must be at least 1 (got {args.repeat})")
    if args.sweep:
        return bench_sweep(args, settings, out)
    if args.hosts:
        return bench_hosts(args, out)
    repeat = args.repeat or (1 if args.memory else 3 if args.quick else 7)
    writable_folder(args.out)
    if args.peers and args.memory:
        raise BadInput("--peers adds cases to the bench; --memory is a different bench")
    if args.peers:
        for name in PEERS:
            load_peer(name)  # each installed, or one clear line before anything starts
    selected = bench.memory_cases() if args.memory else bench.cases(args.quick, args.peers)
    err = Console(stderr=True)
    show = err.is_terminal and not args.json
    # Long runs: --memory counts items, and names each case as it starts.
    run_cases = [c for c in selected if not (c.runs_of or c.fastest_of)]
    steps = sum(c.job.size for c in run_cases) if args.memory else len(run_cases)
    with progress_bar(err, "bench", repeat * steps, enabled=show) as advance:

        def tick(name: str) -> None:
            if not args.memory:
                advance(1)
            elif show:
                err.print(f"  {name}")

        measured = bench.measure(
            selected,
            repeat,
            settings,
            tick,
            advance if args.memory else lambda n: None,
        )
    table = bench.rows(measured)
    problems: list[str] = []
    paths = save(lambda: [bench.write(table, args.out)], problems)
    if args.json:
        print(json.dumps(table))
    else:
        out.print(bench_table(table))
        out.print(written(paths))
    if problems:
        fail(problems[0], EXIT_FAILED)
    return EXIT_OK if all(row["verified"] for row in table) else EXIT_FAILED


def bench_sweep(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    """`ladder bench --sweep`: one run per point, a table, sentences, files."""
    from ladder import sweep

    writable_folder(args.out)
    err = Console(stderr=True)
    show = err.is_terminal and not args.json
    points = sweep.sweep(
        settings,
        args.quick,
        tick=lambda label: err.print(f"  {label}") if show else None,
    )
    problems: list[str] = []
    paths = save(lambda: sweep.write(points, args.out), problems)
    if args.json:
        print(json.dumps([asdict(p) for p in points]))
    else:
        out.print(sweep.table(points))
        for sentence in sweep.findings(points):
            out.print(f"- {sentence}")
        out.print(written(paths))
    if problems:
        fail(problems[0], EXIT_FAILED)
    return EXIT_OK if all(p.verified for p in points) else EXIT_FAILED


def bench_hosts(args: argparse.Namespace, out: Console) -> int:
    """`ladder bench --hosts`: the celery pipeline with workers on 1, 2 and 3 hosts."""
    from ladder import netns

    reason = netns.unavailable()
    if reason:
        fail(f"--hosts needs network namespaces: {reason}", EXIT_FAILED)
    items = 300 if args.quick else 1_500
    job = PipelineJob(items=items, producers=2, consumers=8, work_ms=10)
    runs = netns.scale_out(job)
    if args.json:
        print(json.dumps([{"hosts": r.hosts, **r.result.to_dict()} for r in runs]))
    else:
        out.print(netns.table(runs))
    return EXIT_OK if all(r.result.verified for r in runs) else EXIT_FAILED


def cmd_serve(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    # The server replaces this process: gevent's model must patch the standard library
    # before anything imports socket, and a signal then reaches the server itself.
    argv = ["-m", MODELS[args.model], "--host", args.host, "--port", str(args.port)]
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *argv])


def cmd_load(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    # asyncio and the client are imported only for this command.
    from servers import compare
    from servers.load import check, messages_for, run_load

    if args.compare:
        err = Console(stderr=True)
        rows = compare.compare(
            args.models,
            args.connections or compare.CONNECTIONS,
            args.messages,
            on_row=lambda row: None if args.json else err.print(compare.progress_line(row)),
        )
        compare.report(rows, args.json, out)
        return EXIT_OK if all(row.load.ok for row in rows) else EXIT_FAILED
    connections = args.connections or [50]
    for k in connections:
        check(k, messages_for(k, args.messages))
    results = [
        run_load(args.host, args.port, k, messages_for(k, args.messages)) for k in connections
    ]
    compare.report_load(results, args.json, out)
    return EXIT_OK if all(result.ok for result in results) else EXIT_FAILED


def emit(result: RunResult, as_json: bool, out: Console) -> None:
    if as_json:
        print(to_json(result))
    else:
        print_result(result, out)


def cmd_deadlock(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    if not 0 < args.timeout_s <= 60:
        raise BadInput(f"--timeout-s must be between 0 and 60 (got {args.timeout_s:g})")
    outcomes = deadlock.demo(args.timeout_s)
    if args.json:
        print(json.dumps([outcome.to_dict() for outcome in outcomes]))
    else:
        table = Table(
            "case",
            "deadlocked",
            "what happened",
            title="Two locks, two threads",
            title_justify="left",
        )
        for outcome in outcomes:
            mark = "yes" if outcome.deadlocked else "no"
            if not outcome.as_meant:
                mark = f"[red]{mark} (unexpected)[/red]"
            table.add_row(outcome.case, mark, outcome.detail)
        out.print(table)
    return EXIT_OK if all(outcome.as_meant for outcome in outcomes) else EXIT_FAILED


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings, Console], int]] = {
    "rungs": cmd_rungs,
    "run": cmd_run,
    "demo": cmd_demo,
    "bench": cmd_bench,
    "deadlock": cmd_deadlock,
    "serve": cmd_serve,
    "load": cmd_load,
}


def main(argv: Sequence[str] | None = None) -> int:
    output = guard_stdout()
    args = build_parser().parse_args(argv)
    # Piped into a file, a table keeps its columns rather than wrapping at 80.
    out = Console() if output.isatty() else Console(width=140)
    interrupt.install()
    notes = logging.StreamHandler(sys.stderr)
    notes.setFormatter(logging.Formatter("ladder: note: %(message)s"))
    logging.getLogger("ladder").addHandler(notes)
    try:
        settings = Settings.load(broker=getattr(args, "broker", None))
        forget_celery_variables()
        code = COMMANDS[args.command](args, settings, out)
    except BadInput as error:
        fail(str(error), EXIT_BAD_INPUT)
    except LadderError as error:
        fail(str(error), EXIT_FAILED)
    # Everything the run started is stopped by now; threads still running Python cannot
    # be, and the exit does not wait for them.
    except KeyboardInterrupt:
        interrupt.exit_now(EXIT_INTERRUPTED, "ladder: error: interrupted")
    except interrupt.Terminated:
        interrupt.exit_now(EXIT_TERMINATED, "ladder: error: terminated")
    output.flush()
    if output.error:
        fail(f"cannot write the output: {output.error}", EXIT_FAILED)
    return code


if __name__ == "__main__":
    sys.exit(main())
