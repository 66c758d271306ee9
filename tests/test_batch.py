"""--batch: B items per message, on the rungs that move messages (threads, processes,
kombu, celery), with exactly-once accounting per item kept."""

from __future__ import annotations

import pytest

from core.errors import BadInput
from core.jobs import PipelineJob
from core.settings import Settings
from ladder.registry import RUNGS, names
from ladder.runner import run

BATCHING = names(batches=True)


def test_the_batching_rungs() -> None:
    assert BATCHING == ["threads", "processes", "kombu", "celery"]


@pytest.mark.slow
@pytest.mark.parametrize("name", BATCHING)
# A last batch shorter than the others, and one item per batch, too.
@pytest.mark.parametrize("batch", [1, 7, 100])
def test_batched_pipeline_verifies_item_by_item(
    name: str, batch: int, redis_url: str, request: pytest.FixtureRequest
) -> None:
    if name == "celery":
        request.getfixturevalue("celery_workers")
    job = PipelineJob(items=1_003, producers=2, consumers=2, batch=batch, queue_size=5)
    with RUNGS[name](Settings(broker_url=redis_url)) as rung:
        result = run(rung, job)
    assert result.verified, result.note
    assert (result.got, result.lost, result.duplicates) == (1_003, 0, 0)
    assert result.latency_ms is not None


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "name", [n for n in RUNGS if n not in BATCHING and n in ("serial", "asyncio")]
)
def test_batch_on_a_rung_without_messages_is_refused(name: str) -> None:
    with RUNGS[name]() as rung, pytest.raises(BadInput, match="--batch works on the threads"):
        run(rung, PipelineJob(items=10, batch=2))


def test_batch_is_checked() -> None:
    with pytest.raises(BadInput, match="batch must be at least 1"):
        PipelineJob(batch=0)
