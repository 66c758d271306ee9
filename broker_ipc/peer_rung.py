"""A peer as a rung of the bench: its workers started for a job's shape, one producer
process sending through the peer's own client, the run watched and verified as the
celery rung's is (broker_ipc.base).

The shape mirrors the celery rung's topology(): min(consumers, cores) processes, the
consumers spread over them as threads where the peer has threads (RQ has none: one
SimpleWorker process per consumer).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from broker_ipc.base import BrokerRung
from broker_ipc.celery_rung import topology
from core import procs
from core.broker import RunKeys
from core.errors import BadInput
from core.forkserver import SentCounter
from core.jobs import Job, PipelineJob
from core.results import Consumed
from core.rung import Progress, no_progress
from core.settings import Settings
from core.stack import Stack
from core.work import Item
from producers.sending import send_all
from tasks.workloads import make_message

PEERS = ("dramatiq", "huey", "rq")
START_TIMEOUT_S = 60.0


def load(name: str) -> ModuleType:
    """The peer's module; a clear error if the optional `peers` extra is not installed."""
    try:
        return importlib.import_module(f"peers.{name}_peer")
    except ModuleNotFoundError as error:
        raise BadInput(
            f"--peers needs Dramatiq, Huey and RQ ({error.name} is missing): "
            "pip install -e '.[peers]', or run make bench"
        ) from None


def produce(
    name: str, url: str, keys: RunKeys, ids: range, job: PipelineJob, sent: SentCounter
) -> None:
    """Send one task per id through the peer's own client, pausing while its queue holds
    queue_size messages, as the celery rung's producer does."""
    peer = load(name)
    send_task = peer.sender(url)

    def send(message: Item | list[Item]) -> None:
        send_task(message, keys.run_id, job.work_ms, job.work_kind)

    send_all(url, peer.QUEUE_KEY, send, ids, job, sent)


def shape(job: PipelineJob) -> tuple[int, int]:
    """(processes, threads each) for job.consumers consumers: the celery rung's topology."""
    workers = topology(job)
    return workers.instances, workers.concurrency


class PeerRung(BrokerRung):
    """One peer (dramatiq, huey or rq) on the stack's Redis; pipeline only."""

    name = "peer"

    def __init__(self, peer: str, settings: Settings | None = None, stack: Stack | None = None):
        super().__init__(settings, stack)
        self.peer = load(peer)
        self.name = peer  # type: ignore[misc]
        self.shape: tuple[int, int] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def prepare(self, job: Job) -> None:
        if not isinstance(job, PipelineJob):
            raise BadInput(f"{self.name} runs the pipeline only (got {job.workload})")
        if self.shape != shape(job):
            self.stop_workers()
            self.start_workers(*shape(job))

    def start_workers(self, processes: int, threads: int) -> None:
        # The URL travels in the environment, never on a command line that ps shows.
        url = self.stack.url
        env = {**os.environ, "CELERY_BROKER_URL": url, "RQ_REDIS_URL": url}
        bin_folder = Path(sys.executable).parent
        logs = []
        try:
            for index, argv in enumerate(self.peer.worker_argv(processes, threads)):
                log = self.stack.workdir / f"{self.name}-{index}.log"
                logs.append(log)
                command = [str(bin_folder / argv[0]), *argv[1:]]
                self.workers.append(procs.spawn(command, log, env))
            ready_lines = processes if len(logs) == 1 else len(logs)
            self.wait_until_ready(logs, ready_lines)
        except BaseException:
            self.stop_workers()
            raise
        self.shape = (processes, threads)

    def wait_until_ready(self, logs: Sequence[Path], expected: int) -> None:
        """Until the workers' logs say `expected` worker processes are taking work."""

        def ready() -> bool:
            said = sum(log.read_text(errors="replace").count(self.peer.READY_LINE) for log in logs)
            return said >= expected

        for process, log in zip(self.workers, logs, strict=True):
            procs.wait_ready(process, ready, f"{self.name} worker", log, START_TIMEOUT_S)

    def stop_workers(self) -> None:
        procs.stop(*self.workers)
        self.workers, self.shape = [], None

    def close(self) -> None:
        self.stop_workers()
        super().close()

    def run_pipeline(self, job: PipelineJob, progress: Progress = no_progress) -> Consumed:
        return self.send_and_drain(job, produce, (self.name, self.stack.url), progress)

    def resend(self, keys: RunKeys, job: PipelineJob, ids: Sequence[int]) -> None:
        send = self.peer.sender(self.stack.url)
        for item_id in ids:
            send(
                make_message([item_id], job.payload, False), keys.run_id, job.work_ms, job.work_kind
            )
