"""Dramatiq, Huey and RQ as the bench runs them (ladder bench --peers): each on a
private Redis with its own real worker processes, every item verified once, nothing
left running; JSON on the wire; the bench's peer cases read against the celery rung."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator

import psutil
import pytest
import redis

from broker_ipc.peer_rung import PEERS, PeerRung, load
from core.broker import RunKeys
from core.errors import BadInput
from core.jobs import PipelineJob, SumJob
from core.settings import Settings
from core.stack import Stack
from ladder import bench
from ladder.runner import run
from tests.support.cli import check_bad_input, ladder
from tests.support.proctree import running
from tests.support.redis_servers import RedisServers

NO_WORK = PipelineJob(items=300, producers=1, consumers=2, payload_bytes=16)
IO = PipelineJob(items=120, producers=1, consumers=4, work_ms=5)


@pytest.fixture(scope="module")
def stack(redis_servers: RedisServers) -> Iterator[Stack]:
    """One private redis-server for this module's peers."""
    with (
        redis_servers.running("peers-redis") as server,
        Stack(Settings(broker_url=server.url)) as started,
    ):
        yield started


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", PEERS)
def test_each_peer_runs_the_pipelines_verified_and_stops_its_workers(
    name: str, stack: Stack
) -> None:
    with PeerRung(name, Settings(), stack) as rung:
        for job in (NO_WORK, IO):
            result = run(rung, job)
            assert result.verified, result.note
            assert (result.got, result.lost, result.duplicates) == (job.items, 0, 0)
            assert result.latency_ms is not None
            workers = [psutil.Process(worker.pid) for worker in rung.workers]
            assert workers
            # Shaped as the celery rung's workers: 2 processes, the rest as threads
            # (RQ has none: a SimpleWorker process per consumer).
            assert rung.shape == (2, job.consumers // 2)
        assert len(workers) == (4 if name == "rq" else 1 if name == "dramatiq" else 2)
        children = [child for worker in workers for child in worker.children(recursive=True)]
    assert running(workers + children) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", PEERS)
def test_each_peer_sends_json(name: str, stack: Stack) -> None:
    """What a producer puts on the wire is JSON (Huey and RQ would pickle by default)."""
    peer = load(name)
    keys = RunKeys.new()
    item = {"id": 7, "t": 1.5, "payload": "x"}
    peer.sender(stack.url)(item, keys.run_id, 0.0, "io")
    client = redis.Redis.from_url(stack.url)
    try:
        if name == "dramatiq":
            raw = next(iter(client.hgetall(f"{peer.QUEUE_KEY}.msgs").values()))
        elif name == "rq":
            job_id = client.lpop(peer.QUEUE_KEY).decode()
            raw = zlib.decompress(client.hget(f"rq:job:{job_id}", "data"))  # RQ zips it
        else:
            raw = client.lpop(peer.QUEUE_KEY)
        assert raw is not None and b"\x80" not in raw[:2]  # not a pickle
        assert str(item["id"]) in json.dumps(json.loads(raw))
    finally:
        for key in client.keys("dramatiq:*") + client.keys("rq:*") + client.keys("huey.*"):
            client.delete(key)
        client.close()


@pytest.mark.timeout(30)
def test_a_peer_refuses_what_it_does_not_run(stack: Stack) -> None:
    with PeerRung("huey", Settings(), stack) as rung:
        with pytest.raises(BadInput, match="--batch works on"):
            run(rung, PipelineJob(items=200, batch=10))
        with pytest.raises(BadInput, match="pipeline only"):
            run(rung, SumJob(n=1000, chunks=2, workers=2))
        assert rung.workers == []


@pytest.mark.timeout(10)
def test_the_peer_cases_read_against_the_celery_rung() -> None:
    selected = {case.name: case for case in bench.cases(quick=True, peers=True)}
    assert set(bench.cases(quick=True)) < set(selected.values())
    for name in PEERS:
        assert selected[f"{name} pipeline"].limit == "celery pipeline"
        assert selected[f"{name} pipeline"].job == selected["celery pipeline"].job
        assert selected[f"{name} pipeline io 10 ms"].limit == "celery pipeline io 10 ms"
        assert selected[f"{name} pipeline io 10 ms"].on_broker
    fastest = selected["fastest peer pipeline"]
    assert set(fastest.fastest_of) == {f"{name} pipeline" for name in PEERS}
    goal = selected["celery batch 100 vs fastest peer"]
    assert (goal.limit, goal.runs_of) == ("fastest peer pipeline", "celery pipeline batch 100")


@pytest.mark.timeout(30)
def test_peers_and_memory_are_refused_together_in_one_line() -> None:
    check_bad_input(ladder("bench", "--peers", "--memory"), "--peers")
