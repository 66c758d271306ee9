"""The thread-pool rung: concurrent.futures.ThreadPoolExecutor.

producer threads -> submit -> worker threads -> futures -> done callbacks -> Consumed
submit(buy) -> worker threads -> one count in shared memory, guarded by a threading.Lock
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from local_ipc.pool import PoolRung
from tasks.tickets import MemoryStore, Store


class ThreadPoolRung(PoolRung[ThreadPoolExecutor]):
    name = "thread-pool"

    def executor(self, workers: int) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pool")

    @contextmanager
    def ticket_store(self, tickets: int) -> Iterator[tuple[Store, AbstractContextManager[Any]]]:
        yield MemoryStore(tickets), threading.Lock()
