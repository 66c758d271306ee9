"""What to run: one frozen, validated dataclass per workload.

A job is checked when it is created, so a rung only ever sees sensible numbers, and
every message names the parameter and what is allowed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

from core.errors import BadInput
from core.work import (
    MAX_BATCH,
    MAX_BUYERS,
    MAX_CHUNKS,
    MAX_GAP_MS,
    MAX_MESSAGE_BYTES,
    MAX_N,
    MAX_WORK_MS,
    chunk_ranges,
    expected_sum,
)

MAX_WORKERS = 256
MAX_ITEMS = 100_000_000
MAX_PAYLOAD_BYTES = 10_000_000
MAX_QUEUE_SIZE = 1_000_000
# An item's JSON beside its payload: {"id": ..., "t": ..., "payload": ""}, a little less.
ITEM_BYTES = 64
# What a broker queue of one run may hold, in bytes, whatever its items weigh: a Redis
# list has no maxsize, and queue_size counts messages (see PipelineJob.broker_queue_size).
MAX_QUEUE_BYTES = 64 * 1024 * 1024


def check_int(name: str, value: object, low: int, high: int) -> None:
    """Raise BadInput unless value is a whole number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"{name} must be a whole number (got {value!r})")
    if value < low:
        raise BadInput(f"{name} must be at least {low:,} (got {value:,})")
    if value > high:
        raise BadInput(f"{name} must be at most {high:,} (got {value:,})")


def check_number(name: str, value: object, low: float, high: float) -> None:
    """Raise BadInput unless value is a finite number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise BadInput(f"{name} must be a number (got {value!r})")
    if not low <= value <= high:
        # An int is shown as check_int shows it: ":g" would overflow on a huge one.
        shown = f"{value:g}" if isinstance(value, float) else f"{value:,}"
        raise BadInput(f"{name} must be between {low:g} and {high:g} (got {shown})")


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise BadInput unless value is one of choices."""
    if value not in choices:
        raise BadInput(f"{name} must be one of: {', '.join(choices)} (got {value!r})")


