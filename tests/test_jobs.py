"""Jobs are validated when created: every bad value names its parameter."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import pytest

from core.errors import BadInput, LadderError
from core.jobs import (
    MAX_CHUNKS,
    MAX_ITEMS,
    MAX_N,
    MAX_PAYLOAD_BYTES,
    MAX_QUEUE_SIZE,
    MAX_WORK_MS,
    MAX_WORKERS,
    PipelineJob,
    SumJob,
)

NAN, INF = math.nan, math.inf

# Bad values shared by every whole-number parameter whose least value is 1.
COUNT = [0, -1, -(10**20), 10**20, 2.0, 1.5, "3", None, True, False, NAN, INF]

BAD: list[tuple[type[Any], str, Any, dict[str, Any]]] = [
    *[(SumJob, "n", v, {}) for v in [*COUNT, MAX_N + 1]],
    *[(SumJob, "chunks", v, {}) for v in COUNT],
    (SumJob, "chunks", 11, {"n": 10}),  # more chunks than numbers
    (SumJob, "chunks", MAX_CHUNKS + 1, {"n": MAX_N}),
    *[(SumJob, "workers", v, {}) for v in [*COUNT, MAX_WORKERS + 1]],
    *[(PipelineJob, "items", v, {}) for v in [*COUNT, MAX_ITEMS + 1]],
    *[(PipelineJob, "producers", v, {}) for v in COUNT],
    (PipelineJob, "producers", 4, {"items": 3}),  # a producer would make nothing
    (PipelineJob, "producers", MAX_WORKERS + 1, {"items": MAX_ITEMS}),
    *[(PipelineJob, "consumers", v, {}) for v in [*COUNT, MAX_WORKERS + 1]],
    *[
        (PipelineJob, "payload_bytes", v, {})
        for v in [-1, -(10**20), MAX_PAYLOAD_BYTES + 1, 2.0, "16", None, True, NAN, INF]
    ],
    *[
        (PipelineJob, name, v, {})
        for name in ("work_ms", "produce_ms")
        for v in [-1, -0.001, MAX_WORK_MS + 1, 10**20, 10**400, NAN, INF, -INF, "1", None, True]
    ],
    *[(PipelineJob, "queue_size", v, {}) for v in [*COUNT, MAX_QUEUE_SIZE + 1]],
    *[(PipelineJob, "work_kind", v, {}) for v in ["gpu", "IO", "", None, 1, True, NAN]],
    *[(PipelineJob, "end", v, {}) for v in ["sentinels", "JOIN", "", None, 0, True, NAN]],
]


@pytest.mark.parametrize(
    ("job_type", "name", "value", "others"),
    BAD,
    ids=[f"{job.__name__}-{name}={value!r}" for job, name, value, _ in BAD],
)
def test_bad_value_names_its_parameter(
    job_type: type[Any], name: str, value: Any, others: dict[str, Any]
) -> None:
    with pytest.raises(BadInput) as raised:
        job_type(**others, **{name: value})
    message = str(raised.value)
    assert re.match(rf"{name} must be ", message), message
    assert "\n" not in message


def test_bad_input_is_a_ladder_error() -> None:
    assert issubclass(BadInput, LadderError)


@pytest.mark.parametrize(
    ("job_type", "values", "message"),
    [
        (SumJob, {"workers": 0}, "workers must be at least 1 (got 0)"),
        (SumJob, {"n": 10, "chunks": 11}, "chunks must be at most 10 (got 11)"),
        (SumJob, {"n": MAX_N + 1}, "n must be at most 10,000,000,000 (got 10,000,000,001)"),
        (SumJob, {"n": True}, "n must be a whole number (got True)"),
        (PipelineJob, {"work_ms": NAN}, "work_ms must be a number (got nan)"),
        (PipelineJob, {"work_ms": -1}, "work_ms must be between 0 and 60000 (got -1)"),
        (PipelineJob, {"work_ms": 10**7}, "work_ms must be between 0 and 60000 (got 10,000,000)"),
        (PipelineJob, {"produce_ms": INF}, "produce_ms must be between 0 and 60000 (got inf)"),
        (PipelineJob, {"end": "x"}, "end must be one of: sentinel, join (got 'x')"),
    ],
)
def test_messages_say_what_is_allowed(
    job_type: type[Any], values: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadInput) as raised:
        job_type(**values)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    "job",
    [
        SumJob(n=1, chunks=1, workers=1),
        SumJob(n=MAX_N, chunks=MAX_CHUNKS, workers=MAX_WORKERS),
        PipelineJob(items=1, producers=1, consumers=1, payload_bytes=0, queue_size=1),
        PipelineJob(
            items=MAX_ITEMS,
            producers=MAX_WORKERS,
            consumers=MAX_WORKERS,
            payload_bytes=MAX_PAYLOAD_BYTES,
            work_ms=MAX_WORK_MS,
            work_kind="cpu",
            produce_ms=MAX_WORK_MS,
            queue_size=MAX_QUEUE_SIZE,
            end="join",
        ),
        PipelineJob(work_ms=0, produce_ms=0.5),
    ],
    ids=["sum-least", "sum-most", "pipeline-least", "pipeline-most", "pipeline-int-ms"],
)
def test_the_bounds_themselves_are_allowed(job: SumJob | PipelineJob) -> None:
    assert job.params() == dataclasses.asdict(job)


def test_jobs_are_frozen() -> None:
    job = SumJob()
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.n = 0  # type: ignore[misc]
