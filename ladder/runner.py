"""Runs a job on a rung, times it and verifies what comes back."""

from __future__ import annotations

import time

from ladder.errors import BadInput
from ladder.jobs import Job, PipelineJob, SumJob, TicketsJob
from ladder.registry import RUNGS, get_rung
from ladder.results import RunResult, verify_pipeline, verify_sum, verify_tickets
from ladder.rung import Progress, Rung, no_progress
from ladder.settings import Settings
from ladder.stack import Stack
from producers.broker_rung import BrokerRung


def run(rung: Rung, job: Job, progress: Progress = no_progress) -> RunResult:
    """Run one job on a rung that is already started; the timer covers only the work."""
    if isinstance(job, PipelineJob) and job.batched and not rung.batches:
        batching = ", ".join(name for name, r in RUNGS.items() if r.batches)
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
    if issubclass(rung, BrokerRung):
        return rung(settings, stack=stack)
    return rung(settings)
