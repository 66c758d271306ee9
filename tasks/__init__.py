"""What the work is: pure workload functions, and the Celery app that wraps them.

`celery -A tasks worker` finds the app as `tasks.app`; it is imported only when asked
for, so local rungs and their child processes never import celery.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from tasks.celery_app import app

        return app
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
