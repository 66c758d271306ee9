"""`ladder demo`: every rung on four workloads, one broker stack for all, one table.

sum (CPU-bound) | pipeline with work-ms (I/O-bound) | pipeline, no work (messages)
| the same, 100 items per message (on the rungs that batch)
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from core.celery_workers import WorkerShape
from core.errors import LadderError
from core.jobs import Job, PipelineJob, SumJob
from core.results import RunResult, failed
from core.rung import Progress
from core.settings import Settings
from core.stack import Stack
from ladder.registry import INFO, names
from ladder.runner import open_rung, run


@dataclass(frozen=True)
class Workload:
    """One column of the demo: a label and the job every rung runs."""

    label: str
    job: Job
    # The rungs it runs on; None for every rung.
    only: tuple[str, ...] | None = None


def workloads(quick: bool) -> list[Workload]:
    cores = os.cpu_count() or 1
    return [
        Workload(
            "sum (CPU)", SumJob(n=5_000_000 if quick else 20_000_000, chunks=16, workers=cores)
        ),
        Workload(
            "pipeline, 5 ms I/O per item",
            PipelineJob(items=400 if quick else 2_000, producers=2, consumers=8, work_ms=5),
        ),
        Workload(
            "pipeline, no work",
            PipelineJob(items=2_000 if quick else 20_000, producers=2, consumers=2),
        ),
        Workload(
            "pipeline, no work, 100 per message",
            PipelineJob(items=10_000 if quick else 100_000, producers=2, consumers=2, batch=100),
            only=tuple(names(batches=True)),
        ),
    ]


@dataclass(frozen=True)
class Row:
    label: str
    result: RunResult
    # The workers that served it, as they report themselves (the celery rung's).
    workers: tuple[WorkerShape, ...] = ()


def run_demo(
    settings: Settings,
    quick: bool,
    rungs: Sequence[str],
    progress_for: Callable[[str, int], AbstractContextManager[Progress]],
    announce: Callable[[Stack], None],
    flower_port: int | None = None,
    at_end: Callable[[], None] = lambda: None,
) -> Iterator[Row]:
    """Yield one row per (workload, rung), in order; a failed run is a row too.

    With a private broker, Flower is started too (unless flower_port is None). at_end
    runs once every row is out, while the broker, workers and Flower are still up.
    """
    with ExitStack() as cleanup:
        stack = None
        if any(INFO[name].channel == "broker" for name in rungs):
            stack = cleanup.enter_context(Stack(settings))
            if stack.embedded and flower_port is not None:
                stack.start_flower(flower_port)
            announce(stack)
        for workload in workloads(quick):
            for name in rungs:
                if workload.only is not None and name not in workload.only:
                    continue
                try:
                    label = f"{workload.label} on {name}"
                    with (
                        open_rung(name, settings, stack) as rung,
                        progress_for(label, workload.job.size) as progress,
                    ):
                        result = run(rung, workload.job, progress)
                        workers = tuple(rung.served_by(workload.job))
                except LadderError as error:
                    result, workers = failed(name, workload.job, str(error)), ()
                yield Row(workload.label, result, workers)
        at_end()


def speedups(rows: Sequence[Row]) -> dict[tuple[str, str], float | None]:
    """Each run's throughput over serial's on the same workload."""
    serial = {row.label: row.result.throughput for row in rows if row.result.rung == "serial"}
    return {
        (row.label, row.result.rung): (
            row.result.throughput / serial[row.label] if serial.get(row.label) else None
        )
        for row in rows
    }


def write(rows: Sequence[Row], folder: Path) -> list[Path]:
    """results.json (every field) and results.csv (the table), in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    gains = speedups(rows)
    records = [
        {
            "workload_label": row.label,
            **row.result.to_dict(),
            "speedup_vs_serial": gains[(row.label, row.result.rung)],
            "workers": [asdict(worker) for worker in row.workers],
        }
        for row in rows
    ]
    json_path = folder / "results.json"
    json_path.write_text(json.dumps(records, indent=2) + "\n")
    csv_path = folder / "results.csv"
    columns = [
        "workload_label",
        "rung",
        "workload",
        "seconds",
        "throughput",
        "unit",
        "speedup_vs_serial",
        "verified",
        "lost",
        "duplicates",
        "note",
    ]
    with csv_path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    return [json_path, csv_path]
