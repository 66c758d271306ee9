"""The work itself: plain functions every rung runs, importing neither celery nor kombu.

Being module-level and free of broker imports, they pickle for multiprocessing and
import cleanly in a Celery worker. Items are plain dicts so that they travel as JSON.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from core.work import (
    MAX_BATCH,
    MAX_BUYERS,
    MAX_CHUNKS,
    MAX_GAP_MS,
    MAX_N,
    MAX_WORK_MS,
    RUN_ID,
    WORK_KINDS,
    Item,
    WorkKind,
    expected_sum,
)
from tasks.tickets import BUYER_MODES

FLOAT_MAX = sys.float_info.max

# End of stream: one per consumer, put after every producer has finished.
# None is JSON's null, so the same sentinel crosses a broker unchanged.
STOP = None

# Pure-Python loop iterations that take about one millisecond on the reference
# machine (CPython 3.11, 2 cores); CPU work is a fixed count of iterations, never a
# time-based spin, so that threads sharing the GIL cannot appear to overlap it.
LOOPS_PER_MS = 16_000


def sum_range(start: int, stop: int) -> int:
    """Add start + ... + stop - 1 one number at a time: CPU-bound on purpose."""
    total = 0
    for number in range(start, stop):
        total += number
    return total


def make_item(item_id: int, payload: str) -> Item:
    """One pipeline item, stamped with the wall-clock time it was produced."""
    return {"id": item_id, "t": time.time(), "payload": payload}


def work(ms: float, kind: WorkKind) -> None:
    """Per-item work: sleep (I/O-bound, releases the GIL) or a loop (CPU-bound)."""
    if ms <= 0:
        return
    if kind == "io":
        time.sleep(ms / 1000)
    else:
        sum_range(0, int(ms * LOOPS_PER_MS))


def check_item(item: Any) -> Item:
    """item, checked: raise ValueError, naming the field, unless it is
    {"id": int, "t": number, ...}."""
    if not isinstance(item, dict):
        raise ValueError(f"not an item: a {type(item).__name__}, not a dict with id and t")
    item_id, t = item.get("id"), item.get("t")
    if isinstance(item_id, bool) or not isinstance(item_id, int):
        raise ValueError(f"item id must be a whole number (got {item_id!r:.80})")
    # Within a float's range, as handle_item subtracts t from a float: 10**400 would
    # pass as a number and then fail the handling, not the check.
    if isinstance(t, bool) or not isinstance(t, int | float) or not -FLOAT_MAX <= t <= FLOAT_MAX:
        raise ValueError(f"item t must be a timestamp (got {t!r:.80})")
    return item


def check_whole(name: str, value: Any, low: int, high: int) -> int:
    """value, checked: raise ValueError, naming it, unless it is a whole number in
    [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number (got {value!r:.80})")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:,} and {high:,} (got {value:,})")
    return value


def check_number(name: str, value: Any, low: float, high: float) -> float:
    """value, checked: raise ValueError, naming it, unless it is a finite number in
    [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a finite number (got {value!r:.80})")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number (got {value!r:.80})")
    if not low <= value <= high:
        shown = f"{value:g}" if isinstance(value, float) else f"{value:,}"
        raise ValueError(f"{name} must be between {low:g} and {high:g} (got {shown})")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """value, checked: raise ValueError, naming it, unless it is one of choices."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of: {', '.join(choices)} (got {value!r:.80})")
    return value


def check_run_id(run_id: Any) -> str:
    """run_id, checked: raise ValueError unless it is 12 lowercase hex characters."""
    if not isinstance(run_id, str) or RUN_ID.fullmatch(run_id) is None:
        raise ValueError(f"run_id must be 12 lowercase hex characters (got {run_id!r:.80})")
    return run_id


def check_work(work_ms: Any, work_kind: Any) -> tuple[float, WorkKind]:
    """(work_ms, work_kind), checked: raise ValueError, naming the one that is not
    0 to MAX_WORK_MS, or io or cpu."""
    check_number("work_ms", work_ms, 0, MAX_WORK_MS)
    check_choice("work_kind", work_kind, WORK_KINDS)
    return work_ms, work_kind


