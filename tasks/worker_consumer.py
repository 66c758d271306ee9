"""The Celery worker's consumer, refusing a task message it cannot read instead of dying.

`worker_consumer` in tasks/celery_app.py names it: only a worker imports it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery.worker.consumer import Consumer

from core.settings import VISIBILITY_TIMEOUT_S

# Task message headers Celery reads for every task without checking their type (it
# checks the task's name, time limits, eta and expires itself): with an id of null, or
# retries of "many", it would run the task all the same.
TASK_ID_HEADERS = ("id", "root_id", "parent_id", "group")
MAX_TASK_ID_CHARS = 255


def check_task_headers(headers: dict[str, Any], visibility_timeout_s: float) -> None:
    """Raise ValueError, naming the header, unless a task message's ids are strings (the
    id one of 1 character or more), its retries a whole number from 0, its stamps an
    object, its stamped_headers a list, and its eta, if any, within the visibility
    timeout."""
    check_eta(headers.get("eta"), visibility_timeout_s)
    for name in TASK_ID_HEADERS:
        value = headers.get(name)
        if value is None and name != "id":
            continue
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_TASK_ID_CHARS:
            raise ValueError(
                f"{name} must be a string of 1 to {MAX_TASK_ID_CHARS} characters "
                f"(got {value!r:.80})"
            )
    retries = headers.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a whole number from 0 (got {retries!r:.80})")
    if not isinstance(headers.get("stamps") or {}, dict):
        raise ValueError(f"stamps must be an object (got {headers['stamps']!r:.80})")
    if not isinstance(headers.get("stamped_headers") or [], list):
        raise ValueError(f"stamped_headers must be a list (got {headers['stamped_headers']!r:.80})")


def check_eta(eta: Any, visibility_timeout_s: float) -> None:
    """A task held for later (eta, or countdown, which the sender turns into an eta) waits
    in the worker unacknowledged, and on Redis the visibility timeout gives it back to the
    queue meanwhile: one due further ahead than that would be delivered again and again,
    a copy more in some worker's memory each time. Nothing here sends one so far ahead."""
    if eta is None:
        return
    try:
        due = datetime.fromisoformat(eta)
    except (TypeError, ValueError):
        raise ValueError(f"eta must be an ISO 8601 date (got {eta!r:.80})") from None
    if due.tzinfo is None:  # Celery reads a naive eta as UTC, its default timezone
        due = due.replace(tzinfo=UTC)
    ahead_s = (due - datetime.now(UTC)).total_seconds()
    if ahead_s > visibility_timeout_s:
        raise ValueError(
            f"eta is {ahead_s:,.0f} s ahead, beyond the visibility timeout "
            f"({visibility_timeout_s:g} s): Redis would deliver it again while it waits"
        )


class RefusingConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, refusing a task message it cannot read instead of dying on it:
    Celery catches only InvalidTaskError, ContentDisallowed and DecodeError there, and
    anything else would end the worker with the message held, to kill the next one too.
    A task message's headers are checked first (check_task_headers); the transport has
    checked the rest of the envelope already."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        on_task_received = super().create_task_handler(*args, **kwargs)

        def refusing(message: Any) -> Any:
            try:
                if isinstance(message.headers, dict) and "task" in message.headers:
                    options = self.app.conf.broker_transport_options or {}
                    timeout_s = options.get("visibility_timeout", VISIBILITY_TIMEOUT_S)
                    check_task_headers(message.headers, timeout_s)
                return on_task_received(message)
            except (TypeError, ValueError, AttributeError, KeyError) as error:
                return self.on_invalid_task(None, message, error)

        return refusing
