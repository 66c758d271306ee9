"""Runs a job on a rung, times it and verifies what comes back."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from core.errors import BadInput
from core.jobs import Job, PipelineJob, SumJob, TicketsJob
from core.results import RunResult, verify_pipeline, verify_sum, verify_tickets
from core.rung import Progress, Rung, no_progress
from core.settings import Settings
from ladder.registry import get_rung, names

if TYPE_CHECKING:
    from core.stack import Stack


def run(rung: Rung, job: Job, progress: Progress = no_progress) -> RunResult:
    """Run one job on a rung that is already started; the timer covers only the work."""
    # A rung the registry does not list (a peer of the bench's) moves one item a message.
    if isinstance(job, PipelineJob) and job.batched and rung.name not in names(batches=True):
        batching = ", ".join(names(batches=True))
        raise BadInput(f"--batch works on the {batching} rungs (got --rung {rung.name})")
    with rung.failures():
        rung.prepare(job)
        if isinstance(job, SumJob):
            start = time.perf_counter()
            total = rung.run_sum(job, progress)
            return verify_sum(rung.name, job, total, time.perf_counter() - start)
        if isinstance(job, TicketsJob):
            start = time.perf_counter()
            sales = rung.run_tickets(job, progress)
            return verify_tickets(rung.name, job, sales, time.perf_counter() - start)
        start = time.perf_counter()
        consumed = rung.run_pipeline(job, progress)
        return verify_pipeline(rung.name, job, consumed, time.perf_counter() - start)


def open_rung(name: str, settings: Settings, stack: Stack | None = None) -> Rung:
    """The named rung, on a shared broker stack when one is given (broker rungs only)."""
    rung = get_rung(name)
    return rung(settings, stack=stack) if rung.channel == "broker" else rung(settings)
