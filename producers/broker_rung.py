"""What the kombu and celery rungs share: a stack to run on, and watching the record.

Over a broker the parent cannot read its consumers' memory nor join their results:
it watches the run's handled list in Redis grow, then reads it to verify.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from consumers.recorder import Recorder
from ladder import interrupt
from ladder.broker import RunKeys
from ladder.jobs import Job, PipelineJob
from ladder.results import Consumed
from ladder.rung import Progress, Rung
from ladder.settings import Settings
from ladder.stack import Stack
from local_ipc.processes import start_fork_server

POLL_S = 0.1


class BrokerRung(Rung):
    """Base of the broker rungs: runs on a given stack, or starts and stops its own."""

    def __init__(self, settings: Settings | None = None, stack: Stack | None = None) -> None:
        super().__init__(settings)
        self.owns_stack = stack is None
        self.stack = stack or Stack(self.settings)

    def stall_s(self, job: Job) -> float:
        """How long nothing may be handled before the run is declared stuck: long enough
        for the messages of a consumer that died to come back (the visibility timeout)."""
        work_s = job.work_ms / 1000 if isinstance(job, PipelineJob) else 0.0
        return 15.0 + self.settings.visibility_timeout_s + 10 * work_s

    def __enter__(self) -> Self:
        if self.owns_stack:
            self.stack.__enter__()
        start_fork_server()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.owns_stack:
            self.stack.close()


class Watch:
    """Follows a run's handled list: advances the progress bar, tells when it stalls."""

    def __init__(self, url: str, keys: RunKeys, progress: Progress) -> None:
        self.recorder = Recorder(url)
        self.keys = keys
        self.progress = progress
        self.shown = 0

    def until(self, done: Callable[[int], bool], stall_s: float | None = None) -> bool:
        """Poll until done(handled) holds (True), or nothing was handled for stall_s (False)."""
        last_change = time.monotonic()
        while True:
            handled = self.recorder.count(self.keys)
            if handled != self.shown:
                self.progress(handled - self.shown)
                self.shown = handled
                last_change = time.monotonic()
            if done(handled):
                return True
            if stall_s is not None and time.monotonic() - last_change > stall_s:
                return False
            interrupt.check()
            time.sleep(POLL_S)

    def read(self) -> Consumed:
        return self.recorder.read(self.keys)
