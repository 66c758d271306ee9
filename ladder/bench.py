"""`ladder bench`: rungs measured side by side in one run, each as a ratio of a baseline.

Every case runs once per round and the rounds interleave, so that the noise of a
shared machine falls on all cases alike; the throughput kept is the median, the min and
max show the noise, and a ratio is the median of the per-round ratios. Every run is
watched by an RSS sampler: a case's peak is the largest any one of its processes reached.

`--memory` runs memory_cases(): long pipelines, each against a bound on that peak.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

from broker_ipc.celery_rung import CeleryRung
from broker_ipc.peer_rung import PEERS, PeerRung
from core.celery_workers import Topology
from core.forkserver import CONTEXT, quiet_child
from core.jobs import Job, PipelineJob, SumJob
from core.results import RunResult, verify_sum
from core.rung import Progress, Rung, no_progress
from core.settings import Settings
from core.stack import Stack
from core.work import chunk_ranges
from ladder import limits
from ladder.memory import Peak, PeakRss
from ladder.registry import info
from ladder.runner import open_rung, run
from tasks.workloads import sum_range


@dataclass(frozen=True)
class Goal:
    """The ratio a case should reach against its limit: at least low, at most high."""

    low: float
    high: float | None = None

    def met(self, ratio: float) -> bool:
        return ratio >= self.low and (self.high is None or ratio <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f">= {self.low:g}x"
        return f"<= {self.high:g}x" if self.low == 0 else f"{self.low:g}x .. {self.high:g}x"


@dataclass(frozen=True)
class MemoryGoal:
    """The most resident memory (RSS) any one process of a case may reach, in MB."""

    max_mb: float

    def met(self, peak_mb: float) -> bool:
        return peak_mb <= self.max_mb

    def __str__(self) -> str:
        return f"<= {self.max_mb:g} MB per process"


@dataclass(frozen=True)
class Case:
    """One rung on one job; `limit` names the case its throughput is divided by.

    A case with `raw` set measures no rung but that plain function: the machine's own
    limit, which the rungs' figures are read against; `raw_on_broker` is the same, given
    the broker URL first.
    """

    name: str
    rung: str
    job: Job
    limit: str | None = None
    goal: Goal | MemoryGoal | None = None
    raw: Callable[[Job], RunResult] | None = None
    raw_on_broker: Callable[[str, Job], RunResult] | None = None
    # Not run again: the runs of the case of that name, read against another limit.
    runs_of: str | None = None
    # What the ratio compares: throughput, or the latency p50 (lower is better).
    compare: Literal["throughput", "latency p50"] = "throughput"
    # The celery rung on these workers rather than its own choice for the job.
    workers: Topology | None = None
    # Not run: the runs of whichever of these cases has the highest median.
    fastest_of: tuple[str, ...] = ()

    @property
    def on_broker(self) -> bool:
        if self.raw_on_broker or self.rung in PEERS:
            return True
        return self.raw is None and not self.fastest_of and info(self.rung).channel == "broker"


def raw_parallel_sum(job: Job) -> RunResult:
    """What the cores give: job.workers plain processes each add a share of 1..N, no
    queue and no ladder in between, their pool started before the clock."""
    assert isinstance(job, SumJob)
    with CONTEXT.Pool(job.workers, initializer=quiet_child) as pool:
        pool.starmap(sum_range, [(0, 1)] * job.workers)
        start = time.perf_counter()
        total = sum(pool.starmap(sum_range, chunk_ranges(job.n, job.workers)))
        seconds = time.perf_counter() - start
    return verify_sum("raw", job, total, seconds)


def cases(quick: bool = False, peers: bool = False) -> list[Case]:
    n = 5_000_000 if quick else 20_000_000
    cores = os.cpu_count() or 1
    total = SumJob(n=n, chunks=16, workers=cores)
    io_items = 200 if quick else 400
    # Small items, no work, one producer and one consumer: the shape of the raw limits,
    # so that a rung's ratio to its transport's limit is what the rung's own logic costs.
    local = PipelineJob(items=20_000, producers=1, consumers=1, payload_bytes=16)
    remote = PipelineJob(items=500 if quick else 2_000, producers=1, consumers=1, payload_bytes=16)
    # Celery's worker topology: one worker instance per consumer (each main process
    # feeds its own slots), against the bare default of one instance with 2 children.
    remote_celery = replace(remote, consumers=2)
    paced = PipelineJob(items=100 if quick else 300, producers=1, consumers=2, produce_ms=5)
    # 100 items per message: as many messages as above, a hundred times the items.
    batched_local = replace(local, items=local.items * 10, batch=100)
    batched_remote = replace(remote, items=remote.items * 10, batch=100)
    selected = [
        Case("serial sum", "serial", total),
        # Not a rung: how much faster than serial this machine's cores are right now.
        Case("raw processes sum", "raw", total, "serial sum", raw=raw_parallel_sum),
        # The GIL: threads take turns on CPU-bound work, so they gain nothing (nor lose much).
        Case("threads sum", "threads", total, "serial sum", Goal(0.85, 1.15)),
        Case("processes sum", "processes", total, "serial sum", Goal(1.8)),
        Case("process-pool sum", "process-pool", total, "serial sum", Goal(1.8)),
        Case(
            "serial pipeline io 5 ms",
            "serial",
            PipelineJob(items=io_items, producers=1, consumers=1, work_ms=5),
        ),
        # Sleeping releases the GIL: 8 threads overlap their waits.
        Case(
            "threads pipeline io 5 ms",
            "threads",
            PipelineJob(items=io_items, producers=2, consumers=8, work_ms=5),
            "serial pipeline io 5 ms",
            Goal(5.0),
        ),
        Case("raw queue.Queue", "raw", local, raw=limits.queue_threads),
        Case("raw multiprocessing.Queue", "raw", local, raw=limits.multiprocessing_queue),
        Case("raw multiprocessing.Pipe", "raw", local, raw=limits.multiprocessing_pipe),
        Case("raw redis push/pop", "raw", remote, raw_on_broker=limits.redis_unpipelined),
        Case("raw redis pipelined x100", "raw", remote, raw_on_broker=limits.redis_pipelined),
        Case("raw kombu put/get", "raw", remote, raw_on_broker=limits.kombu_simple_queue),
        Case("threads pipeline", "threads", local, "raw queue.Queue", Goal(0.5)),
        Case("processes pipeline", "processes", local, "raw multiprocessing.Queue", Goal(0.5)),
        Case("kombu pipeline", "kombu", remote, "raw kombu put/get", Goal(0.9)),
        Case("raw celery no-op", "raw", remote_celery, raw_on_broker=limits.celery_noop),
        Case("celery pipeline", "celery", remote_celery, "raw celery no-op", Goal(0.9)),
        # The same pipeline on Celery's default worker: the topology is the lever.
        Case(
            "celery pipeline, default worker",
            "celery",
            remote_celery,
            workers=limits.DEFAULT_WORKER,
        ),
        Case(
            "celery topology vs default",
            "celery",
            remote_celery,
            "celery pipeline, default worker",
            Goal(1.5),
            runs_of="celery pipeline",
        ),
        Case("celery sum", "celery", total, "serial sum", Goal(1.6)),
        # Latency: items paced so that the queue stays near empty, each item's time from
        # made to taken, against a bare task's whole round trip (sent, run, result read).
        Case("raw celery round trip", "raw", paced, raw_on_broker=limits.celery_round_trip),
        Case(
            "celery pipeline paced",
            "celery",
            paced,
            "raw celery round trip",
            Goal(0, 1.2),
            compare="latency p50",
        ),
        # Batching: each ratio is against the same rung one item per message.
        Case(
            "processes pipeline batch 100",
            "processes",
            batched_local,
            "processes pipeline",
            Goal(10),
        ),
        Case("kombu pipeline batch 100", "kombu", batched_remote, "kombu pipeline", Goal(30)),
        Case(
            "celery pipeline batch 100",
            "celery",
            replace(batched_remote, consumers=2),
            "celery pipeline",
            Goal(30),
        ),
        # The same runs against what Redis itself does with 100 commands per round trip.
        Case(
            "kombu batch 100 vs redis",
            "kombu",
            batched_remote,
            "raw redis pipelined x100",
            Goal(0.4),
            runs_of="kombu pipeline batch 100",
        ),
        Case(
            "celery batch 100 vs redis",
            "celery",
            replace(batched_remote, consumers=2),
            "raw redis pipelined x100",
            Goal(0.4),
            runs_of="celery pipeline batch 100",
        ),
    ]
    if peers:
        io = replace(remote_celery, items=io_items * 2, consumers=8, work_ms=10)
        selected += peer_cases(remote_celery, io)
    return selected


def peer_cases(no_work: PipelineJob, io: PipelineJob) -> list[Case]:
    """Dramatiq, Huey and RQ on the no-op pipeline of the celery cases and on an I/O-bound
    one (8 consumers, 10 ms each), each read against the celery rung on the same job; and
    the celery rung's batches of 100 against the fastest of them (ladder bench --peers)."""
    selected = [Case("celery pipeline io 10 ms", "celery", io)]
    for name in PEERS:
        selected.append(Case(f"{name} pipeline", name, no_work, "celery pipeline"))
    for name in PEERS:
        selected.append(Case(f"{name} pipeline io 10 ms", name, io, "celery pipeline io 10 ms"))
    fastest = tuple(f"{name} pipeline" for name in PEERS)
    selected.append(Case("fastest peer pipeline", "peer", no_work, fastest_of=fastest))
    selected.append(
        Case(
            "celery batch 100 vs fastest peer",
            "celery",
            replace(no_work, items=no_work.items * 10, batch=100),
            "fastest peer pipeline",
            Goal(10),
            runs_of="celery pipeline batch 100",
        )
    )
    return selected


