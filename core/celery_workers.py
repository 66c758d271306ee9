"""Starts real `celery worker` processes, waits until each answers a ping, stops them.

ladder -> N x `celery -A tasks worker -E --pool P -c C` -> broker

Started workers are supervised, as systemd or Compose's `restart:` would: one that
exits on its own is started again. A worker is meant to survive a broker outage, and
most do; but kombu 5.7's Redis transport can crash one that is closing its connection
after the broker went away (an AttributeError in Channel.close, which Celery does not
catch), and such a worker would otherwise be gone for the rest of the run.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from celery import Celery
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from core import procs
from core.broker import transport_options
from core.errors import RunFailed
from core.settings import VISIBILITY_TIMEOUT_S
from core.wait import wait_until
from core.work import QUEUES

START_TIMEOUT_S = 60.0
SUPERVISE_EVERY_S = 0.5
# A worker's warm shutdown (SIGTERM) waits for the tasks it is running; idle, it takes a
# second or two. These workers serve a broker ladder started, for a run of its own, and
# no one needs that wait: whatever is still running after this is killed.
STOP_GRACE_S = 3.0


@dataclass(frozen=True)
class Topology:
    """How many worker instances, with which pool and how many slots each."""

    instances: int
    pool: str = "solo"
    concurrency: int = 1
    # The queues they serve: all by default, as `celery worker` with no -Q does.
    queues: tuple[str, ...] = QUEUES


def control_app(url: str, backend_url: str) -> Celery:
    """A Celery client for remote control alone (ping, inspect): it sends no task, so it
    needs the workers' broker and their JSON, not their tasks or routes (tasks/)."""
    app = Celery("ladder-control", set_as_current=False)
    app.conf.update(
        broker_url=url,
        result_backend=backend_url,
        broker_transport="core.transport:Transport",
        broker_transport_options=transport_options(VISIBILITY_TIMEOUT_S),
        broker_connection_retry_on_startup=True,
        accept_content=["json"],
        result_accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
    )
    return app


def ping_workers(
    url: str, backend_url: str, timeout_s: float = 2.0, limit: int | None = None
) -> list[str]:
    """The names of the workers that answer a ping on this broker, within timeout_s, or
    as soon as limit of them have answered."""
    client = control_app(url, backend_url)
    try:
        replies = client.control.ping(timeout=timeout_s, limit=limit) or []
    except (OperationalError, RedisError, OSError):
        # Only a broker that cannot be reached means "no worker": anything else, such
        # as the exception a signal handler raises to stop the run, must go through.
        return []
    finally:
        client.close()
    return [name for reply in replies for name in reply]


@dataclass(frozen=True)
class WorkerShape:
    """One worker as it says it is: its name, its pool, its slots, the queues it serves."""

    hostname: str
    pool: str
    concurrency: int
    queues: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.hostname}: {self.pool} x{self.concurrency} on {', '.join(self.queues)}"


def worker_shapes(url: str, backend_url: str, timeout_s: float = 1.0) -> list[WorkerShape]:
    """Every worker on this broker, as it answers inspect().stats() and active_queues()."""
    client = control_app(url, backend_url)
    try:
        inspect = client.control.inspect(timeout=timeout_s)
        stats = inspect.stats() or {}
        queues = inspect.active_queues() or {}
    except (OperationalError, RedisError, OSError):
        return []
    finally:
        client.close()
    shapes = []
    for name, info in sorted(stats.items()):
        pool = info.get("pool", {})
        # "celery.concurrency.thread:TaskPool" -> "thread"
        kind = str(pool.get("implementation", "")).split(":")[0].rsplit(".", 1)[-1]
        served = tuple(sorted(queue["name"] for queue in queues.get(name, [])))
        shapes.append(
            WorkerShape(
                name, POOL_NAMES.get(kind, kind), int(pool.get("max-concurrency", 0)), served
            )
        )
    return shapes


