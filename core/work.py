"""What the contract says of the work: its kinds, the queues that carry them, its limits,
and the arithmetic of a sum. The work itself is in tasks/; this is what a job is checked
against (core/jobs.py) and what a worker checks what it takes against (tasks/workloads.py).
"""

from __future__ import annotations

import re
from typing import Any, Literal

WorkKind = Literal["io", "cpu"]
# The Celery queues that carry each kind of work (tasks/celery_app.py routes them), and
# Celery's own default, for a task sent by a client that knows no routes.
CPU_QUEUE, IO_QUEUE, DEFAULT_QUEUE = "cpu", "io", "celery"
QUEUES = (CPU_QUEUE, IO_QUEUE, DEFAULT_QUEUE)


def queue_for(kind: WorkKind, work_ms: float) -> str:
    """The queue of a task whose work is work_ms of `kind`: CPU work needs processes."""
    return CPU_QUEUE if kind == "cpu" and work_ms > 0 else IO_QUEUE


WORK_KINDS: tuple[WorkKind, ...] = ("io", "cpu")
Item = dict[str, Any]

# The limits of a job (core/jobs.py checks a job against them when it is made) and of
# the work a worker takes from a queue (tasks/workloads.py's checks), which anyone may
# write to.
MAX_N = 10_000_000_000
MAX_CHUNKS = 100_000
MAX_WORK_MS = 60_000.0
MAX_BATCH = 100_000
MAX_BUYERS = 10_000_000
MAX_GAP_MS = 60_000.0
# The most a message's body may take once decoded, in bytes: what producers may send
# and what a consumer's transport takes from the broker.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# A run's id, as core.broker.RunKeys.new makes it: every key of the run is under
# ladder:<run id>:, so an id of any other shape could name keys outside it.
RUN_ID = re.compile(r"[0-9a-f]{12}")


def chunk_ranges(n: int, chunks: int) -> list[tuple[int, int]]:
    """Split 1..n into `chunks` half-open ranges of nearly equal length."""
    bounds = [1 + (n * k) // chunks for k in range(chunks + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(chunks)]


def expected_sum(n: int) -> int:
    """1 + 2 + ... + n, the closed form every sum run is checked against."""
    return n * (n + 1) // 2
