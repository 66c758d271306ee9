"""Hosts on one machine: Linux network namespaces joined by a bridge, for scale-out runs.

    this process (root namespace, 10.X.0.254)
        | veth
    [bridge 10.X.0.1 in host "<tag>-b": redis-server]
        | veth            | veth
    "<tag>-w1" 10.X.0.11   "<tag>-w2" 10.X.0.12 ...: Celery workers

Each host has its own network stack: a worker there reaches Redis only across the
bridge, by its address, as a worker on another host would. The traffic never leaves
this machine.

The namespaces have no names (no `ip netns add`): each is made by a process of its own
(`unshare --net sleep infinity`) and entered by its pid (`nsenter`). A namespace lasts
only while some process is in it, and every process here dies with ladder; a veth goes
with the namespace of either end. So even a `kill -9` of ladder leaves no namespace,
link, address or route behind, and a clean exit removes them at once.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from broker_ipc.celery_rung import CeleryRung
from core import procs
from core.celery_workers import CeleryWorkers, Topology
from core.closing import Closing
from core.errors import RunFailed
from core.jobs import PipelineJob
from core.results import RunResult
from core.settings import Settings
from core.stack import RedisServer
from ladder.runner import run
from tasks.celery_app import make_app

HOLD = ["unshare", "--net", "--", "sleep", "infinity"]
HOLD_START_S = 5.0


def ip(*args: str, host: int | None = None) -> None:
    """Run one `ip` command, in the namespace of the process `host` if given; a failure
    is a RunFailed naming it."""
    argv = [*enter(host), "ip", *args] if host else ["ip", *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RunFailed(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")


def enter(pid: int) -> list[str]:
    """What a command starts with to run in the network namespace of process pid."""
    return ["nsenter", f"--net=/proc/{pid}/ns/net"]


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    for command in ("ip", "unshare", "nsenter"):
        if shutil.which(command) is None:
            return f"the `{command}` command (iproute2, util-linux) is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    done = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"unshare --net: {done.stderr.strip() or done.returncode}"
    return None


class Hosts(Closing):
    """A broker host with a bridge, and `workers` worker hosts on it."""

    def __init__(self, workers: int) -> None:
        tag = f"ql{secrets.token_hex(3)}"
        self.subnet = f"10.{random.randint(64, 127)}.{random.randint(0, 255)}"
        self.broker = f"{tag}-b"
        self.workers = [f"{tag}-w{i}" for i in range(1, workers + 1)]
        self.root_link = f"{tag}-r"
        # Each host's namespace, by the process that holds it.
        self.holders: dict[str, subprocess.Popen[bytes]] = {}
        self.folder = procs.scratch("ladder-hosts-")

    @property
    def broker_address(self) -> str:
        return f"{self.subnet}.1"

    def address(self, worker: str) -> str:
        return f"{self.subnet}.{10 + self.workers.index(worker) + 1}"

    def pid(self, host: str) -> int:
        return self.holders[host].pid

    def prefix(self, host: str) -> list[str]:
        """What a command starts with to run on that host."""
        return enter(self.pid(host))

    def namespaces(self) -> list[int]:
        """The inode of each host's network namespace: what no process holds once it is gone."""
        return [os.stat(f"/proc/{process.pid}/ns/net").st_ino for process in self.holders.values()]

    def open(self) -> None:
        self.add_host(self.broker)
        b = self.pid(self.broker)
        ip("link", "add", "br0", "type", "bridge", host=b)
        ip("addr", "add", f"{self.broker_address}/24", "dev", "br0", host=b)
        ip("link", "set", "br0", "up", host=b)
        # This process's own way in, from the root namespace.
        self.plug(self.root_link, None, f"{self.subnet}.254")
        for worker in self.workers:
            self.add_host(worker)
            self.plug(worker, worker, self.address(worker))

    def add_host(self, name: str) -> None:
        """A namespace of its own, held by a process that dies with this one."""
        log = Path(self.folder.name) / f"{name}.log"
        holder = procs.spawn(HOLD, log)
        self.holders[name] = holder
        own = os.stat("/proc/self/ns/net").st_ino

        def unshared() -> bool:
            """Whether unshare has made the namespace and become `sleep`."""
            return os.stat(f"/proc/{holder.pid}/ns/net").st_ino != own

        procs.wait_ready(holder, unshared, "unshare --net", log, HOLD_START_S, poll_s=0.01)
        ip("link", "set", "lo", "up", host=holder.pid)

    def plug(self, link: str, host: str | None, address: str) -> None:
        """A veth pair: one end on the bridge, the other on host (None: this one)."""
        outer, inner = f"{link}-o", f"{link}-i"
        b = self.pid(self.broker)
        ip("link", "add", inner, "type", "veth", "peer", "name", outer)
        ip("link", "set", outer, "netns", str(b))
        ip("link", "set", outer, "master", "br0", "up", host=b)
        where = self.pid(host) if host else None
        if where:
            ip("link", "set", inner, "netns", str(where))
        ip("addr", "add", f"{address}/24", "dev", inner, host=where)
        ip("link", "set", inner, "up", host=where)

    def close(self) -> None:
        # A veth pair goes when either end's namespace goes; the root end with it.
        with contextlib.suppress(RunFailed):
            ip("link", "del", f"{self.root_link}-i")
        procs.stop(*self.holders.values())
        self.folder.cleanup()


