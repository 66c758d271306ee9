"""The broker rungs, kombu and celery, one body, on a real redis-server with real workers.

The rungs run on the session's private Redis (conftest.redis_url), celery with real
`celery -A tasks worker` processes attached (conftest.celery_workers); the embedded
stack, which starts and stops its own, is tested on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psutil
import pytest
from celery import Celery

from broker_ipc.base import BrokerRung
from core.broker import RunKeys, client
from core.celery_workers import CeleryWorkers
from core.jobs import Job, PipelineJob, SumJob
from core.results import RunResult
from core.rung import Rung
from core.settings import Settings
from core.work import IO_QUEUE
from ladder.registry import RUNGS, names
from ladder.runner import run
from tasks.workloads import make_item
from tests.support.proctree import running
from tests.support.watch import Counter, wait_for

# Real runs on Redis with real workers.
pytestmark = pytest.mark.slow

BROKER_RUNGS = names("broker")
JSON_ONLY = {
    "task_serializer": "json",
    "accept_content": ["json"],
    "result_serializer": "json",
    "result_accept_content": ["json"],
}


def test_every_broker_rung_is_found() -> None:
    # Guards the filter above: an empty list would make every test below vanish.
    assert BROKER_RUNGS == ["kombu", "celery"]


def open_rung(name: str, redis_url: str, request: pytest.FixtureRequest) -> Rung:
    """The named rung on redis_url; celery with the session's workers attached."""
    if name == "celery":
        request.getfixturevalue("celery_workers")
    return RUNGS[name](Settings(broker_url=redis_url))


@pytest.fixture(params=BROKER_RUNGS)
def rung(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Rung]:
    with open_rung(request.param, redis_url, request) as started:
        yield started


def check_verified(rung: Rung, job: Job, result: RunResult, progress: Counter) -> None:
    assert (result.rung, result.workload) == (rung.name, job.workload)
    assert result.params == job.params()
    assert result.verified, result.note
    assert result.expected == result.got
    assert progress.total == job.size
    if isinstance(job, PipelineJob):
        assert result.got == job.items
        assert (result.lost, result.duplicates, result.unexpected) == (0, 0, 0)
        assert result.latency_ms is not None
        assert 0 <= result.latency_ms["p50"] <= result.latency_ms["p99"]
    else:
        assert result.got == job.n * (job.n + 1) // 2
        assert result.latency_ms is None