# A long pipeline keeps every process under this, however many items pass, because
# every queue is bounded.
MEMORY_GOAL = MemoryGoal(300)
LOCAL_MEMORY_ITEMS = 1_000_000
BROKER_MEMORY_ITEMS = 200_000


def memory_cases() -> list[Case]:
    """One long pipeline per rung (small items, no work, the default queue bound),
    each with its peak RSS against MEMORY_GOAL. The pools move one future per item and
    the broker rungs one message, a few hundred to a few thousand a second on 2 cores:
    process-pool and celery take minutes each."""
    local_rungs = ("serial", "threads", "processes", "asyncio", "thread-pool", "process-pool")
    selected = []
    for rung in (*local_rungs, "kombu", "celery"):
        on_broker = info(rung).channel == "broker"
        items = BROKER_MEMORY_ITEMS if on_broker else LOCAL_MEMORY_ITEMS
        job = PipelineJob(items=items)
        selected.append(Case(f"{rung} pipeline {items:,} items", rung, job, goal=MEMORY_GOAL))
    return selected


@dataclass
class Measured:
    case: Case
    runs: list[RunResult]
    peaks: list[Peak] = field(default_factory=list)
    # The case whose runs these are, when they are another's (runs_of, fastest_of).
    source: str | None = None

    @property
    def throughput(self) -> float:
        return statistics.median(r.throughput for r in self.runs)

    @property
    def verified(self) -> bool:
        return all(r.verified for r in self.runs)

    @property
    def peak(self) -> Peak | None:
        """The largest per-process peak over the rounds."""
        return max(self.peaks, key=lambda p: p.process_mb) if self.peaks else None


