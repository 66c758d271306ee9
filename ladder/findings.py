"""Plain sentences computed from one demo run's figures: what each rung gained, and why.

Each sentence needs certain rows; it is left out unless all of them are present and
verified, so a partial or failed run never yields a claim its figures do not support.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from core.results import RunResult
from ladder.demo import Row, workloads
from ladder.registry import names

# The demo's workloads, by the labels its rows carry.
SUM, IO_PIPELINE, NO_WORK, BATCHED = (workload.label for workload in workloads(quick=True))
BROKER_RUNGS = tuple(names("broker"))
# Below this speedup on the sum, threads gained nothing beyond what the GIL allows.
GIL_BOUND = 1.2
# Processes within this share of the core count used the cores nearly fully.
NEAR_CORES = 0.8
# Below this speedup on the I/O pipeline, the waits hardly overlapped.
OVERLAP_GAIN = 1.5
# The broker's overhead counts as small once it is this share of a task or less.
SMALL_SHARE = 0.1
# What an item passes through on each rung of the no-work pipeline, in words.
CHANNELS = {
    "threads": "a queue.Queue between threads",
    "processes": "a multiprocessing.Queue between processes",
    "kombu": "kombu on Redis",
    "celery": "Celery on Redis",
}

Measured = dict[tuple[str, str], RunResult]


def sig(x: float, digits: int = 2) -> str:
    """x to `digits` significant figures, without an exponent: 4.6, 82, 940, 1,200."""
    if x <= 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = digits - 1 - math.floor(math.log10(x))
    text = f"{round(x, decimals):,.{max(decimals, 0)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def short(value: float, digits: int = 2) -> str:
    """A count in a few figures: 192, 1.5k, 14M."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")):
        if value >= factor:
            scaled = value / factor
            return f"{sig(scaled, digits) if scaled < 100 else f'{scaled:.0f}'}{suffix}"
    return sig(value, digits)


def short_rate(value: float, unit: str) -> str:
    """A throughput in a few figures: 192 items/s, 1.5k items/s, 14M numbers/s."""
    return f"{short(value)} {unit}"


def times(ratio: float) -> str:
    """A speedup as it reads in a sentence: 0.9x, 7.8x, 940x."""
    return f"{ratio:.1f}x" if 0.1 <= ratio < 10 else f"{sig(ratio)}x"


def duration(seconds: float) -> str:
    return f"{sig(seconds * 1e6)} µs" if seconds < 1e-3 else f"{sig(seconds * 1e3)} ms"


def joined(parts: Sequence[str]) -> str:
    """a; a and b; a, b and c."""
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def ran(gains: dict[str, float]) -> str:
    """threads ran at 7.8x serial and asyncio at 6.8x."""
    (first, x), *rest = gains.items()
    return joined([f"{first} ran at {times(x)} serial", *(f"{r} at {times(y)}" for r, y in rest)])


def measured(rows: Sequence[Row]) -> Measured:
    """The verified runs with a real throughput, by (workload label, rung)."""
    return {
        (row.label, row.result.rung): row.result
        for row in rows
        if row.result.verified and 0 < row.result.throughput < math.inf
    }


def gain(runs: Measured, label: str, rung: str) -> float | None:
    """rung's throughput over serial's on the workload label, when both were measured."""
    if (label, rung) not in runs or (label, "serial") not in runs:
        return None
    return runs[label, rung].throughput / runs[label, "serial"].throughput


def threads_on_sum(runs: Measured) -> str | None:
    x = gain(runs, SUM, "threads")
    if x is None:
        return None
    threads, serial = runs[SUM, "threads"], runs[SUM, "serial"]
    rates = f"{short(threads.throughput)} vs {short_rate(serial.throughput, serial.unit)}"
    if x < GIL_BOUND:
        why = "the GIL lets one thread at a time run Python code, so more threads add no CPU"
    else:
        why = "more than the GIL allows, so this Python likely runs without one"
    return f"On the CPU-bound sum, threads ran at {times(x)} serial ({rates}): {why}."


def processes_on_sum(runs: Measured, cores: int) -> str | None:
    gains = {r: x for r in ("processes", "process-pool") if (x := gain(runs, SUM, r)) is not None}
    if not gains:
        return None
    best = max(gains.values())
    if best > cores * 1.05:
        why = (
            "more than the cores allow, so the serial baseline ran slower than a core can in "
            "this run (a shared machine is noisy: `make bench` takes medians of rounds)"
        )
    elif best >= NEAR_CORES * cores:
        why = "nearly every core's worth"
    elif best > 1:
        why = "each process runs on its own core; starting them and pickling chunks cost the rest"
    else:
        why = "starting processes and pickling chunks cost more than the sum saved at this size"
    plural = "s" if cores != 1 else ""
    return f"On the sum, {ran(gains)}, of a possible {cores}x on {cores} core{plural}: {why}."


def overlap_on_io(runs: Measured) -> str | None:
    gains = {r: x for r in ("threads", "asyncio") if (x := gain(runs, IO_PIPELINE, r)) is not None}
    if not gains:
        return None
    params = runs[IO_PIPELINE, "serial"].params
    if max(gains.values()) < OVERLAP_GAIN:
        why = "the waits hardly overlapped"
    else:
        n = params["consumers"]
        why = f"the waits overlap, up to {n} consumers waiting at once (a possible {n}x)"
    return f"With {params['work_ms']:g} ms of I/O per item, {ran(gains)}: {why}."


