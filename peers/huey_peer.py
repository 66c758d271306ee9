"""Huey: a task on a RedisHuey; `huey_consumer peers.huey_peer.huey -k thread -w T`.

Huey pickles its messages by default; here they are JSON (JsonSerializer), as for every
rung. A consumer takes a message off the list and runs it: there is no acknowledgement.
"""

from __future__ import annotations

import json
from typing import Any

from huey import RedisHuey
from huey.registry import Message
from huey.serializer import Serializer

from peers import work

NAME = "huey"
READY_LINE = "Huey consumer started"


class JsonSerializer(Serializer):  # type: ignore[misc]
    """A Huey message as a JSON array of its fields (no ETA, no callbacks here)."""

    def _serialize(self, data: Message) -> bytes:
        return json.dumps(list(data)).encode()

    def _deserialize(self, data: bytes) -> Message:
        return Message(*json.loads(data))


def make_huey(url: str) -> tuple[RedisHuey, Any]:
    """The app and its task, for a broker URL. No results are kept: the record is the result."""
    huey = RedisHuey(work.QUEUE, url=url, results=False, serializer=JsonSerializer())
    return huey, huey.task(name="handle")(work.handle)


def worker_argv(processes: int, threads: int) -> list[list[str]]:
    """One huey_consumer per process, `threads` worker threads each."""
    argv = ["huey_consumer", f"{__name__}.huey", "--worker-type", "thread"]
    return [[*argv, "--workers", str(threads)] for _ in range(processes)]


def sender(url: str) -> Any:
    """send(item, run_id, work_ms, work_kind)."""
    _, task = make_huey(url)

    def send(*args: Any) -> None:
        task(*args)

    return send


# What the worker command imports.
huey, handle = make_huey(work.BROKER_URL)
QUEUE_KEY = huey.storage.queue_key  # RedisStorage's list