def measure(
    selected: Sequence[Case],
    repeat: int,
    settings: Settings,
    tick: Callable[[str], None],
    progress: Progress = no_progress,
    done: Callable[[Case, RunResult], None] = lambda case, result: None,
) -> list[Measured]:
    """Every case `repeat` times, rounds interleaved. One broker stack (a private Redis,
    unless settings name a broker) and one instance of each rung serve every round, so
    that no run pays for starting them. tick(name) is called as each case starts,
    progress(n) as a rung's run moves n more items or numbers, and done(case, result) as
    each run ends.

    The RSS of every run is sampled over the processes that are the case's own
    (run_sessions)."""
    measured = [Measured(case, []) for case in selected]
    with contextlib.ExitStack() as opened:
        stack = (
            opened.enter_context(Stack(settings)) if any(c.on_broker for c in selected) else None
        )
        rungs: dict[tuple[str, Topology | None], Rung] = {}

        def opened_rung(case: Case) -> Rung | None:
            return rungs.get((case.rung, case.workers))

        def rung(case: Case) -> Rung:
            key = (case.rung, case.workers)
            if key not in rungs:
                if case.rung in PEERS:
                    started: Rung = PeerRung(case.rung, settings, stack)
                elif case.workers:
                    started = CeleryRung(settings, stack, workers=case.workers)
                else:
                    started = open_rung(case.rung, settings, stack)
                rungs[key] = opened.enter_context(started)
            return rungs[key]

        for _ in range(repeat):
            for entry in measured:
                if entry.case.runs_of or entry.case.fastest_of:
                    continue
                tick(entry.case.name)
                sessions = run_sessions(entry.case, stack, partial(opened_rung, entry.case))
                with PeakRss(sessions=sessions) as rss:
                    entry.runs.append(run_case(entry.case, rung, stack, progress))
                entry.peaks.append(rss.peak())
                done(entry.case, entry.runs[-1])
    share_runs(measured)
    return measured