def message_cost(runs: Measured) -> str | None:
    """1 / throughput of the no-work pipeline: what handing over one message costs."""
    cost_s = {r: 1 / runs[NO_WORK, r].throughput for r in CHANNELS if (NO_WORK, r) in runs}
    brokers = [r for r in BROKER_RUNGS if r in cost_s]
    local = [r for r in ("threads", "processes") if r in cost_s]
    if not brokers or not local:
        return None
    through = joined([f"{duration(cost_s[r])} through {CHANNELS[r]}" for r in brokers])
    ratios = joined([times(cost_s[r] / cost_s[local[0]]) for r in brokers])
    sentence = (
        f"With no work per item, a message costs {through} (1 / throughput): "
        f"{ratios} the {duration(cost_s[local[0]])} of {CHANNELS[local[0]]}"
    )
    if len(local) > 1:
        sentence += f"; {CHANNELS[local[1]]} costs {duration(cost_s[local[1]])}"
    return sentence + "."


def batching(runs: Measured) -> str | None:
    """What moving many items per message gained, and how the broker rungs then compare."""
    gains = {
        r: runs[BATCHED, r].throughput / runs[NO_WORK, r].throughput
        for r in CHANNELS
        if (BATCHED, r) in runs and (NO_WORK, r) in runs
    }
    if not gains:
        return None
    first = runs[BATCHED, next(iter(gains))]
    moved = joined(
        [
            f"{r} moved {short_rate(runs[BATCHED, r].throughput, first.unit)} "
            f"({times(x)} its rate one item per message)"
            for r, x in gains.items()
        ]
    )
    sentence = f"With {first.params['batch']} items per message, {moved}"
    brokers = [r for r in BROKER_RUNGS if r in gains]
    if brokers and (NO_WORK, "processes") in runs:
        best = max(brokers, key=lambda r: runs[BATCHED, r].throughput)
        ratio = runs[BATCHED, best].throughput / runs[NO_WORK, "processes"].throughput
        side = "more than" if ratio > 1 else f"{ratio:.0%} of"
        sentence += (
            f": batched, {best} moves {side} what the processes rung moves one item per "
            "message, as one round trip to the broker now carries many items"
        )
    return sentence + "."


def slots(rows: Sequence[Row], label: str, rung: str) -> int | None:
    """How many tasks at once the workers that served rung on label had, as they reported
    themselves; None where no worker reported (a rung whose consumers are its own)."""
    for row in rows:
        if (row.label, row.result.rung) == (label, rung) and row.workers:
            return sum(worker.concurrency for worker in row.workers)
    return None


def brokers_on_io(runs: Measured, rows: Sequence[Row] = ()) -> list[str]:
    """How far the broker rungs got with real work per item, and when their overhead fades.

    Only like with like: a rung whose workers had other than the job's consumers in slots
    (a compose worker of another shape, say) is said to be so, not compared."""
    brokers = [r for r in BROKER_RUNGS if (IO_PIPELINE, r) in runs]
    if (IO_PIPELINE, "threads") not in runs or not brokers:
        return []
    consumers = runs[IO_PIPELINE, "threads"].params["consumers"]
    unlike = {r: n for r in brokers if (n := slots(rows, IO_PIPELINE, r)) not in (None, consumers)}
    brokers = [r for r in brokers if r not in unlike]
    apart = [
        f"{CHANNELS.get(r, r)} ran on workers with {n} slots, the local rungs with {consumers} "
        "consumers: its figure is not compared with theirs"
        for r, n in unlike.items()
    ]
    if not brokers:
        return [f"{'; '.join(apart)}."] if apart else []
    work_ms = runs[IO_PIPELINE, brokers[0]].params["work_ms"]

    def share(rung: str, of: str) -> str:
        ratio = runs[IO_PIPELINE, rung].throughput / runs[IO_PIPELINE, of].throughput
        return f"{ratio:.0%}"

    reached = [
        f"{CHANNELS.get(r, r)} reached {share(r, 'threads')} of the threads rung's throughput"
        + (f" and {share(r, 'serial')} of serial's" if (IO_PIPELINE, "serial") in runs else "")
        for r in brokers
    ]
    sentences = [f"With {work_ms:g} ms of I/O per item, {'; '.join(reached)}."]
    if apart:
        sentences.append(f"{'; '.join(apart)}.")
    overhead_ms = {r: 1e3 / runs[NO_WORK, r].throughput for r in brokers if (NO_WORK, r) in runs}
    if overhead_ms:
        worst = max(overhead_ms, key=overhead_ms.__getitem__)
        overhead = overhead_ms[worst]
        enough_ms = overhead * (1 - SMALL_SHARE) / SMALL_SHARE
        sentences.append(
            f"A broker message's overhead (~{sig(overhead)} ms for {CHANNELS.get(worst, worst)}) "
            f"matters less as work per item grows: at {work_ms:g} ms of work it is "
            f"{overhead / (overhead + work_ms):.0%} of each task, "
            f"from about {sig(enough_ms)} ms under {SMALL_SHARE:.0%}."
        )
    return sentences


def findings(rows: Sequence[Row], cores: int) -> list[str]:
    """A few sentences on what this run's figures show; none that they cannot support."""
    runs = measured(rows)
    sentences = [
        threads_on_sum(runs),
        processes_on_sum(runs, cores),
        overlap_on_io(runs),
        message_cost(runs),
        batching(runs),
    ]
    return [s for s in sentences if s is not None] + brokers_on_io(runs, rows)