def even_share(total: int, parts: int, part: int) -> range:
    """Part number `part` of 0..total-1 split evenly into `parts` consecutive ranges."""
    return range(total * part // parts, total * (part + 1) // parts)


@dataclass(frozen=True)
class SumJob:
    """1 + 2 + ... + n, cut into `chunks` ranges summed by `workers`."""

    workload: ClassVar[str] = "sum"
    unit: ClassVar[str] = "numbers/s"

    n: int = 20_000_000
    chunks: int = 16
    workers: int = 2

    def __post_init__(self) -> None:
        check_int("n", self.n, 1, MAX_N)
        check_int("chunks", self.chunks, 1, min(self.n, MAX_CHUNKS))
        check_int("workers", self.workers, 1, MAX_WORKERS)

    @property
    def size(self) -> int:
        """How many numbers are added: the throughput's numerator."""
        return self.n

    @property
    def expected(self) -> int:
        return expected_sum(self.n)

    def ranges(self) -> list[tuple[int, int]]:
        return chunk_ranges(self.n, self.chunks)

    def params(self) -> dict[str, Any]:
        return asdict(self)


EndOfStream = Literal["sentinel", "join"]


@dataclass(frozen=True)
class PipelineJob:
    """`producers` make `items` in all, `consumers` handle them through a bounded queue."""

    workload: ClassVar[str] = "pipeline"
    unit: ClassVar[str] = "items/s"

    items: int = 20_000
    producers: int = 2
    consumers: int = 2
    payload_bytes: int = 16
    work_ms: float = 0.0
    work_kind: Literal["io", "cpu"] = "io"
    produce_ms: float = 0.0
    queue_size: int = 1_000
    end: EndOfStream = "sentinel"
    # Items per message: above 1, producers send lists of up to `batch` items, and
    # queue_size then counts messages, not items.
    batch: int = 1

    def __post_init__(self) -> None:
        check_int("items", self.items, 1, MAX_ITEMS)
        check_int("producers", self.producers, 1, min(self.items, MAX_WORKERS))
        check_int("consumers", self.consumers, 1, MAX_WORKERS)
        check_int("payload_bytes", self.payload_bytes, 0, MAX_PAYLOAD_BYTES)
        check_number("work_ms", self.work_ms, 0, MAX_WORK_MS)
        check_choice("work_kind", self.work_kind, ("io", "cpu"))
        check_number("produce_ms", self.produce_ms, 0, MAX_WORK_MS)
        check_int("queue_size", self.queue_size, 1, MAX_QUEUE_SIZE)
        check_choice("end", self.end, ("sentinel", "join"))
        check_int("batch", self.batch, 1, MAX_BATCH)
        if self.message_bytes > MAX_MESSAGE_BYTES:
            raise BadInput(
                f"payload_bytes {self.payload_bytes:,} x batch {self.batch:,} makes messages "
                f"of about {self.message_bytes:,} bytes, more than a message may hold "
                f"({MAX_MESSAGE_BYTES:,}): fewer items per message, or smaller ones"
            )

    @property
    def size(self) -> int:
        return self.items

    @property
    def expected(self) -> int:
        return self.items

    @property
    def payload(self) -> str:
        return "x" * self.payload_bytes

    @property
    def batched(self) -> bool:
        """Whether a message carries a list of items rather than one item."""
        return self.batch > 1

    @property
    def message_bytes(self) -> int:
        """About how many bytes one message's items take: `batch` of them."""
        return self.batch * (self.payload_bytes + ITEM_BYTES)

    def messages_within(self, budget_bytes: int) -> int:
        """How many messages fit in budget_bytes on a broker, at least one: there a body
        is base64 (4 bytes for 3) in an envelope of about a kilobyte."""
        on_the_wire = self.message_bytes * 4 // 3 + 1024
        return max(1, budget_bytes // on_the_wire)

    @property
    def broker_queue_size(self) -> int:
        """The bound of a broker queue, in messages: queue_size, or fewer where that many
        would take more than MAX_QUEUE_BYTES (300 items of 10 MB would take 4 GB)."""
        return min(self.queue_size, self.messages_within(MAX_QUEUE_BYTES))

    def share(self, producer: int) -> range:
        """The item ids producer number `producer` makes: an even split of 0..items-1."""
        return even_share(self.items, self.producers, producer)

    def params(self) -> dict[str, Any]:
        return asdict(self)


TicketLock = Literal["atomic", "redis-lock"]
TICKET_LOCKS: tuple[TicketLock, ...] = ("atomic", "redis-lock")
MAX_TICKETS = 100_000_000


@dataclass(frozen=True)
class TicketsJob:
    """`buyers` race for `tickets`, `workers` of them at once; each checks the count,
    waits `gap_ms` (the gap a real request has), then buys.

    `unsafe` buys with the naive read-modify-write, to show the race; `lock` is how the
    broker rungs guard their Redis store otherwise: one atomic script, or a Redis lock.
    """

    workload: ClassVar[str] = "tickets"
    unit: ClassVar[str] = "tickets/s"

    tickets: int = 100
    buyers: int = 200
    workers: int = 8
    gap_ms: float = 2.0
    unsafe: bool = False
    lock: TicketLock = "atomic"

    def __post_init__(self) -> None:
        check_int("tickets", self.tickets, 0, MAX_TICKETS)
        check_int("buyers", self.buyers, 1, MAX_BUYERS)
        check_int("workers", self.workers, 1, MAX_WORKERS)
        check_number("gap_ms", self.gap_ms, 0, MAX_GAP_MS)
        if not isinstance(self.unsafe, bool):
            raise BadInput(f"unsafe must be true or false (got {self.unsafe!r})")
        check_choice("lock", self.lock, TICKET_LOCKS)

    @property
    def size(self) -> int:
        """Buyers answered, yes or no: what the progress bar counts."""
        return self.buyers

    @property
    def expected(self) -> int:
        """What a safe run sells: every ticket, or one per buyer if they run out first."""
        return min(self.tickets, self.buyers)

    @property
    def mode(self) -> str:
        """How a buyer over the broker buys: unsafe, atomic or redis-lock."""
        return "unsafe" if self.unsafe else self.lock

    def share(self, worker: int) -> range:
        """The buyer ids worker number `worker` serves: an even split of 0..buyers-1."""
        return even_share(self.buyers, self.workers, worker)

    def params(self) -> dict[str, Any]:
        return asdict(self)


Job = SumJob | PipelineJob | TicketsJob
