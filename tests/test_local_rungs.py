"""Every local rung, one body: the same jobs, the same verified numbers.

Rungs are read from ladder.registry.RUNGS, keeping only those in local_ipc: broker
rungs join the registry later and need a broker, which this module does not start.
"""

from __future__ import annotations

from collections.abc import Iterator
from multiprocessing.queues import Queue

import pytest

from core.errors import BadInput
from core.forkserver import CONTEXT
from core.jobs import EndOfStream, Job, PipelineJob, SumJob
from core.results import RunResult
from core.rung import Rung
from core.work import WorkKind
from ladder.registry import RUNGS, names
from ladder.runner import run
from tests.support.watch import Counter

LOCAL_RUNGS = names("local")


def test_every_local_rung_is_found() -> None:
    # Guards the filter above: an empty list would make every test below vanish.
    assert set(LOCAL_RUNGS) >= {
        "serial",
        "threads",
        "processes",
        "thread-pool",
        "process-pool",
        "asyncio",
    }
    for name in LOCAL_RUNGS:
        assert RUNGS[name].name == name


@pytest.fixture(params=LOCAL_RUNGS)
def rung(request: pytest.FixtureRequest) -> Iterator[Rung]:
    with RUNGS[request.param]() as started:
        yield started


def run_verified(rung: Rung, job: Job) -> RunResult:
    """Run job on rung and check the verification and the progress reported."""
    progress = Counter()
    result = run(rung, job, progress)
    assert result.rung == rung.name
    assert result.workload == job.workload
    assert result.params == job.params()
    assert result.verified, result.note
    assert result.note == ""
    assert result.seconds > 0
    assert result.throughput > 0
    assert progress.total == job.size
    if isinstance(job, PipelineJob):
        assert result.unit == "items/s"
        assert (result.expected, result.got) == (job.items, job.items)
        assert (result.lost, result.duplicates, result.unexpected) == (0, 0, 0)
        assert result.latency_ms is not None
        assert set(result.latency_ms) == {"p50", "p99"}
        assert 0 <= result.latency_ms["p50"] <= result.latency_ms["p99"]
    else:
        assert result.unit == "numbers/s"
        assert result.expected == result.got == job.n * (job.n + 1) // 2
        assert result.latency_ms is None
    return result


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "job",
    [
        SumJob(n=200_000, chunks=8, workers=2),
        PipelineJob(items=2_000, producers=2, consumers=3, payload_bytes=64),
    ],
    ids=["sum", "pipeline"],
)
def test_workload_is_verified(rung: Rung, job: Job) -> None:
    result = run_verified(rung, job)
    if isinstance(job, SumJob):
        assert result.got == 20_000_100_000
    else:
        assert result.got == 2_000


@pytest.mark.timeout(30)
def test_end_join(rung: Rung) -> None:
    run_verified(rung, PipelineJob(items=2_000, producers=2, consumers=3, end="join"))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("work_kind", ["io", "cpu"])
def test_work_per_item(rung: Rung, work_kind: WorkKind) -> None:
    job = PipelineJob(
        items=40, producers=2, consumers=4, work_ms=1.0, work_kind=work_kind, produce_ms=0.2
    )
    run_verified(rung, job)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("end", ["sentinel", "join"])
def test_more_consumers_than_producers(rung: Rung, end: EndOfStream) -> None:
    run_verified(rung, PipelineJob(items=500, producers=1, consumers=8, end=end))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("end", ["sentinel", "join"])
def test_one_item_three_consumers(rung: Rung, end: EndOfStream) -> None:
    # Two of the three consumers never get an item: they must still stop.
    run_verified(rung, PipelineJob(items=1, producers=1, consumers=3, end=end))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("end", ["sentinel", "join"])
def test_queue_of_one(rung: Rung, end: EndOfStream) -> None:
    # Every put waits for a get: the tightest backpressure, sentinels included.
    run_verified(rung, PipelineJob(items=500, producers=3, consumers=2, queue_size=1, end=end))


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "job",
    [
        SumJob(n=1, chunks=1, workers=4),
        SumJob(n=10, chunks=10, workers=3),
        SumJob(n=1_001, chunks=7, workers=1),
    ],
    ids=["n1-more-workers-than-chunks", "chunk-per-number", "one-worker"],
)
def test_sum_edges(rung: Rung, job: SumJob) -> None:
    run_verified(rung, job)


def test_producers_never_outnumber_items() -> None:
    with pytest.raises(BadInput, match=r"^producers must be at most 2 \(got 3\)$"):
        PipelineJob(items=2, producers=3)


def test_every_share_is_nonempty_and_they_partition_the_items() -> None:
    # Since producers <= items, no producer is ever left with nothing to make.
    for items in range(1, 40):
        for producers in range(1, items + 1):
            job = PipelineJob(items=items, producers=producers)
            shares = [job.share(p) for p in range(producers)]
            assert all(len(share) >= 1 for share in shares), (items, producers)
            assert [i for share in shares for i in share] == list(range(items))


SHARED = "parent"


def change_global(seen: Queue[str]) -> None:
    global SHARED
    SHARED = "child"
    seen.put(SHARED)


@pytest.mark.timeout(10)
def test_a_child_process_cannot_change_the_parents_globals() -> None:
    seen: Queue[str] = CONTEXT.Queue()
    child = CONTEXT.Process(target=change_global, args=(seen,))
    child.start()
    try:
        assert seen.get(timeout=5) == "child"
    finally:
        child.join(5)
    assert child.exitcode == 0
    assert SHARED == "parent"
