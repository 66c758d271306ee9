"""Run in a child of the fork server: which broker libraries it has imported, once it has
imported what the local rungs' children run. Only the standard library is imported here,
so that the answer is the fork server's and the local rungs', not this module's."""

from __future__ import annotations

import importlib
import sys
from typing import Any

BROKER_LIBRARIES = ("celery", "kombu", "redis")
LOCAL_CHILDREN = ("local_ipc.processes", "local_ipc.process_pool", "local_ipc.asyncio_rung")


def imported() -> list[str]:
    return sorted(name for name in BROKER_LIBRARIES if name in sys.modules)


def report(answers: Any) -> None:
    for module in LOCAL_CHILDREN:
        importlib.import_module(module)
    answers.put(imported())
