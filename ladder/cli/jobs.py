"""The workloads' options, written once for every command that makes a job, and the job
they make."""

from __future__ import annotations

import os
from typing import Any

import click

from core.commandline import Number, OneOf, Whole
from core.errors import BadInput
from core.jobs import TICKET_LOCKS, Job, PipelineJob, SumJob, TicketsJob
from ladder.cli.options import F


def job_options(f: F) -> F:
    """The options of the three workloads' jobs, with the jobs' own defaults."""
    sums, pipes, tickets = SumJob(), PipelineJob(), TicketsJob()
    whole, number = Whole(), Number()
    options = [
        click.option("--n", type=whole, default=sums.n, show_default=True, help="sum: add 1..N"),
        click.option(
            "--chunks",
            type=whole,
            default=sums.chunks,
            show_default=True,
            help="sum: ranges of 1..N",
        ),
        click.option(
            "--workers",
            type=whole,
            default=None,
            help="sum: workers (default: cores); tickets: buyers at once (default 8)",
        ),
        click.option(
            "--items",
            type=whole,
            default=pipes.items,
            show_default=True,
            help="pipeline: items in all",
        ),
        click.option("--producers", type=whole, default=pipes.producers, show_default=True),
        click.option("--consumers", type=whole, default=pipes.consumers, show_default=True),
        click.option("--payload-bytes", type=whole, default=pipes.payload_bytes, show_default=True),
        click.option(
            "--work-ms",
            type=number,
            default=pipes.work_ms,
            show_default=True,
            help="work per item, ms",
        ),
        click.option(
            "--work-kind",
            type=OneOf(["io", "cpu"]),
            default=pipes.work_kind,
            show_default=True,
            help="io: sleep (releases the GIL); cpu: a pure-Python loop",
        ),
        click.option(
            "--produce-ms",
            type=number,
            default=pipes.produce_ms,
            show_default=True,
            help="delay per item",
        ),
        click.option(
            "--queue-size",
            type=whole,
            default=pipes.queue_size,
            show_default=True,
            help="queue's bound",
        ),
        click.option(
            "--end",
            type=OneOf(["sentinel", "join"]),
            default=pipes.end,
            show_default=True,
            help="end of stream: a sentinel per consumer, or JoinableQueue.join",
        ),
        click.option(
            "--batch",
            type=whole,
            default=pipes.batch,
            show_default=True,
            help="items per message (threads, processes, kombu, celery)",
        ),
        click.option(
            "--tickets",
            type=whole,
            default=tickets.tickets,
            show_default=True,
            help="tickets: for sale",
        ),
        click.option(
            "--buyers",
            type=whole,
            default=tickets.buyers,
            show_default=True,
            help="tickets: racing",
        ),
        click.option(
            "--gap-ms",
            type=number,
            default=tickets.gap_ms,
            show_default=True,
            help="a buyer's wait between checking the count and buying",
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
