"""Scale-out across hosts: Redis in one network namespace, a Celery worker in each of
two or three others, joined by a bridge; the namespaces are made and removed here.

Skipped, with the reason, where namespaces cannot be made (no root, no iproute2).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from core.jobs import PipelineJob
from ladder import netns

REASON = netns.unavailable()
pytestmark = [
    pytest.mark.skipif(REASON is not None, reason=f"no network namespaces: {REASON}"),
    # Hosts in namespaces of their own, each with its stack.
    pytest.mark.slow,
]


def namespaces() -> set[int]:
    """Every network namespace some process is in, by inode: one with no process is gone."""
    held = set()
    for ns in Path("/proc").glob("[0-9]*/ns/net"):
        with contextlib.suppress(OSError):
            held.add(ns.stat().st_ino)
    return held


def links() -> set[str]:
    """The links of this namespace that the hosts make (their names start with ql)."""
    done = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    names = {line.split(":")[1].strip().split("@")[0] for line in done.stdout.splitlines()}
    return {name for name in names if name.startswith("ql")}


@pytest.mark.timeout(180)
def test_a_pipeline_runs_verified_with_its_workers_on_other_hosts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    links_before = links()
    made: list[int] = []
    enter = netns.Hosts.__enter__

    def noting(hosts: netns.Hosts) -> netns.Hosts:
        entered = enter(hosts)
        made.extend(hosts.namespaces())
        return entered

    monkeypatch.setattr(netns.Hosts, "__enter__", noting)
    job = PipelineJob(items=600, producers=2, consumers=8, work_ms=10)
    runs = netns.scale_out(job, host_counts=(1, 3))
    assert len(made) == 4  # the broker's host and three workers
    assert [r.hosts for r in runs] == [1, 3]
    for hosts_run in runs:
        result = hosts_run.result
        assert result.verified, result.note
        assert (result.got, result.lost) == (600, 0)
        # Every worker host took its share, across the bridge.
        assert len(hosts_run.handled_by) == hosts_run.hosts
        assert all(n > 0 for n in hosts_run.handled_by.values()), hosts_run.handled_by
        assert sum(hosts_run.handled_by.values()) >= 600
        print(
            f"{hosts_run.hosts} host(s): {result.throughput:,.0f} items/s, {hosts_run.handled_by}"
        )
    # Nothing is left behind: not a namespace, nor a link in this one.
    assert not set(made) & namespaces()
    assert links() == links_before


@pytest.mark.timeout(30)
def test_a_worker_host_reaches_redis_only_across_the_bridge() -> None:
    with netns.Hosts(1) as hosts:
        made = hosts.namespaces()
        worker = hosts.workers[0]
        addresses = subprocess.run(
            [*hosts.prefix(worker), "ip", "-4", "addr", "show"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        # Its own address only: the broker's is on the other side of the bridge.
        assert f"inet {hosts.address(worker)}/" in addresses
        assert f"inet {hosts.broker_address}/" not in addresses
        # Across it, the broker's address answers: refused, as no server listens yet.
        probe = f"import socket; socket.create_connection(('{hosts.broker_address}', 9), 2)"
        tried = subprocess.run(
            [*hosts.prefix(worker), sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            check=False,
        )
        assert "ConnectionRefusedError" in tried.stderr, tried.stderr
    assert not set(made) & namespaces()
