"""The one task every peer runs: the celery rung's tasks.handle_item, as a plain function."""

from __future__ import annotations

import functools
import os

from core.broker import RunKeys
from core.recorder import Recorder
from core.settings import FALLBACK_BROKER_URL, Settings
from core.work import Item, WorkKind
from tasks import workloads

# A worker finds its broker where the celery workers find theirs: CELERY_BROKER_URL.
BROKER_URL = Settings.load().broker_url or FALLBACK_BROKER_URL
QUEUE = "ladder-peers"  # each peer's queue of that name: its own key in Redis


@functools.cache
def recorder() -> Recorder:
    """One Redis client per worker process."""
    return Recorder(BROKER_URL, name=f"ladder-peer-worker-{os.getpid()}")


def handle(item: Item, run_id: str, work_ms: float, work_kind: WorkKind) -> None:
    """Check the item, do its work, record it once for the parent to verify."""
    item_id, latency_s = workloads.handle_item(workloads.check_item(item), work_ms, work_kind)
    recorder().record(RunKeys(run_id), item_id, latency_s)
