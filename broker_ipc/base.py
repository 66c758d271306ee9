"""What the kombu and celery rungs share: a stack to run on, and watching the record.

Over a broker the parent cannot read its consumers' memory nor join their results:
it watches the run's handled list in Redis grow, then reads it to verify.

How a pipeline run over the broker ends, whatever went wrong on the way:

    producers done (or dead: what each sent is known, the rest was never made)
    -> wait until every item sent is handled; a dead consumer's messages come back
       after the visibility timeout and are handled then (redelivered, counted once)
    -> still missing once nothing has moved for a while: the message vanished in
       transit, so the rung sends that item again (resent, counted)
    -> a broker outage pauses the wait, and the run reports it
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.process import BaseProcess

from core.broker import BROKER_ERRORS, OUTAGE_ERRORS, RunKeys, describe
from core.errors import RunFailed
from core.forkserver import (
    Child,
    SentCounter,
    how_it_ended,
    sent_counter,
    start_fork_server,
    stop_processes,
)
from core.jobs import Job, PipelineJob
from core.recorder import Recorder
from core.results import Consumed
from core.rung import Progress, Rung, Shown
from core.settings import Settings
from core.stack import Stack
from core.wait import wait_while_moving

POLL_S = 0.1
# kombu's Redis transport takes a message off the list (BRPOP) and only then, in the
# consumer, files it as unacknowledged: a consumer killed between the two takes the
# message with it, and no visibility timeout brings it back. Nothing else can, so the
# rung resends what is still missing once the timeout has passed and the consumers'
# sweep for old unacknowledged messages (every second, see transport_options) had its
# chance. A resend too early would cost only a redelivery, counted once.
RESEND_MARGIN_S = 10.0


class BrokerRung(Rung):
    """Base of the broker rungs: runs on a given stack, or starts and stops its own."""

    channel = "broker"

    def __init__(self, settings: Settings | None = None, stack: Stack | None = None) -> None:
        super().__init__(settings)
        self.owns_stack = stack is None
        self.stack = stack or Stack(self.settings)

    def stall_s(self, job: Job) -> float:
        """How long nothing may be handled before the run is declared stuck: long enough
        for the messages of a consumer that died to come back (the visibility timeout)."""
        work_s = job.work_ms / 1000 if isinstance(job, PipelineJob) else 0.0
        return 15.0 + self.settings.visibility_timeout_s + 10 * work_s

    def resend_after_s(self, job: PipelineJob) -> float:
        """How long nothing may be handled before what is missing is sent again."""
        return RESEND_MARGIN_S + self.settings.visibility_timeout_s + 10 * job.work_ms / 1000

    def resend(self, keys: RunKeys, job: PipelineJob, ids: Sequence[int]) -> None:
        """Send these items again, as the producers did."""
        raise NotImplementedError

    def drain(
        self,
        job: PipelineJob,
        keys: RunKeys,
        producers: Sequence[BaseProcess],
        sent: Sequence[SentCounter],
        watch: Watch,
    ) -> Consumed:
        """Wait for the producers, then for every item they sent to be handled."""
        watch.until(lambda _: not any(p.is_alive() for p in producers))
        unsent, deaths = [], []
        for number, (process, count) in enumerate(zip(producers, sent, strict=True)):
            if process.exitcode != 0:
                share = job.share(number)
                unsent.append(share[count.value :])
                deaths.append(
                    f"{process.name} died ({how_it_ended(process)}) after sending "
                    f"{count.value:,} of its {len(share):,} items"
                )
        made = job.items - sum(len(ids) for ids in unsent)
        resent = 0
        if not watch.until(lambda n: n >= made, stall_s=self.resend_after_s(job)):
            handled = set(watch.read().ids)
            never = set().union(*unsent)
            missing = [i for i in range(job.items) if i not in handled and i not in never]
            self.resend(keys, job, missing)
            resent = len(missing)
            # What is still missing after this is lost, and the tally says so.
            watch.until(lambda n: n >= made, stall_s=self.stall_s(job))
        consumed = watch.read()
        consumed.unsent, consumed.deaths, consumed.resent = unsent, deaths, resent
        consumed.outages_s = watch.outages_s
        return consumed

    def send_and_drain(
        self,
        job: PipelineJob,
        produce: Callable[..., None],
        leading: tuple[object, ...],
        progress: Progress,
    ) -> Consumed:
        """A task queue's pipeline: job.producers processes each run
        produce(*leading, keys, share of ids, job, sent). No sentinel, as tasks are
        independent: the run is over when every item sent is recorded (see drain for
        what happens when one goes missing)."""
        url, keys = self.stack.url, RunKeys.new()
        sent = [sent_counter() for _ in range(job.producers)]
        producers = [
            Child(
                target=produce,
                args=(*leading, keys, job.share(p), job, sent[p]),
                name=f"producer-{p}",
            )
            for p in range(job.producers)
        ]
        watch = Watch(url, keys, progress, outage_limit_s=self.stall_s(job))
        with keys.lease(url):
            try:
                for process in producers:
                    process.start()
                return self.drain(job, keys, producers, sent, watch)
            finally:
                stop_processes(producers)

    @contextlib.contextmanager
    def failures(self) -> Iterator[None]:
        """A broker that fails a command mid-run (out of memory, gone for good) ends the
        run with one line saying so."""
        try:
            yield
        except BROKER_ERRORS as error:
            raise RunFailed(describe(error, self.stack.url)) from None

    def open(self) -> None:
        if self.owns_stack:
            self.stack.open()
        start_fork_server()

    def close(self) -> None:
        if self.owns_stack:
            self.stack.close()


class Watch:
    """Follows a run's handled list: advances the progress bar, tells when it stalls,
    and times the broker outages it waits through."""

    def __init__(self, url: str, keys: RunKeys, progress: Progress, outage_limit_s: float) -> None:
        self.recorder = Recorder(url, ride_out=False)
        self.keys = keys
        self.shown = Shown(progress)
        self.outage_limit_s = outage_limit_s
        self.outages_s: list[float] = []
        self.down_since: float | None = None

    def count(self) -> int | None:
        """Items handled so far; None while the broker is unreachable."""
        try:
            handled = self.recorder.count(self.keys)
        except OUTAGE_ERRORS:
            now = time.monotonic()
            self.down_since = self.down_since or now
            if now - self.down_since > self.outage_limit_s:
                raise RunFailed(
                    f"the broker has been unreachable for {now - self.down_since:.0f} s"
                ) from None
            return None
        if self.down_since is not None:
            self.outages_s.append(time.monotonic() - self.down_since)
            self.down_since = None
        return handled

    def shown_count(self) -> int | None:
        """count(), the progress bar advanced to it."""
        handled = self.count()
        return None if handled is None else self.shown.to(handled)

    def until(self, done: Callable[[int], bool], stall_s: float | None = None) -> bool:
        """Poll until done(handled) holds (True), or nothing was handled for stall_s (False).
        Time with the broker down does not count towards stall_s (count bounds it)."""
        return wait_while_moving(self.shown_count, done, stall_s, POLL_S)

    def read(self) -> Consumed:
        """Everything handled, read once the broker answers."""
        self.until(lambda _: True)
        return self.recorder.read(self.keys)