@dataclass(frozen=True)
class HostsRun:
    """One pipeline run with its workers spread over `hosts` namespaces."""

    hosts: int
    result: RunResult
    handled_by: dict[str, int]  # worker namespace -> tasks.handle_item it ran


# Threads per worker: the work is a wait, so a host's worker overlaps this many items.
THREADS_PER_HOST = 4


def scale_out(
    job: PipelineJob,
    host_counts: Sequence[int] = (1, 2, 3),
    done: Callable[[HostsRun], None] = lambda run: None,
) -> list[HostsRun]:
    """The job once per count: Redis on one host, one Celery worker on each of `count`
    others, the producers here; each run verified as every run is. done(run) is called
    as each count is measured."""
    runs = []
    with Hosts(max(host_counts)) as hosts:
        work = Path(hosts.folder.name)
        redis = RedisServer(work, host=hosts.broker_address, prefix=hosts.prefix(hosts.broker))
        url = redis.start()
        try:
            for count in host_counts:
                runs.append(run_on(hosts, hosts.workers[:count], url, job, work))
                done(runs[-1])
        finally:
            redis.stop()
    return runs


def run_on(
    hosts: Hosts, namespaces: Sequence[str], url: str, job: PipelineJob, work: Path
) -> HostsRun:
    topology = Topology(instances=len(namespaces), pool="threads", concurrency=THREADS_PER_HOST)
    prefixes = [hosts.prefix(ns) for ns in namespaces]
    workers = CeleryWorkers(url, url, topology, work, prefixes=prefixes)
    try:
        workers.start()
        with CeleryRung(Settings(broker_url=url, result_backend=url)) as rung:
            result = run(rung, job)
        handled = tasks_run(url, workers.names())
    finally:
        workers.stop()
    return HostsRun(
        len(namespaces),
        result,
        {ns: handled.get(name, 0) for ns, name in zip(namespaces, workers.names(), strict=True)},
    )


def tasks_run(url: str, names: Sequence[str]) -> dict[str, int]:
    """tasks.handle_item run by each named worker, by its own count."""
    app = make_app(url, url)
    try:
        stats = app.control.inspect(list(names), timeout=5.0, limit=len(names)).stats() or {}
    finally:
        app.close()
    return {name: int(s.get("total", {}).get("tasks.handle_item", 0)) for name, s in stats.items()}


def table(runs: Sequence[HostsRun]) -> Table:
    """Throughput as worker hosts are added, and what each host ran."""
    out = Table(title="Scale-out: one worker per host, Redis on a host of its own")
    for column in ("worker hosts", "items/s", "vs 1 host", "tasks per host", "verified"):
        out.add_column(column, justify="left" if column == "tasks per host" else "right")
    base = runs[0].result.throughput if runs and runs[0].hosts == 1 else None
    for r in runs:
        out.add_row(
            str(r.hosts),
            f"{r.result.throughput:,.0f}",
            f"{r.result.throughput / base:.2f}x" if base else "",
            ", ".join(f"{n:,}" for n in r.handled_by.values()),
            "yes" if r.result.verified else f"no: {r.result.note}",
        )
    return out
