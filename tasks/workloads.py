"""The work itself: plain functions every rung runs, importing neither celery nor kombu.

Being module-level and free of broker imports, they pickle for multiprocessing and
import cleanly in a Celery worker. Items are plain dicts so that they travel as JSON.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

# End of stream: one per consumer, put after every producer has finished.
# None is JSON's null, so the same sentinel crosses a broker unchanged.
STOP = None

# Pure-Python loop iterations that take about one millisecond on the reference
# machine (CPython 3.11, 2 cores); CPU work is a fixed count of iterations, never a
# time-based spin, so that threads sharing the GIL cannot appear to overlap it.
LOOPS_PER_MS = 16_000

WorkKind = Literal["io", "cpu"]
Item = dict[str, Any]


def sum_range(start: int, stop: int) -> int:
    """Add start + ... + stop - 1 one number at a time: CPU-bound on purpose."""
    total = 0
    for number in range(start, stop):
        total += number
    return total


def chunk_ranges(n: int, chunks: int) -> list[tuple[int, int]]:
    """Split 1..n into `chunks` half-open ranges of nearly equal length."""
    bounds = [1 + (n * k) // chunks for k in range(chunks + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(chunks)]


def expected_sum(n: int) -> int:
    """1 + 2 + ... + n, the closed form every sum run is checked against."""
    return n * (n + 1) // 2


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
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise ValueError(f"item t must be a timestamp (got {t!r:.80})")
    return item


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
    makes them), a list of them when batched, else the one item (unpack's inverse)."""
    items = []
    for item_id in ids:
        if produce_ms:
            time.sleep(produce_ms / 1000)
        items.append(make_item(item_id, payload))
    return items if batched else items[0]


def unpack(message: Item | list[Item]) -> list[Item] | tuple[Item]:
    """The items of a message: a batch is a list of them, else the message is one."""
    return message if isinstance(message, list) else (message,)
