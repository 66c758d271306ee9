"""The process-pool rung: concurrent.futures.ProcessPoolExecutor.

    producer threads -> submit -> worker processes (pickled calls) -> futures -> callbacks

The same code as the thread-pool rung; only the executor differs, and with it the GIL
no longer caps CPU-bound work.
"""

from __future__ import annotations

from concurrent.futures import Executor, ProcessPoolExecutor

from ladder.jobs import Job
from local_ipc.pool import PoolRung
from local_ipc.processes import CONTEXT, quiet_child, start_fork_server


class ProcessPoolRung(PoolRung):
    name = "process-pool"
    teaches = "concurrent.futures with processes: the same API, CPU-bound work across cores"

    def prepare(self, job: Job) -> None:
        start_fork_server()

    def executor(self, workers: int) -> Executor:
        return ProcessPoolExecutor(max_workers=workers, mp_context=CONTEXT, initializer=quiet_child)
