"""Fixtures for the broker tests: a private Redis and real Celery workers, started and stopped.

Never the machine's shared Redis: each session starts its own redis-server on a free port,
with a password, and stops it at the end, even when a test fails.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.celery_workers import CeleryWorkers, Topology
from core.stack import RedisServer


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL, password included, of a private redis-server for the whole session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def celery_workers(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CeleryWorkers]:
    """Two real `celery -A tasks worker` processes serving redis_url, two threads each."""
    workers = CeleryWorkers(
        redis_url,
        redis_url,
        Topology(instances=2, pool="threads", concurrency=2),
        tmp_path_factory.mktemp("workers"),
    )
    try:
        workers.start()
        yield workers
    finally:
        workers.stop()
