"""Runs a job on a rung, times it and verifies what comes back."""

from __future__ import annotations

import time

from ladder.jobs import Job, SumJob
from ladder.registry import get_rung
from ladder.results import RunResult, verify_pipeline, verify_sum
from ladder.rung import Progress, Rung, no_progress
from ladder.settings import Settings
from ladder.stack import Stack
from producers.broker_rung import BrokerRung


def run(rung: Rung, job: Job, progress: Progress = no_progress) -> RunResult:
    """Run one job on a rung that is already started; the timer covers only the work."""
    rung.prepare(job)
    if isinstance(job, SumJob):
        start = time.perf_counter()
        total = rung.run_sum(job, progress)
        return verify_sum(rung.name, job, total, time.perf_counter() - start)
    start = time.perf_counter()
    consumed = rung.run_pipeline(job, progress)
    return verify_pipeline(rung.name, job, consumed, time.perf_counter() - start)


def open_rung(name: str, settings: Settings, stack: Stack | None = None) -> Rung:
    """The named rung, on a shared broker stack when one is given (broker rungs only)."""
    rung = get_rung(name)
    if issubclass(rung, BrokerRung):
        return rung(settings, stack=stack)
    return rung(settings)
