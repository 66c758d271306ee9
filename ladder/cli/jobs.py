"""The workloads' options, written once for every command that makes a job, and the job
they make."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from core.commandline import Number, OneOf, Whole
from core.errors import BadInput
from core.jobs import TICKET_LOCKS, Job, PipelineJob, SumJob, TicketsJob
from ladder.cli.options import F


def shown(name: str, kind: click.ParamType[Any], default: Any, help: str) -> Callable[[F], F]:
    """An option whose help shows its default."""
    return click.option(name, type=kind, default=default, show_default=True, help=help)


def job_options(f: F) -> F:
    """The options of the three workloads' jobs, with the jobs' own defaults."""
    sums, pipes, tickets = SumJob(), PipelineJob(), TicketsJob()
    whole, number = Whole(), Number()
    options = [
        shown("--n", whole, sums.n, "sum: add 1..N"),
        shown("--chunks", whole, sums.chunks, "sum: ranges of 1..N"),
        click.option(
            "--workers",
            type=whole,
            default=None,
            help="sum: workers (default: cores); tickets: buyers at once (default 8)",
        ),
        shown("--items", whole, pipes.items, "pipeline: items in all"),
        click.option("--producers", type=whole, default=pipes.producers, show_default=True),
        click.option("--consumers", type=whole, default=pipes.consumers, show_default=True),
        click.option("--payload-bytes", type=whole, default=pipes.payload_bytes, show_default=True),
        shown("--work-ms", number, pipes.work_ms, "work per item, ms"),
        click.option(
            "--work-kind",
            type=OneOf(["io", "cpu"]),
            default=pipes.work_kind,
            show_default=True,
            help="io: sleep (releases the GIL); cpu: a pure-Python loop",
        ),
        shown("--produce-ms", number, pipes.produce_ms, "delay per item"),
        shown("--queue-size", whole, pipes.queue_size, "queue's bound"),
        click.option(
            "--end",
            type=OneOf(["sentinel", "join"]),
            default=pipes.end,
            show_default=True,
            help="end of stream: a sentinel per consumer, or JoinableQueue.join",
        ),
        shown(
            "--batch", whole, pipes.batch, "items per message (threads, processes, kombu, celery)"
        ),
        shown("--tickets", whole, tickets.tickets, "tickets: for sale"),
        shown("--buyers", whole, tickets.buyers, "tickets: racing"),
        shown(
            "--gap-ms",
            number,
            tickets.gap_ms,
            "a buyer's wait between checking the count and buying",
        ),
        click.option("--unsafe", is_flag=True, help="the naive read-modify-write: the oversell"),
        click.option(
            "--lock",
            type=OneOf(list(TICKET_LOCKS)),
            default=None,
            help="kombu, celery: one atomic Lua script (default), or a Redis lock with a timeout",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


PIPELINE_OPTIONS = (
    "items",
    "producers",
    "consumers",
    "payload_bytes",
    "work_ms",
    "work_kind",
    "produce_ms",
    "queue_size",
    "end",
    "batch",
)


def make_job(workload: str, o: dict[str, Any]) -> Job:
    """The job asked for; every option is checked, the other workloads' included."""
    try:
        jobs: dict[str, Job] = {
            "sum": SumJob(
                n=o["n"],
                chunks=o["chunks"],
                workers=os.cpu_count() or 1 if o["workers"] is None else o["workers"],
            ),
            "pipeline": PipelineJob(**{name: o[name] for name in PIPELINE_OPTIONS}),
            "tickets": TicketsJob(
                tickets=o["tickets"],
                buyers=o["buyers"],
                gap_ms=o["gap_ms"],
                unsafe=o["unsafe"],
                lock=o["lock"] or TicketsJob.lock,
                **({} if o["workers"] is None else {"workers": o["workers"]}),
            ),
        }
    except BadInput as error:
        # A job's message starts with its field's name; say it as the option is spelt.
        field_name, _, rest = str(error).partition(" ")
        raise BadInput(f"--{field_name.replace('_', '-')} {rest}") from None
    return jobs[workload]