def check_batch(items: Any) -> list[Item]:
    """items, checked: raise ValueError unless it is a list of 1 to MAX_BATCH items,
    each as check_item wants it."""
    if not isinstance(items, list):
        raise ValueError(f"a batch must be a list of items (got a {type(items).__name__})")
    if not 1 <= len(items) <= MAX_BATCH:
        raise ValueError(f"a batch must hold 1 to {MAX_BATCH:,} items (got {len(items):,})")
    return [check_item(item) for item in items]


def check_range(start: Any, stop: Any) -> tuple[int, int]:
    """(start, stop), checked: raise ValueError unless 0 <= start <= stop <= MAX_N + 1,
    the widest chunk of the largest sum."""
    check_whole("start", start, 0, MAX_N + 1)
    check_whole("stop", stop, start, MAX_N + 1)
    return start, stop


def check_chunk(chunk: Any) -> tuple[int, int]:
    """A (start, stop) chunk from a queue, checked as check_range does."""
    if not isinstance(chunk, list | tuple) or len(chunk) != 2:
        raise ValueError(f"a chunk must be a pair [start, stop] (got {chunk!r:.80})")
    return check_range(*chunk)


def check_totals(totals: Any) -> list[int]:
    """totals, checked: raise ValueError unless it is a list of at most MAX_CHUNKS chunk
    totals, each a whole number from 0 to the largest sum."""
    if not isinstance(totals, list) or len(totals) > MAX_CHUNKS:
        raise ValueError(
            f"totals must be a list of at most {MAX_CHUNKS:,} numbers (got {totals!r:.80})"
        )
    for total in totals:
        check_whole("a chunk's total", total, 0, expected_sum(MAX_N))
    return totals


def check_buy(buyer: Any, gap_ms: Any, mode: Any) -> tuple[int, float, str]:
    """(buyer, gap_ms, mode), checked: raise ValueError, naming the one that is not a
    buyer's number below MAX_BUYERS, 0 to MAX_GAP_MS, or a way to buy."""
    check_whole("buyer", buyer, 0, MAX_BUYERS - 1)
    check_number("gap_ms", gap_ms, 0, MAX_GAP_MS)
    check_choice("mode", mode, BUYER_MODES)
    return buyer, gap_ms, mode


def handle_item(item: Item, work_ms: float = 0.0, work_kind: WorkKind = "io") -> tuple[int, float]:
    """Consume one item: note when it was taken, do its work, return (id, latency_s).

    Latency is produce -> taken by a consumer: the time the item spent in the channel.
    An item from outside the process (a broker message) is checked first: check_item.
    """
    taken = time.time()
    work(work_ms, work_kind)
    return item["id"], taken - item["t"]


def handle_batch(
    items: Sequence[Item], work_ms: float = 0.0, work_kind: WorkKind = "io"
) -> list[tuple[int, float]]:
    """Consume the items of one message: they left the channel together, when it was
    taken, so that is when each one's latency ends; then each one's work."""
    taken = time.time()
    handled = []
    for item in items:
        work(work_ms, work_kind)
        handled.append((item["id"], taken - item["t"]))
    return handled


def batches(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    """ids in consecutive slices of at most `size`: what one message carries."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def make_message(
    ids: Sequence[int], payload: str, batched: bool, produce_ms: float = 0.0
) -> Item | list[Item]:
    """The message that carries ids: each item made (produce_ms apart, as a producer
    makes them), a list of them when batched, else the one item (check_message's
    inverse)."""
    items = []
    for item_id in ids:
        if produce_ms:
            time.sleep(produce_ms / 1000)
        items.append(make_item(item_id, payload))
    return items if batched else items[0]


def check_message(message: Any) -> list[Item]:
    """The items of a message from a queue, checked: a batch is a list of them
    (check_batch), else the message is one (check_item)."""
    return check_batch(message) if isinstance(message, list) else [check_item(message)]
