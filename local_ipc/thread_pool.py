"""The thread-pool rung: concurrent.futures.ThreadPoolExecutor.

producer threads -> submit -> worker threads -> futures -> done callbacks -> Consumed
"""

from __future__ import annotations

from concurrent.futures import Executor, ThreadPoolExecutor

from local_ipc.pool import PoolRung


class ThreadPoolRung(PoolRung):
    name = "thread-pool"
    teaches = "concurrent.futures with threads: submit, futures, as_completed, done callbacks"

    def executor(self, workers: int) -> Executor:
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pool")
