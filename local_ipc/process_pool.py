"""The process-pool rung: concurrent.futures.ProcessPoolExecutor.

    producer threads -> submit -> worker processes (pickled calls) -> futures -> callbacks

The same code as the thread-pool rung; only the executor differs, and with it the GIL
no longer caps CPU-bound work.

    submit(buy) -> worker processes -> a multiprocessing.Manager's dict and Lock, through
    proxies: every read, write, acquire and release is a message to the manager process
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from multiprocessing.managers import SyncManager
from typing import Any

from core.forkserver import (
    CONTEXT,
    pool_death,
    process_pool,
    quiet_child,
    start_fork_server,
    stop_pool,
)
from core.jobs import Job
from local_ipc.pool import PoolRung
from tasks.tickets import MappingStore, Store


class ProcessPoolRung(PoolRung[ProcessPoolExecutor]):
    name = "process-pool"

    def prepare(self, job: Job) -> None:
        start_fork_server()

    def executor(self, workers: int) -> ProcessPoolExecutor:
        return process_pool(workers)

    def stop(self, pool: ProcessPoolExecutor) -> None:
        stop_pool(pool)  # terminates the workers: a process, unlike a thread, can be stopped

    def death(self, pool: ProcessPoolExecutor) -> str:
        return pool_death(pool)

    @contextmanager
    def ticket_store(self, tickets: int) -> Iterator[tuple[Store, AbstractContextManager[Any]]]:
        # A submitted call is pickled: a plain dict would arrive as a copy, and a
        # threading.Lock cannot be pickled at all. A manager's proxies pickle as the
        # address of the one dict and the one lock, kept in the manager's process.
        manager = SyncManager(ctx=CONTEXT)
        manager.start(initializer=quiet_child)
        with manager:
            yield MappingStore(manager.dict(tickets=tickets)), manager.Lock()
