"""Fixtures for the broker tests: private redis-servers, private RabbitMQ nodes and real
Celery workers, started and stopped.

Never the machine's shared Redis or RabbitMQ: every broker a test uses comes from
redis_servers or rabbit_nodes, on a free port, with a password, and is stopped at the end
of its block, even when a test fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from core.celery_workers import CeleryWorkers, Topology
from core.rabbitmq import RabbitNode
from tests.support.rabbit_nodes import RabbitNodes
from tests.support.redis_servers import RedisServers

CONFIG_HOME = pytest.StashKey[tuple[str, str | None]]()


def pytest_configure(config: pytest.Config) -> None:
    """XDG_CONFIG_HOME for the session, set before any test module copies the environment:
    what ladder keeps there (Flower's password) is the tests', not the machine user's."""
    home = tempfile.mkdtemp(prefix="ladder-tests-config-")
    config.stash[CONFIG_HOME] = (home, os.environ.get("XDG_CONFIG_HOME"))
    os.environ["XDG_CONFIG_HOME"] = home


def pytest_unconfigure(config: pytest.Config) -> None:
    home, before = config.stash.get(CONFIG_HOME, (None, None))
    if home is None:
        return
    shutil.rmtree(home, ignore_errors=True)
    if before is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = before


@pytest.fixture(scope="session")
def redis_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServers]:
    """The factory: `with redis_servers.running(...) as server:`, in a fixture of any scope."""
    servers = RedisServers(tmp_path_factory)
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture(scope="session")
def redis_url(redis_servers: RedisServers) -> Iterator[str]:
    """The URL, password included, of a private redis-server for the whole session."""
    with redis_servers.running() as server:
        yield server.url


@pytest.fixture(scope="session")
def rabbit_nodes() -> Iterator[RabbitNodes]:
    """The factory: `with rabbit_nodes.running() as node:`, in a fixture of any scope."""
    nodes = RabbitNodes()
    try:
        yield nodes
    finally:
        nodes.stop_all()


@pytest.fixture(scope="session")
def rabbit_node(rabbit_nodes: RabbitNodes) -> Iterator[RabbitNode]:
    """A private RabbitMQ node for the whole session; its url has the password."""
    with rabbit_nodes.running() as node:
        yield node


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
