"""Private redis-servers, the one way a test starts a Redis: on a free loopback port, with
a password, in a folder of its own, and stopped however the test ends. Never the
machine's shared Redis."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis

from core import procs
from core.broker import client
from core.stack import REDIS_START_TIMEOUT_S, RedisServer, redis_binary


class ConfiguredRedis(RedisServer):
    """redis-server on a configuration file it is given, as `redis-server FILE ARGS...`
    runs in compose's container; its password is the one that file requires."""

    def __init__(self, workdir: Path, config: Path, args: Sequence[str], password: str) -> None:
        super().__init__(workdir)
        self.config = config
        self.args = list(args)
        self.password = password

    def start(self) -> str:
        argv = [redis_binary(), str(self.config), *self.args]
        argv += ["--port", str(self.port), "--bind", self.host, "--dir", str(self.workdir)]
        log = self.workdir / "redis.log"
        self.process = procs.spawn(argv, log)

        def answers() -> bool:
            try:
                return bool(client(self.url).ping())
            except (redis.RedisError, OSError):
                return False

        try:
            procs.wait_ready(self.process, answers, "redis-server", log, REDIS_START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        return self.url


class RedisServers:
    """Starts private redis-servers, each for as long as a `with running():` block lasts."""

    def __init__(self, workdirs: pytest.TempPathFactory) -> None:
        self.workdirs = workdirs
        self.started: list[RedisServer] = []

    @contextlib.contextmanager
    def running(
        self,
        name: str = "redis",
        *,
        appendonly: bool = False,
        config: Path | None = None,
        args: Sequence[str] = (),
        password: str = "",
    ) -> Iterator[RedisServer]:
        """A redis-server, started and answering; appendonly keeps its data over a restart
        (server.stop(), server.start()); config (with args and its password) runs it on a
        configuration file of its own instead of ours."""
        workdir = self.workdirs.mktemp(name)
        server = (
            RedisServer(workdir, appendonly=appendonly)
            if config is None
            else ConfiguredRedis(workdir, config, args, password)
        )
        self.started.append(server)
        try:
            server.start()
            yield server
        finally:
            server.stop()
            self.started.remove(server)

    def stop_all(self) -> None:
        """Whatever a block left running, as a test interrupted mid-start might."""
        for server in self.started:
            server.stop()