JOBS: dict[str, Job] = {
    "sum": SumJob(n=2_000_000, chunks=16, workers=2),
    "pipeline": PipelineJob(items=1_000),
    "pipeline-2ms-4-consumers": PipelineJob(items=500, consumers=4, work_ms=2),
    # join only changes the local rungs; over a broker the run must still verify.
    "pipeline-join": PipelineJob(items=500, end="join"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("job", JOBS.values(), ids=JOBS)
def test_workload_verifies(rung: Rung, job: Job) -> None:
    progress = Counter()
    check_verified(rung, job, run(rung, job, progress), progress)


def stack_processes() -> set[psutil.Process]:
    """The redis-server and celery worker processes below this one."""
    found = set()
    for process in psutil.Process().children(recursive=True):
        try:
            argv = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if "redis-server" in argv or "-m celery" in argv:
            found.add(process)
    return found


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", BROKER_RUNGS)
def test_embedded_stack_runs_and_stops_everything(name: str) -> None:
    before = stack_processes()
    job = PipelineJob(items=500)
    progress = Counter()
    with RUNGS[name](Settings()) as rung:
        assert isinstance(rung, BrokerRung)
        assert rung.stack.embedded
        assert "127.0.0.1" in rung.stack.url
        result = run(rung, job, progress)
        workdir = rung.stack.workdir
        started = stack_processes() - before
        assert rung.stack.redis is not None and rung.stack.redis.process is not None
        pids = {rung.stack.redis.process.pid}
        if name == "celery":
            assert rung.stack.workers is not None
            pids |= {process.pid for process in rung.stack.workers.processes}
        assert pids <= {process.pid for process in started}
    check_verified(rung, job, result, progress)
    assert running(started) == []
    assert not workdir.exists()


RUN_KEY = re.compile(r"ladder:[0-9a-f]+:")


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("name", "job"),
    [
        ("kombu", SumJob(n=200_000, chunks=8, workers=2)),
        ("kombu", PipelineJob(items=300)),
        ("celery", PipelineJob(items=300)),
    ],
    ids=["kombu-sum", "kombu-pipeline", "celery-pipeline"],
)
def test_a_run_removes_its_keys(
    name: str, job: Job, redis_url: str, request: pytest.FixtureRequest
) -> None:
    r = client(redis_url)
    seen: set[str] = set()

    def run_prefixes(keys: set[str]) -> set[str]:
        return {match.group() for key in keys if (match := RUN_KEY.search(key))}

    def watch_keys(n: int) -> None:
        seen.update(r.scan_iter(match="*ladder:*"))

    earlier = run_prefixes(set(r.scan_iter(match="*ladder:*")))
    with open_rung(name, redis_url, request) as rung:
        result = run(rung, job, watch_keys)
    assert result.verified, result.note
    # Non-vacuous: the run did make keys of its own while it ran.
    prefixes = run_prefixes(seen) - earlier
    assert len(prefixes) == 1, seen
    (prefix,) = prefixes
    # Not only ladder:<run>:* but also kombu's binding tables named after the run's queues.
    assert list(r.scan_iter(match=f"*{prefix}*")) == []


@pytest.fixture
def json_client(redis_url: str) -> Iterator[Celery]:
    """A plain Celery client: no task code, it sends by name, JSON only."""
    app = Celery("client", broker=redis_url, backend=redis_url)
    app.conf.update(JSON_ONLY)
    try:
        yield app
    finally:
        app.close()


@pytest.mark.timeout(20)
def test_a_task_sent_by_name_runs_on_the_workers(
    celery_workers: CeleryWorkers, json_client: Celery
) -> None:
    result = json_client.send_task("tasks.sum_range", args=(1, 11))
    try:
        assert result.get(timeout=10) == 55
    finally:
        result.forget()


def log_sizes(workdir: Path) -> dict[Path, int]:
    return {log: log.stat().st_size for log in sorted(workdir.glob("worker-*.log"))}


def new_log_text(since: dict[Path, int]) -> str:
    """What the workers logged after since was taken."""
    text = ""
    for log in since:
        with open(log, "rb") as f:
            f.seek(since[log])
            text += f.read().decode(errors="replace")
    return text


REFUSAL = (
    "Received invalid task message: Refusing to deserialize untrusted content "
    "of type pickle (application/x-python-serialize)"
)


@pytest.mark.timeout(30)
def test_a_pickle_message_is_refused_and_the_workers_keep_serving(
    redis_url: str, celery_workers: CeleryWorkers, json_client: Celery
) -> None:
    pickler = Celery("pickler", broker=redis_url, backend=redis_url)
    pickler.conf.update(task_serializer="pickle", accept_content=["pickle", "json"])
    r = client(redis_url)
    refused, served = RunKeys.new(), RunKeys.new()
    logs = log_sizes(celery_workers.workdir)
    assert len(logs) == 2
    with closing(pickler), refused.lease(redis_url), served.lease(redis_url):
        sent = pickler.send_task(
            "tasks.handle_item", args=(make_item(0, "x" * 16), refused.run_id, 0.0, "io")
        )
        assert wait_for(lambda: REFUSAL in new_log_text(logs), timeout_s=10)
        assert "ContentDisallowed" in new_log_text(logs)
        assert "The message has been ignored and discarded." in new_log_text(logs)

        json_client.send_task(
            "tasks.handle_item", args=(make_item(1, "x" * 16), served.run_id, 0.0, "io")
        )
        assert wait_for(lambda: r.hlen(served.deliveries) == 1, timeout_s=10)
        assert r.get(served.handled).startswith("1 ")
        # By now the pickle message, sent first, would have been handled: it never is,
        # and it is discarded, neither waiting in the queue nor held unacknowledged.
        assert r.hlen(refused.deliveries) == 0 and not r.exists(refused.handled)
        assert not any(sent.id in message for message in r.lrange(IO_QUEUE, 0, -1))
        assert not any(sent.id in message for message in r.hvals("unacked"))
