"""Starts real `celery worker` processes, waits until each answers a ping, stops them.

ladder -> N x `celery -A tasks worker -E --pool P -c C` -> broker
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from ladder import interrupt, procs
from ladder.errors import RunFailed

START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Topology:
    """How many worker instances, with which pool and how many slots each."""

    instances: int
    pool: str = "solo"
    concurrency: int = 1


def ping_workers(
    url: str, backend_url: str, timeout_s: float = 2.0, limit: int | None = None
) -> list[str]:
    """The names of the workers that answer a ping on this broker, within timeout_s, or
    as soon as limit of them have answered."""
    from tasks.celery_app import make_app

    client = make_app(url, backend_url)
    try:
        replies = client.control.ping(timeout=timeout_s, limit=limit) or []
    except (OperationalError, RedisError, OSError):
        # Only a broker that cannot be reached means "no worker": anything else, such
        # as the exception a signal handler raises to stop the run, must go through.
        return []
    finally:
        client.close()
    return [name for reply in replies for name in reply]


class CeleryWorkers:
    """topology.instances worker processes on one broker."""

    def __init__(
        self,
        url: str,
        backend_url: str,
        topology: Topology,
        workdir: Path,
        visibility_timeout_s: float | None = None,
    ) -> None:
        self.url = url
        self.visibility_timeout_s = visibility_timeout_s
        self.backend_url = backend_url
        self.topology = topology
        self.workdir = workdir
        self.token = secrets.token_hex(3)
        self.processes: list[subprocess.Popen[bytes]] = []

    def names(self) -> list[str]:
        return [
            f"ladder{i}-{self.token}@{os.uname().nodename}" for i in range(self.topology.instances)
        ]

    def start(self) -> None:
        # The URLs travel in the environment, never on a command line that ps shows.
        env = {
            **os.environ,
            "CELERY_BROKER_URL": self.url,
            "CELERY_RESULT_BACKEND": self.backend_url,
        }
        if self.visibility_timeout_s is not None:
            env["LADDER_VISIBILITY_TIMEOUT_S"] = str(self.visibility_timeout_s)
        t = self.topology
        try:
            for index, name in enumerate(self.names()):
                argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-E"]
                argv += ["--pool", t.pool, "--concurrency", str(t.concurrency), "--hostname", name]
                # Mingle and gossip sync state between workers at start: not needed here,
                # and they add seconds to every start.
                argv += ["--without-mingle", "--without-gossip", "--loglevel", "WARNING"]
                log = self.workdir / f"worker-{index}.log"
                self.processes.append(procs.spawn(argv, log, env))
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def wait_until_ready(self) -> None:
        waiting = set(self.names())
        deadline = time.monotonic() + START_TIMEOUT_S
        while waiting:
            for index, process in enumerate(self.processes):
                if process.poll() is not None:
                    log = self.workdir / f"worker-{index}.log"
                    raise RunFailed(f"a celery worker exited at start: {procs.tail(log)}")
            if time.monotonic() > deadline:
                raise RunFailed(f"celery workers did not answer within {START_TIMEOUT_S:.0f} s")
            interrupt.check()
            waiting -= set(ping_workers(self.url, self.backend_url, timeout_s=0.5))

    def stop(self) -> None:
        procs.stop(*self.processes)
        self.processes = []
