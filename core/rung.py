"""The contract every rung implements: two methods, one per workload.

A rung moves work through its own channel (a list, a queue, a pool, a broker) and
hands back raw outcomes; it never prints and never verifies. The runner times it,
verifies what it returns and reports.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, ClassVar, Literal

from core.closing import Closing
from core.jobs import Job, PipelineJob, SumJob, TicketsJob
from core.results import Consumed, Sales
from core.settings import Settings

if TYPE_CHECKING:
    from core.celery_workers import WorkerShape
    from core.stack import Stack

# Where a rung's work moves: within this machine's memory, or through a message broker.
Channel = Literal["local", "broker"]

# Advance the progress bar by n units (numbers summed, items handled). Safe to call
# from any thread of the parent process; rungs call it every PROGRESS_EVERY units at most.
Progress = Callable[[int], None]
PROGRESS_EVERY = 500


def no_progress(n: int) -> None:
    """A Progress that shows nothing."""


class Shown:
    """A progress bar fed running totals (items handled so far) instead of increments."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.count = 0

    def to(self, count: int) -> int:
        """Advance the bar to count; count."""
        if count != self.count:
            self.progress(count - self.count)
            self.count = count
        return count


class Rung(Closing):
    """Base of every rung: a subclass sets its name, and writes the three methods (what
    the CLI shows of it before importing it is in ladder/registry.py).

    A rung is a context manager so that one with long-lived parts (a broker, workers)
    can start them on enter (open) and stop them on exit (close), outside the timed runs.
    """

    name: ClassVar[str]
    channel: ClassVar[Channel] = "local"

    def __init__(self, settings: Settings | None = None, stack: Stack | None = None) -> None:
        """stack: the broker stack to run on, shared by several runs (a broker rung's;
        a local rung has none, and takes none)."""
        self.settings = settings or Settings()

    def prepare(self, job: Job) -> None:
        """Get ready for job outside the timed run: start workers of the right shape."""

    def served_by(self, job: Job) -> list[WorkerShape]:
        """The workers that served job, as they report themselves: none for a rung whose
        workers are its own threads or processes."""
        return []

    def failures(self) -> AbstractContextManager[None]:
        """Where the rung's channel can fail (a broker, say), what turns its errors into a
        RunFailed of one line; nothing to turn here."""
        return nullcontext()

    def run_sum(self, job: SumJob, progress: Progress = no_progress) -> int:
        """Sum job.ranges() with job.workers workers; return the total."""
        raise NotImplementedError

    def run_pipeline(self, job: PipelineJob, progress: Progress = no_progress) -> Consumed:
        """Move every item from job.producers producers to job.consumers consumers."""
        raise NotImplementedError

    def run_tickets(self, job: TicketsJob, progress: Progress = no_progress) -> Sales:
        """Let job.buyers buyers, job.workers at once, race for job.tickets; count the sales."""
        raise NotImplementedError