def share_runs(measured: Sequence[Measured]) -> None:
    """Give each case that is not run (runs_of, fastest_of) the runs of its source."""
    by_name = {entry.case.name: entry for entry in measured}
    for entry in measured:
        if entry.case.fastest_of:
            entry.source = max(entry.case.fastest_of, key=lambda name: by_name[name].throughput)
        entry.source = entry.source or entry.case.runs_of
        if entry.source:
            entry.runs, entry.peaks = by_name[entry.source].runs, []


def run_sessions(
    case: Case, stack: Stack | None, opened: Callable[[], Rung | None]
) -> Callable[[], list[int]]:
    """The sessions whose processes are a case's, besides this process's own (where its
    producers and consumers run): a broker case's redis-server, and the celery rung's or
    a peer's workers with their children. The stack starts each in a session of its
    own, whose id is its pid. A broker given by URL runs elsewhere and is not counted.
    opened() is the case's rung once it is open."""

    def sessions() -> list[int]:
        if stack is None or not case.on_broker:
            return []
        pids = [stack.redis.process.pid] if stack.redis and stack.redis.process else []
        if case.rung == "celery" and stack.workers:
            pids += [worker.pid for worker in stack.workers.processes]
        if isinstance(rung := opened(), PeerRung):
            pids += [worker.pid for worker in rung.workers]
        return pids

    return sessions


def run_case(
    case: Case,
    rung: Callable[[Case], Rung],
    stack: Stack | None,
    progress: Progress = no_progress,
) -> RunResult:
    if case.raw:
        return case.raw(case.job)
    if case.raw_on_broker:
        assert stack is not None, "measure opens a stack for every broker case"
        return case.raw_on_broker(stack.url, case.job)
    return run(rung(case), case.job, progress)


def rows(measured: Sequence[Measured]) -> list[dict[str, Any]]:
    """One dict per case: what bench.json holds."""
    by_name = {m.case.name: m for m in measured}
    out = []
    for m in measured:
        limit = by_name.get(m.case.limit) if m.case.limit else None
        # The median of per-round ratios: a case and its limit ran minutes apart at most
        # and seconds apart within a round, so pairing them by round cancels slow spells.
        ratio = (
            statistics.median(
                compared(m.case, run) / compared(m.case, base)
                for run, base in zip(m.runs, limit.runs, strict=True)
            )
            if limit
            else None
        )
        goal = m.case.goal
        peak = m.peak
        if isinstance(goal, MemoryGoal):
            met = goal.met(peak.process_mb) if peak else None
        else:
            met = goal.met(ratio) if goal and ratio is not None else None
        latencies = [r.latency_ms["p50"] for r in m.runs if r.latency_ms]
        out.append(
            {
                "name": m.case.name,
                "rung": m.case.rung,
                "workload": m.case.job.workload,
                "params": m.case.job.params(),
                "throughput": m.throughput,
                "throughput_min": min(r.throughput for r in m.runs),
                "throughput_max": max(r.throughput for r in m.runs),
                "unit": m.case.job.unit,
                "repeat": len(m.runs),
                "runs_of": m.source,
                "verified": m.verified,
                "lost": sum(r.lost for r in m.runs),
                "limit_name": m.case.limit,
                "compare": m.case.compare,
                "limit_throughput": limit.throughput if limit else None,
                "ratio": ratio,
                "goal": str(goal) if goal else None,
                "met": met,
                "peak_rss_mb": round(peak.process_mb, 1) if peak else None,
                "peak_rss_process": peak.process if peak else None,
                "peak_rss_total_mb": (
                    round(max(p.total_mb for p in m.peaks), 1) if m.peaks else None
                ),
                "peak_rss_by_process": peaks_by_name(m.peaks),
                "latency_ms": {"p50": statistics.median(latencies)} if latencies else None,
            }
        )
    return out


def compared(case: Case, result: RunResult) -> float:
    """The figure of a run that case's ratio compares."""
    if case.compare == "throughput":
        return result.throughput
    return result.latency_ms["p50"] if result.latency_ms else math.nan


def peaks_by_name(peaks: Sequence[Peak]) -> dict[str, float]:
    """The largest peak of each kind of process over the rounds, largest first, in MB."""
    merged: dict[str, float] = {}
    for peak in peaks:
        for name, mb in peak.by_name.items():
            merged[name] = max(merged.get(name, 0.0), mb)
    return {name: round(mb, 1) for name, mb in sorted(merged.items(), key=lambda kv: -kv[1])}


def write(table: list[dict[str, Any]], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench.json"
    path.write_text(json.dumps(table, indent=2) + "\n")
    return path