# Celery's modules for its pools, by the names `--pool` takes.
POOL_NAMES = {"prefork": "prefork", "thread": "threads", "solo": "solo", "gevent": "gevent"}


class CeleryWorkers:
    """topology.instances worker processes on one broker."""

    def __init__(
        self,
        url: str,
        backend_url: str,
        topology: Topology,
        workdir: Path,
        visibility_timeout_s: float | None = None,
        prefixes: Sequence[Sequence[str]] = (),
    ) -> None:
        self.url = url
        self.visibility_timeout_s = visibility_timeout_s
        self.backend_url = backend_url
        self.topology = topology
        self.workdir = workdir
        # Per instance, what its command starts with: `ip netns exec <host>` puts each
        # worker on a host of its own (ladder/netns.py); none by default.
        self.prefixes = [list(prefix) for prefix in prefixes]
        self.token = secrets.token_hex(3)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.restarts = 0
        self.stopping = threading.Event()
        self.supervisor: threading.Thread | None = None

    def names(self) -> list[str]:
        return [
            f"ladder{i}-{self.token}@{os.uname().nodename}" for i in range(self.topology.instances)
        ]

    def log(self, index: int) -> Path:
        return self.workdir / f"worker-{index}.log"

    def spawn(self, index: int) -> subprocess.Popen[bytes]:
        # The URLs travel in the environment, never on a command line that ps shows.
        env = {
            **os.environ,
            "CELERY_BROKER_URL": self.url,
            "CELERY_RESULT_BACKEND": self.backend_url,
        }
        if self.visibility_timeout_s is not None:
            env["LADDER_VISIBILITY_TIMEOUT_S"] = str(self.visibility_timeout_s)
        t = self.topology
        argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-E"]
        argv += ["--pool", t.pool, "--concurrency", str(t.concurrency)]
        argv += ["--hostname", self.names()[index], "--queues", ",".join(t.queues)]
        # Mingle and gossip sync state between workers at start: not needed here, and
        # they add seconds to every start.
        argv += ["--without-mingle", "--without-gossip", "--loglevel", "WARNING"]
        prefix = self.prefixes[index] if index < len(self.prefixes) else []
        # Should ladder die, SIGKILL, not SIGTERM: a warm shutdown waits for the running
        # task, which may be waiting out an outage of the broker that died with ladder
        # too. Celery's prefork pool children die with their worker (its own pdeathsig).
        return procs.spawn([*prefix, *argv], self.log(index), env, death_signal=signal.SIGKILL)

    def start(self) -> None:
        try:
            for index in range(self.topology.instances):
                self.processes.append(self.spawn(index))
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        self.supervisor = threading.Thread(target=self.supervise, daemon=True)
        self.supervisor.start()

    def supervise(self) -> None:
        """Start again, under the same name, a worker that exited on its own."""
        while not self.stopping.wait(SUPERVISE_EVERY_S):
            for index, process in enumerate(self.processes):
                if process.poll() is not None and not self.stopping.is_set():
                    self.processes[index] = self.spawn(index)
                    self.restarts += 1

    def wait_until_ready(self) -> None:
        waiting = set(self.names())

        def all_answer() -> bool:
            waiting.difference_update(ping_workers(self.url, self.backend_url, timeout_s=0.5))
            return not waiting

        # A ping waits for answers itself: no pause between them.
        if wait_until(all_answer, START_TIMEOUT_S, 0, unless=self.exited):
            return
        for index, process in enumerate(self.processes):
            if process.poll() is not None:
                raise RunFailed(f"a celery worker exited at start: {procs.tail(self.log(index))}")
        raise RunFailed(f"celery workers did not answer within {START_TIMEOUT_S:.0f} s")

    def exited(self) -> bool:
        """Whether a worker has exited."""
        return any(process.poll() is not None for process in self.processes)

    def stop(self) -> None:
        self.stopping.set()
        if self.supervisor:
            self.supervisor.join()
        procs.stop(*self.processes, timeout_s=STOP_GRACE_S)
        self.processes = []
