"""Bad input on the broker's queues, put there by hand as a confused or hostile user would.

    real item -> bad message (raw LPUSH, or a publish with bad content) -> real item
      -> Redis list -> a real `celery -A tasks worker`, or a real kombu consumer
                       (or a kombu sum worker, or ticket buyer: chunk, bad, chunk)

For each bad message: both real items are handled exactly once, the bad one is refused
with one log line that names the problem (or, when it is a valid message after all, is
handled), it is neither left on the queue nor held unacknowledged to come back later,
and the same worker process is still alive and serving. Bad messages are bad anywhere:
in the bytes, the envelope and its properties, the body, its size, or the task's
arguments. Everything runs on a Redis of this module's own: the Celery worker on
database 0, the kombu consumers on database 1, the sum workers and buyers on 2, so that
each side's `unacked` table is its own.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from celery import Celery
from kombu.connection import Connection

from consumers.kombu_consumer import consume, sum_worker
from consumers.ticket_buyers import buyers_queue, ready_key
from consumers.ticket_buyers import serve as serve_buyers
from core.broker import RunKeys, client
from core.celery_workers import CeleryWorkers, Topology
from core.forkserver import Child, stop_processes
from core.jobs import PipelineJob, TicketsJob
from core.recorder import Recorder
from core.work import IO_QUEUE, MAX_BATCH, MAX_BUYERS, MAX_CHUNKS, MAX_MESSAGE_BYTES
from tasks.celery_app import make_app
from tasks.tickets import RedisTickets
from tasks.workloads import STOP, make_item
from tests.support.redis_servers import RedisServers
from tests.support.watch import wait_for

# Over a hundred cases, each on real consumers and workers: a minute together.
pytestmark = pytest.mark.slow

CELERY_QUEUE = IO_QUEUE  # where tasks.handle_item goes
# kombu's Redis transport keeps what was taken but not yet acknowledged here.
UNACKED_KEYS = ("unacked", "unacked_index", "unacked_mutex")
BEFORE, AFTER, BAD = 1, 2, 9
# Long enough that nothing comes back by the visibility timeout within a case: a bad
# message held unacknowledged shows as held, not as redelivered.
VISIBILITY_TIMEOUT_S = 60.0
MB = 1 << 20


def in_db(url: str, db: int) -> str:
    return f"{url.rsplit('/', 1)[0]}/{db}"


# --- what a user puts on the queue -------------------------------------------------------


# A field or property set to DROP is left out of the envelope.
DROP = object()


def envelope(
    body: bytes,
    content_type: str = "application/json",
    headers: Any = None,
    routing_key: str = CELERY_QUEUE,
    properties: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
) -> bytes:
    """A message as kombu's Redis transport keeps it on a list, with `properties` and
    top-level `fields` set over its own; fields set to None are left out."""
    tag = str(uuid.uuid4())
    props: dict[str, Any] = {
        "correlation_id": tag,
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": routing_key},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": tag,
    }
    props.update(properties or {})
    message: dict[str, Any] = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": {} if headers is None else headers,
        "properties": {k: v for k, v in props.items() if v is not DROP},
    }
    message.update(fields or {})
    return json.dumps(
        {k: v for k, v in message.items() if v is not None and v is not DROP}
    ).encode()


def task_headers(task: Any = "tasks.handle_item", **more: Any) -> dict[str, Any]:
    """Celery's protocol 2 headers, as `apply_async` writes them."""
    task_id = str(uuid.uuid4())
    headers = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "timelimit": [None, None],
        "eta": None,
        "expires": None,
        "ignore_result": True,
        "origin": "by-hand",
    }
    headers.update(more)
    return headers


def soon(seconds: float) -> str:
    """An eta this many seconds from now, as Celery writes one."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def task_body(args: Any) -> bytes:
    """A Celery task message's body: [args, kwargs, embed], as JSON."""
    return json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None}]).encode()


def task_message(
    args: Any,
    task: Any = "tasks.handle_item",
    properties: dict[str, Any] | None = None,
    **header_fields: Any,
) -> bytes:
    """A Celery task message, its properties as kombu writes them but for `properties`."""
    return envelope(
        task_body(args), headers=task_headers(task, **header_fields), properties=properties
    )


def item_message(item: Any) -> bytes:
    """A kombu SimpleQueue message whose payload is `item`."""
    return envelope(json.dumps(item).encode(), routing_key="items")


def bad_item(keys: RunKeys, **fields: Any) -> dict[str, Any]:
    return {"id": BAD, "t": time.time(), "payload": "", **fields}


class RunsCode:
    """Unpickled, it would make a folder: proof that a pickle was, or was not, executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


def pickled(payload: Any, celery: bool) -> bytes:
    body = pickle.dumps(((payload, "run"), {}, {}) if celery else payload)
    headers = task_headers() if celery else {}
    return envelope(body, "application/x-python-serialize", headers)


GARBAGE = b"\x00\x01\x02 GET / HTTP/1.1\r\n\xff\xfe\x80 not a message"
INVALID_UTF8 = b'\xff\xfe\xfd[[1, "x"], {}, {}]\xc3\x28'
DEEP = b"[" * 100_000 + b"]" * 100_000


@dataclass(frozen=True)
class Bad:
    """One bad message: the bytes put on the list, and what must come of it."""

    make: Callable[[RunKeys, Path], bytes]
    # A regex the one clear log line must match; None: a valid message, to be handled.
    names: str | None


def case(bad: Bad, case_id: str) -> Any:
    return pytest.param(bad, id=case_id)


NOT_JSON = r"(?i)json|decod"
# The kombu consumer's own line, for a message that is JSON but not an item.
NOT_AN_ITEM = r"(?i)refused|not an item"
NOT_A_MESSAGE = (
    r"(?i)malformed|not a .*message|invalid task message"
    r"|envelope|properties|body|base64|headers|decod"
)


@dataclass(frozen=True)
class EnvelopeCase:
    """A message like a real one but for one field of its envelope (properties, or
    fields at its top), and the field the one log line must name."""

    case_id: str
    properties: dict[str, Any]
    names: str
    fields: dict[str, Any] = field(default_factory=dict)


def info(**more: Any) -> dict[str, Any]:
    """properties.delivery_info, with more set over a real one's."""
    return {"delivery_info": {"exchange": "", "routing_key": CELERY_QUEUE, **more}}


TAG = r"properties\.delivery_tag"
INFO = r"properties\.delivery_info"
ENVELOPE_CASES = [
    EnvelopeCase("delivery-tag-null", {"delivery_tag": None}, TAG),
    EnvelopeCase("delivery-tag-missing", {"delivery_tag": DROP}, TAG),
    EnvelopeCase("delivery-tag-number", {"delivery_tag": 5}, TAG),
    EnvelopeCase("delivery-tag-list", {"delivery_tag": ["a"]}, TAG),
    EnvelopeCase("delivery-tag-dict", {"delivery_tag": {"a": 1}}, TAG),
    EnvelopeCase("delivery-tag-empty", {"delivery_tag": ""}, TAG),
    EnvelopeCase("delivery-tag-1-mb", {"delivery_tag": "t" * MB}, TAG),
    EnvelopeCase("delivery-info-null", {"delivery_info": None}, INFO),
    EnvelopeCase("delivery-info-missing", {"delivery_info": DROP}, INFO),
    EnvelopeCase("delivery-info-a-list", {"delivery_info": ["", CELERY_QUEUE]}, INFO),
    EnvelopeCase(
        "exchange-missing", {"delivery_info": {"routing_key": CELERY_QUEUE}}, rf"{INFO}\.exchange"
    ),
    EnvelopeCase("exchange-a-number", info(exchange=5), rf"{INFO}\.exchange"),
    EnvelopeCase("routing-key-null", info(routing_key=None), rf"{INFO}\.routing_key"),
    EnvelopeCase("routing-key-a-dict", info(routing_key={"q": 1}), rf"{INFO}\.routing_key"),
    EnvelopeCase("redelivered-a-string", info(redelivered="yes"), rf"{INFO}\.redelivered"),
    EnvelopeCase("properties-a-list", {}, r"\bproperties must", {"properties": [1, 2]}),
    EnvelopeCase("properties-missing", {}, r"\bproperties must", {"properties": DROP}),
    EnvelopeCase("body-encoding-missing", {"body_encoding": DROP}, r"properties\.body_encoding"),
    EnvelopeCase("body-encoding-unknown", {"body_encoding": "rot13"}, r"properties\.body_encoding"),
    EnvelopeCase("priority-a-string", {"priority": "high"}, r"properties\.priority"),
    EnvelopeCase("priority-out-of-range", {"priority": 10**30}, r"properties\.priority"),
    EnvelopeCase("reply-to-a-list", {"reply_to": ["q"]}, r"properties\.reply_to"),
    EnvelopeCase(
        "correlation-id-1-mb", {"correlation_id": "c" * MB}, r"properties\.correlation_id"
    ),
    EnvelopeCase("content-type-a-number", {}, r"content-type", {"content-type": 5}),
    EnvelopeCase("content-encoding-unknown", {}, r"content-encoding", {"content-encoding": "zlib"}),
    EnvelopeCase("content-encoding-a-list", {}, r"content-encoding", {"content-encoding": [8]}),
    EnvelopeCase("body-a-number", {}, r"\bbody must", {"body": 5}),
    EnvelopeCase("body-missing", {}, r"\bbody must", {"body": DROP}),
]


def envelope_cases(make: Callable[[RunKeys, EnvelopeCase], bytes]) -> list[Any]:
    return [case(Bad(lambda k, p, c=c: make(k, c), c.names), c.case_id) for c in ENVELOPE_CASES]


def bad_task_envelope(keys: RunKeys, c: EnvelopeCase) -> bytes:
    body = task_body([bad_item(keys), keys.run_id])
    return envelope(body, headers=task_headers(), properties=c.properties, fields=c.fields)


def bad_item_envelope(keys: RunKeys, c: EnvelopeCase) -> bytes:
    body = json.dumps(bad_item(keys)).encode()
    return envelope(body, routing_key="items", properties=c.properties, fields=c.fields)


def inflating(prefix: bytes, filler_mb: int, suffix: bytes) -> bytes:
    """zlib of prefix, filler_mb MiB of "x", then suffix: a few hundred KB that inflate
    to filler_mb MiB, made without ever holding the inflated bytes."""
    squeeze = zlib.compressobj(9)
    parts = [squeeze.compress(prefix)]
    chunk = b"x" * MB
    parts += [squeeze.compress(chunk) for _ in range(filler_mb)]
    parts += [squeeze.compress(suffix), squeeze.flush()]
    return b"".join(parts)


INFLATED_MB = 256
COMPRESSED = r"(?i)compress"


def compressed_task(keys: RunKeys) -> bytes:
    """A task message whose body inflates to a real handle_item of a 256 MiB item."""
    prefix, suffix = task_body([bad_item(keys, payload="@"), keys.run_id]).split(b"@")
    body = inflating(prefix, INFLATED_MB, suffix)
    return envelope(body, headers=task_headers(compression="application/x-gzip"))


def compressed_item(keys: RunKeys) -> bytes:
    """An item message whose body inflates to a real item of 256 MiB."""
    prefix, suffix = json.dumps(bad_item(keys, payload="@")).encode().split(b"@")
    body = inflating(prefix, INFLATED_MB, suffix)
    return envelope(body, routing_key="items", headers={"compression": "application/x-gzip"})


def padded(make_body: Callable[[str], bytes], size: int) -> bytes:
    """make_body's body with a payload that makes it exactly size bytes."""
    room = size - len(make_body(""))
    body = make_body("x" * room)
    assert len(body) == size
    return body


def task_of_bytes(keys: RunKeys, size: int) -> bytes:
    t = time.time()
    body = padded(
        lambda payload: task_body([bad_item(keys, t=t, payload=payload), keys.run_id]), size
    )
    return envelope(body, headers=task_headers())


def item_of_bytes(keys: RunKeys, size: int) -> bytes:
    t = time.time()
    body = padded(lambda payload: json.dumps(bad_item(keys, t=t, payload=payload)).encode(), size)
    return envelope(body, routing_key="items")


TOO_BIG = r"MAX_MESSAGE_BYTES"


def tiny_items(count: int) -> list[dict[str, Any]]:
    return [{"id": BAD, "t": 0.0} for _ in range(count)]


def celery_task_case(
    task: str, args: Callable[[RunKeys], list[Any]], names: str, case_id: str
) -> Any:
    """A task message with args (given the run's keys), failed by its check: one line
    from Celery naming the argument."""
    failed = rf"{re.escape(task)}\[.*\] raised unexpected: ValueError\(.*{names}"
    return case(Bad(lambda k, p: task_message(args(k), task=task), failed), case_id)


TASK_CASES = [
    celery_task_case(
        "tasks.handle_item", lambda k: [bad_item(k), k.run_id, 1e9, "io"], "work_ms", "work-ms-1e9"
    ),
    celery_task_case(
        "tasks.handle_item",
        lambda k: [bad_item(k), k.run_id, float("nan"), "io"],
        "work_ms",
        "work-ms-nan",
    ),
    celery_task_case(
        "tasks.handle_item", lambda k: [bad_item(k), k.run_id, 0.0, "gpu"], "work_kind", "work-kind"
    ),
    celery_task_case("tasks.handle_item", lambda k: [bad_item(k), "*"], "run_id", "run-id-star"),
    celery_task_case("tasks.handle_item", lambda k: [bad_item(k), "../x"], "run_id", "run-id-dots"),
    celery_task_case(
        "tasks.handle_item", lambda k: [bad_item(k), k.run_id.upper()], "run_id", "run-id-upper"
    ),
    celery_task_case(
        "tasks.handle_item", lambda k: [bad_item(k), 12345], "run_id", "run-id-number"
    ),
    celery_task_case(
        "tasks.handle_batch",
        lambda k: [tiny_items(MAX_BATCH + 1), k.run_id],
        "batch must hold",
        "batch-too-long",
    ),
    celery_task_case(
        "tasks.handle_batch", lambda k: [[], k.run_id], "batch must hold", "batch-empty"
    ),
    celery_task_case(
        "tasks.handle_batch",
        lambda k: [bad_item(k), k.run_id],
        "batch must be a list",
        "batch-a-dict",
    ),
    celery_task_case(
        "tasks.handle_batch", lambda k: [[bad_item(k)], "*"], "run_id", "batch-run-id-star"
    ),
    celery_task_case(
        "tasks.handle_batch",
        lambda k: [[bad_item(k)], k.run_id, 1e9, "io"],
        "work_ms",
        "batch-work-ms-1e9",
    ),
    celery_task_case("tasks.sum_range", lambda k: [0, 10**18], "stop must be", "sum-to-1e18"),
    celery_task_case("tasks.sum_range", lambda k: [5, 2], "stop must be", "sum-stop-below-start"),
    celery_task_case(
        "tasks.sum_range", lambda k: [-(10**18), 0], "start must be", "sum-from-below"
    ),
    celery_task_case("tasks.sum_range", lambda k: ["1", 2], "start must be", "sum-start-a-string"),
    celery_task_case("tasks.add_totals", lambda k: [["x"]], "total", "totals-a-string"),
    celery_task_case("tasks.add_totals", lambda k: [[-1]], "total", "totals-negative"),
    celery_task_case(
        "tasks.add_totals", lambda k: [[0] * (MAX_CHUNKS + 1)], "totals must", "totals-too-many"
    ),
    celery_task_case(
        "tasks.buy_ticket", lambda k: ["*", 1, 0.0, "atomic"], "run_id", "ticket-run-id-star"
    ),
    celery_task_case(
        "tasks.buy_ticket",
        lambda k: [k.run_id, -1, 0.0, "atomic"],
        "buyer",
        "ticket-buyer-negative",
    ),
    celery_task_case(
        "tasks.buy_ticket", lambda k: [k.run_id, "5", 0.0, "atomic"], "buyer", "ticket-buyer-string"
    ),
    celery_task_case(
        "tasks.buy_ticket",
        lambda k: [k.run_id, MAX_BUYERS, 0.0, "atomic"],
        "buyer",
        "ticket-buyer-too-high",
    ),
    celery_task_case(
        "tasks.buy_ticket", lambda k: [k.run_id, 1, 1e9, "atomic"], "gap_ms", "ticket-gap-1e9"
    ),
    celery_task_case(
        "tasks.buy_ticket", lambda k: [k.run_id, 1, 0.0, "free"], "mode", "ticket-mode-unknown"
    ),
]

CELERY_CASES = [
    case(Bad(lambda k, p: GARBAGE, NOT_JSON), "garbage-bytes"),
    case(Bad(lambda k, p: b"", NOT_JSON), "empty-string"),
    case(Bad(lambda k, p: INVALID_UTF8, NOT_JSON), "invalid-utf8-bytes"),
    case(
        Bad(lambda k, p: envelope(INVALID_UTF8, headers=task_headers()), r"(?i)utf-?8|decod"),
        "invalid-utf8-body",
    ),
    case(Bad(lambda k, p: b"[1, 2, 3]", NOT_A_MESSAGE), "json-array"),
    case(
        Bad(
            lambda k, p: b'{"task": "tasks.handle_item", "args": [1, "run"]}',
            NOT_A_MESSAGE,
        ),
        "json-object-not-a-message",
    ),
    case(
        Bad(lambda k, p: envelope(b"", headers=task_headers()), NOT_A_MESSAGE),
        "message-without-body",
    ),
    case(
        Bad(
            lambda k, p: task_message([1]).replace(b'"body": "', b'"body": "A'),
            NOT_A_MESSAGE,
        ),
        "body-not-base64",
    ),
    case(
        Bad(
            lambda k, p: envelope(b'{"item": 1}', headers=task_headers()),
            NOT_A_MESSAGE,
        ),
        "body-not-args-kwargs-embed",
    ),
    case(
        Bad(lambda k, p: envelope(b"[[], {}, {}]", headers=[1, 2]), NOT_A_MESSAGE),
        "headers-not-a-dict",
    ),
    case(
        Bad(
            lambda k, p: task_message([bad_item(k), k.run_id], task=["tasks.handle_item"]),
            r"(?i)task name|unhashable|invalid task",
        ),
        "task-name-not-a-string",
    ),
    case(
        Bad(
            lambda k, p: task_message([bad_item(k), k.run_id], timelimit="abc"),
            r"(?i)time ?limit|invalid task message",
        ),
        "timelimit-not-a-pair",
    ),
    case(
        Bad(
            lambda k, p: task_message([bad_item(k), k.run_id], eta="not a date"),
            r"invalid task message: eta must be an ISO 8601 date",
        ),
        "eta-not-a-date",
    ),
    case(
        Bad(
            lambda k, p: task_message([bad_item(k, id="nine"), k.run_id]),
            r"(?i)\bid\b",
        ),
        "string-id",
    ),
    case(
        Bad(lambda k, p: task_message([]), r"missing 2 required positional arguments"),
        "missing-args",
    ),
    case(
        Bad(
            lambda k, p: task_message(["not an item", 5]),
            r"tasks\.handle_item\[.*\] raised unexpected: (TypeError|ValueError)",
        ),
        "args-of-the-wrong-types",
    ),
    case(
        Bad(
            lambda k, p: task_message([1, 2], task="tasks.no_such_task"),
            r"unregistered task .*tasks\.no_such_task",
        ),
        "unknown-task-name",
    ),
    case(Bad(lambda k, p: pickled(RunsCode(p), celery=True), r"pickle"), "pickle-that-runs-code"),
    case(
        Bad(lambda k, p: envelope(DEEP, headers=task_headers()), r"(?i)recursion"),
        "json-nested-100000-deep",
    ),
    # Within the bound: the body is tiny, and the envelope under the room it has.
    case(
        Bad(lambda k, p: task_message([bad_item(k), k.run_id], odd="h" * (5 * MB)), None),
        "header-of-5-mb",
    ),
    *[
        case(Bad(lambda k, p, h=h: task_message([bad_item(k), k.run_id], **h), names), case_id)
        for h, names, case_id in [
            ({"id": None}, r"invalid task message: id must be", "task-id-null"),
            ({"id": ["x"]}, r"invalid task message: id must be", "task-id-a-list"),
            ({"root_id": 5}, r"invalid task message: root_id must be", "root-id-a-number"),
            ({"expires": "not a date"}, r"(?i)invalid task|expires|date", "expires-not-a-date"),
            ({"expires": 1e300}, r"(?i)invalid task|expires|overflow", "expires-a-huge-number"),
            ({"retries": "many"}, r"invalid task message: retries must be", "retries-a-string"),
            ({"stamps": [1]}, r"invalid task message: stamps must be", "stamps-a-list"),
            # Held unacknowledged until then, it would come back every visibility timeout.
            (
                {"eta": "2100-01-01T00:00:00+00:00"},
                r"invalid task message: eta is [\d,]+ s ahead, beyond the visibility timeout",
                "eta-in-2100",
            ),
            ({"eta": 5}, r"invalid task message: eta must be an ISO 8601 date", "eta-a-number"),
        ]
    ],
    # An eta within the visibility timeout is a task for later, and is run then.
    case(
        Bad(lambda k, p: task_message([bad_item(k), k.run_id], eta=soon(1.0)), None),
        "eta-in-a-second",
    ),
    case(
        Bad(
            lambda k, p: envelope(
                json.dumps([[bad_item(k), k.run_id], [1], {}]).encode(), headers=task_headers()
            ),
            r"(?i)invalid task|kwargs|mapping",
        ),
        "kwargs-a-list",
    ),
    case(Bad(lambda k, p: compressed_task(k), COMPRESSED), "compressed-to-inflate-256-mb"),
    case(Bad(lambda k, p: task_of_bytes(k, MAX_MESSAGE_BYTES), None), "body-of-the-bound"),
    case(
        Bad(lambda k, p: task_of_bytes(k, MAX_MESSAGE_BYTES + 1), TOO_BIG),
        "body-one-byte-over-the-bound",
    ),
    *envelope_cases(bad_task_envelope),
    *TASK_CASES,
]

KOMBU_CASES = [
    case(Bad(lambda k, p: GARBAGE, NOT_JSON), "garbage-bytes"),
    case(Bad(lambda k, p: b"", NOT_JSON), "empty-string"),
    case(Bad(lambda k, p: INVALID_UTF8, NOT_JSON), "invalid-utf8-bytes"),
    case(
        Bad(lambda k, p: envelope(INVALID_UTF8), r"(?i)utf-?8|decod"),
        "invalid-utf8-body",
    ),
    case(Bad(lambda k, p: b"[1, 2, 3]", NOT_A_MESSAGE), "json-array"),
    case(
        Bad(lambda k, p: b'{"id": 9, "t": 0, "payload": ""}', NOT_A_MESSAGE),
        "json-object-not-a-message",
    ),
    case(Bad(lambda k, p: envelope(b""), NOT_AN_ITEM), "message-without-body"),
    case(
        Bad(
            lambda k, p: item_message(bad_item(k)).replace(b'"body": "', b'"body": "A'),
            NOT_A_MESSAGE,
        ),
        "body-not-base64",
    ),
    case(
        Bad(lambda k, p: envelope(b"{}", headers=[1, 2]), NOT_A_MESSAGE),
        "headers-not-a-dict",
    ),
    case(Bad(lambda k, p: item_message([1, "x"]), NOT_AN_ITEM), "item-not-a-dict"),
    case(
        Bad(lambda k, p: item_message({"id": BAD, "payload": ""}), NOT_AN_ITEM),
        "item-without-timestamp",
    ),
    case(
        Bad(lambda k, p: item_message(bad_item(k, id="nine")), r"(?i)\bid\b"),
        "string-id",
    ),
    # Numbers as JSON holds them, each of which would pass "is it a number" and then
    # fail the handling (t is subtracted from a float): refused at the check instead.
    case(
        Bad(lambda k, p: item_message(bad_item(k, t=10**400)), r"t must be a timestamp"),
        "timestamp-beyond-a-float",
    ),
    case(
        Bad(lambda k, p: item_message(bad_item(k, t=float("nan"))), r"t must be a timestamp"),
        "timestamp-nan",
    ),
    case(
        Bad(lambda k, p: item_message(bad_item(k, t=float("inf"))), r"t must be a timestamp"),
        "timestamp-infinite",
    ),
    case(
        Bad(lambda k, p: pickled(RunsCode(p), celery=False), r"pickle"),
        "pickle-that-runs-code",
    ),
    case(
        Bad(
            lambda k, p: envelope(b"{}", "application/x-yaml"),
            r"(?i)yaml|untrusted",
        ),
        "yaml-content-type",
    ),
    case(
        Bad(lambda k, p: envelope(DEEP), r"(?i)recursion"),
        "json-nested-100000-deep",
    ),
    case(
        Bad(
            lambda k, p: envelope(json.dumps(bad_item(k)).encode(), headers={"h": "h" * (5 * MB)}),
            None,
        ),
        "header-of-5-mb",
    ),
    case(Bad(lambda k, p: compressed_item(k), COMPRESSED), "compressed-to-inflate-256-mb"),
    case(Bad(lambda k, p: item_of_bytes(k, MAX_MESSAGE_BYTES), None), "body-of-the-bound"),
    case(
        Bad(lambda k, p: item_of_bytes(k, MAX_MESSAGE_BYTES + 1), TOO_BIG),
        "body-one-byte-over-the-bound",
    ),
    *envelope_cases(bad_item_envelope),
    case(
        Bad(lambda k, p: item_message(tiny_items(MAX_BATCH + 1)), r"batch must hold"),
        "batch-too-long",
    ),
    case(Bad(lambda k, p: item_message([]), r"batch must hold"), "batch-empty"),
]


# --- the consumers under test ------------------------------------------------------------


def new_text(log: Path, since: int) -> str:
    if not log.exists():
        return ""
    with open(log, "rb") as f:
        f.seek(since)
        return f.read().decode(errors="replace")


def size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


# More than this many records (or lines) for one bad message is a storm, not a refusal.
STORM_RECORDS = 3
STORM_LINES = 200


def check_logged(text: str, names: str, is_record: Callable[[str], bool]) -> None:
    """One clear line names the problem, and the refusal is not a storm of log records."""
    records = [line for line in text.splitlines() if is_record(line)]
    named = [line for line in records if re.search(names, line)]
    assert named, f"no log line matching {names!r} in:\n{text[-3000:]}"
    print(f"\nlogged: {named[0][:160]}")
    assert len(records) <= STORM_RECORDS and text.count("\n") <= STORM_LINES, text[-3000:]


def celery_record(line: str) -> bool:
    """A log record at WARNING or above, not a line of a traceback."""
    return re.match(r"\[[^\]]*: (WARNING|ERROR|CRITICAL)/", line) is not None


def refusal(names: str) -> str:
    """names, on a line that is not the worker going down or reconnecting instead."""
    body = names.removeprefix("(?i)")
    return rf"(?i)^(?!.*(Unrecoverable error|Connection to broker lost)).*({body})"


def kombu_record(line: str) -> bool:
    """A line of the consumer's own (Python's last-resort handler prints the bare message)."""
    return bool(line) and not line[0].isspace() and not line.startswith(("Traceback", "Process"))


class CeleryWorker:
    """One real `celery -A tasks worker` (threads pool, two slots) on database 0.

    A case that kills it is seen as such; the next case gets a new one, on a queue
    purged of what killed the last (a poison message would kill every new worker).
    """

    def __init__(self, url: str, workdirs: Callable[[], Path]) -> None:
        self.url = url
        self.workdirs = workdirs
        self.workers: CeleryWorkers | None = None
        self.redis = client(url)

    @property
    def process(self) -> psutil.Process:
        assert self.workers is not None
        return psutil.Process(self.workers.processes[0].pid)

    @property
    def log(self) -> Path:
        assert self.workers is not None
        return self.workers.workdir / "worker-0.log"

    def alive(self) -> bool:
        return self.workers is not None and self.workers.processes[0].poll() is None

    def ensure_running(self) -> None:
        if self.alive():
            return
        self.stop()
        self.redis.delete(CELERY_QUEUE, *UNACKED_KEYS)
        workers = CeleryWorkers(
            self.url, self.url, Topology(1, "threads", 2), self.workdirs(), VISIBILITY_TIMEOUT_S
        )
        workers.start()
        self.workers = workers

    def stop(self) -> None:
        if self.workers is not None:
            self.workers.stop()
            self.workers = None


def consume_logged(log: str, url: str, keys: RunKeys, visibility_timeout_s: float) -> None:
    """consumers.kombu_consumer.consume, with what it prints going to `log`."""
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    consume(url, keys, PipelineJob(), visibility_timeout_s)


class KombuConsumer:
    """One kombu consumer process on its own run's queue, started as the kombu rung does."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.keys = RunKeys.new()
        self.log = workdir / "kombu-consumer.log"
        self.child = Child(
            target=consume_logged,
            args=(str(self.log), url, self.keys, VISIBILITY_TIMEOUT_S),
            name="kombu-consumer",
        )

    def alive(self) -> bool:
        return self.child.is_alive()

    @property
    def process(self) -> psutil.Process:
        assert self.child.pid is not None
        return psutil.Process(self.child.pid)

    def stop(self) -> None:
        if self.child.is_alive():
            with Connection(self.url) as connection:
                connection.SimpleQueue(self.keys.items, serializer="json").put(STOP)
            self.child.join(5)
        stop_processes([self.child])


@pytest.fixture(scope="module")
def redis_url(redis_servers: RedisServers) -> Iterator[str]:
    """A Redis of this module's own: the messages put here would upset any other test."""
    with redis_servers.running("bad-messages-redis") as server:
        yield server.url


@pytest.fixture(scope="module")
def worker_fixture(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CeleryWorker]:
    worker = CeleryWorker(in_db(redis_url, 0), lambda: tmp_path_factory.mktemp("celery"))
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def celery_worker(worker_fixture: CeleryWorker) -> CeleryWorker:
    worker_fixture.ensure_running()
    return worker_fixture


@pytest.fixture(scope="module")
def celery_client(redis_url: str) -> Iterator[Celery]:
    """A client that sends tasks by name, as producers/celery_producer.py does."""
    app = make_app(in_db(redis_url, 0), in_db(redis_url, 0))
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def kombu_consumer(redis_url: str, tmp_path: Path) -> Iterator[KombuConsumer]:
    url = in_db(redis_url, 1)
    consumer = KombuConsumer(url, tmp_path)
    with consumer.keys.lease(url):
        try:
            consumer.child.start()
            yield consumer
        finally:
            consumer.stop()
    client(url).delete(*UNACKED_KEYS)


# --- the checks ---------------------------------------------------------------------------


@dataclass
class Outcome:
    ids: list[int]
    redelivered: int


def handled(url: str, keys: RunKeys, expected: int, alive: Callable[[], bool]) -> Outcome:
    """Wait until `expected` items are recorded, or the consumer is gone; read them."""
    recorder = Recorder(url)
    wait_for(lambda: recorder.count(keys) >= expected or not alive())
    consumed = recorder.read(keys)
    return Outcome(sorted(consumed.ids), consumed.redelivered)


def check_nothing_held(r: redis.Redis, queue: str) -> None:
    """The bad message is neither waiting on the queue nor held unacknowledged, to come
    back after the visibility timeout."""
    assert wait_for(lambda: r.llen(queue) == 0 and r.hlen("unacked") == 0), (
        f"{queue}: {r.llen(queue)} waiting, {r.hlen('unacked')} unacknowledged"
    )


def check_keys_in_runs(r: redis.Redis) -> None:
    """Every key the project wrote is under ladder:<12 hex characters>:, its run's."""
    stray = [key for key in r.scan_iter("ladder:*") if not RUN_KEY.match(key)]
    assert not stray, stray


RUN_KEY = re.compile(r"ladder:[0-9a-f]{12}:")


def send_item(app: Celery, keys: RunKeys, item_id: int, payload: str = "x") -> None:
    app.signature("tasks.handle_item").apply_async(
        (make_item(item_id, payload), keys.run_id, 0.0, "io")
    )


def put_item(url: str, keys: RunKeys, item_id: int, payload: str = "x") -> None:
    with Connection(url) as connection:
        connection.SimpleQueue(keys.items, serializer="json").put(make_item(item_id, payload))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("bad", CELERY_CASES)
def test_a_celery_worker_refuses_a_bad_message_and_keeps_serving(
    bad: Bad, celery_worker: CeleryWorker, celery_client: Celery, tmp_path: Path
) -> None:
    r = celery_worker.redis
    keys = RunKeys.new()
    pid, since = celery_worker.process.pid, size(celery_worker.log)
    with keys.lease(celery_worker.url):
        send_item(celery_client, keys, BEFORE)
        r.lpush(CELERY_QUEUE, bad.make(keys, tmp_path / "pickle-ran"))
        send_item(celery_client, keys, AFTER)

        expected = [BEFORE, AFTER] if bad.names else [BEFORE, AFTER, BAD]
        outcome = handled(celery_worker.url, keys, len(expected), celery_worker.alive)
        assert celery_worker.alive(), new_text(celery_worker.log, since)[-3000:]
        assert celery_worker.process.pid == pid
        assert outcome == Outcome(expected, 0)
        if bad.names:
            names = bad.names
            assert wait_for(
                lambda: re.search(names, new_text(celery_worker.log, since)) is not None
            )
            check_logged(new_text(celery_worker.log, since), refusal(bad.names), celery_record)
        check_nothing_held(r, CELERY_QUEUE)
        assert not (tmp_path / "pickle-ran").exists()
        check_keys_in_runs(r)


# A broadcast (remote control: ping, shutdown, ...) reaches every worker by Redis
# PUBLISH on this channel, not by a list.
PIDBOX_CHANNEL = "/0.celery.pidbox"
BROADCAST_CASES = [
    case(Bad(lambda k, p: b"[1, 2, 3]", NOT_A_MESSAGE), "json-array"),
    case(
        Bad(lambda k, p: envelope(b"{}", fields={"properties": [1, 2]}), r"\bproperties must"),
        "properties-a-list",
    ),
    case(Bad(lambda k, p: envelope(b"{}", properties={"delivery_tag": DROP}), TAG), "no-tag"),
    case(
        Bad(
            lambda k, p: envelope(b"{}", headers={"compression": "application/x-gzip"}),
            COMPRESSED,
        ),
        "compressed",
    ),
]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("bad", BROADCAST_CASES)
def test_a_celery_worker_refuses_a_bad_broadcast_and_keeps_serving(
    bad: Bad, celery_worker: CeleryWorker, celery_client: Celery, tmp_path: Path
) -> None:
    keys = RunKeys.new()
    pid, since = celery_worker.process.pid, size(celery_worker.log)
    with keys.lease(celery_worker.url):
        send_item(celery_client, keys, BEFORE)
        assert celery_worker.redis.publish(PIDBOX_CHANNEL, bad.make(keys, tmp_path)) == 1
        send_item(celery_client, keys, AFTER)

        outcome = handled(celery_worker.url, keys, 2, celery_worker.alive)
        assert celery_worker.alive(), new_text(celery_worker.log, since)[-3000:]
        assert celery_worker.process.pid == pid
        assert outcome == Outcome([BEFORE, AFTER], 0)
        assert bad.names
        names = bad.names
        assert wait_for(lambda: re.search(names, new_text(celery_worker.log, since)) is not None)
        check_logged(new_text(celery_worker.log, since), refusal(names), celery_record)
        # Still answering broadcasts.
        assert celery_client.control.ping(timeout=1.0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", KOMBU_CASES)
def test_a_kombu_consumer_refuses_a_bad_message_and_keeps_serving(
    bad: Bad, kombu_consumer: KombuConsumer, tmp_path: Path
) -> None:
    url, keys = kombu_consumer.url, kombu_consumer.keys
    r = client(url)
    put_item(url, keys, BEFORE)
    r.lpush(keys.items, bad.make(keys, tmp_path / "pickle-ran"))
    put_item(url, keys, AFTER)

    expected = [BEFORE, AFTER] if bad.names else [BEFORE, AFTER, BAD]
    outcome = handled(url, keys, len(expected), kombu_consumer.alive)
    assert kombu_consumer.alive(), new_text(kombu_consumer.log, 0)[-3000:]
    assert outcome == Outcome(expected, 0)
    if bad.names:
        names = bad.names
        assert wait_for(lambda: re.search(names, new_text(kombu_consumer.log, 0)) is not None)
        check_logged(new_text(kombu_consumer.log, 0), bad.names, kombu_record)
    check_nothing_held(r, keys.items)
    assert not (tmp_path / "pickle-ran").exists()


# Redis takes a bulk string of up to 512 MB (proto-max-bulk-len), so 100 MB goes through
# to the consumer, which refuses it unread: its body is over MAX_MESSAGE_BYTES. 8 MB is
# within it, and handled.
SIZES_MB = [8, 100]
# What "sane" means for an 8 MB message handled: its JSON, its base64 and the decoded
# item each take a copy; several times the message, well below what kills a small
# machine. For a 100 MB message refused, what the process grows by: the 140 MB read from
# Redis and redis-py's copies of them while it parses the reply (about three in all),
# and nothing decoded, which would take as much again.
MAX_RSS = 1536 * MB
MAX_GROWTH_REFUSED = 512 * MB


class PeakRss:
    """The highest RSS seen of one process, sampled while waiting, and its RSS before."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.start = process.memory_info().rss
        self.peak = self.start

    def sample(self) -> None:
        with_rss = self.process.memory_info().rss
        self.peak = max(self.peak, with_rss)


def check_memory_sane(peak: PeakRss, r: redis.Redis, mb: int) -> None:
    peak.sample()
    growth = peak.peak - peak.start
    print(f"{mb} MB message: peak RSS {peak.peak // MB} MB, {growth // MB} MB over the start")
    if within_bound(mb):
        assert peak.peak < MAX_RSS
    else:
        assert growth < MAX_GROWTH_REFUSED
    # Redis let go of the message once it was handled and acknowledged, or refused.
    # Redis gives back a big client's query buffer in its own time (clientsCron).
    assert wait_for(lambda: r.info("memory")["used_memory"] < 64 * MB), r.info("memory")


def within_bound(mb: int) -> bool:
    return mb * MB < MAX_MESSAGE_BYTES


@pytest.mark.parametrize("mb", SIZES_MB, ids=[f"{mb}-mb" for mb in SIZES_MB])
def test_a_celery_worker_takes_a_big_message_within_the_bound_and_refuses_one_over_it(
    mb: int, celery_worker: CeleryWorker, celery_client: Celery
) -> None:
    r = celery_worker.redis
    keys = RunKeys.new()
    pid, since = celery_worker.process.pid, size(celery_worker.log)
    peak = PeakRss(celery_worker.process)
    expected = [BEFORE, AFTER, BAD] if within_bound(mb) else [BEFORE, AFTER]
    with keys.lease(celery_worker.url):
        send_item(celery_client, keys, BEFORE)
        send_item(celery_client, keys, BAD, "x" * (mb * MB))
        send_item(celery_client, keys, AFTER)
        recorder = Recorder(celery_worker.url)

        def done() -> bool:
            if not celery_worker.alive():
                return True
            peak.sample()
            refused = within_bound(mb) or TOO_BIG in new_text(celery_worker.log, since)
            return recorder.count(keys) >= len(expected) and refused

        wait_for(done, timeout_s=90)
        assert celery_worker.alive(), new_text(celery_worker.log, since)[-3000:]
        assert celery_worker.process.pid == pid
        assert handled(celery_worker.url, keys, len(expected), celery_worker.alive) == Outcome(
            expected, 0
        )
        if not within_bound(mb):
            check_logged(new_text(celery_worker.log, since), refusal(TOO_BIG), celery_record)
        check_nothing_held(r, CELERY_QUEUE)
        check_memory_sane(peak, r, mb)


@pytest.mark.parametrize("mb", SIZES_MB, ids=[f"{mb}-mb" for mb in SIZES_MB])
def test_a_kombu_consumer_takes_a_big_message_within_the_bound_and_refuses_one_over_it(
    mb: int, kombu_consumer: KombuConsumer
) -> None:
    url, keys = kombu_consumer.url, kombu_consumer.keys
    r = client(url)
    peak = PeakRss(kombu_consumer.process)
    expected = [BEFORE, AFTER, BAD] if within_bound(mb) else [BEFORE, AFTER]
    put_item(url, keys, BEFORE)
    put_item(url, keys, BAD, "x" * (mb * MB))
    put_item(url, keys, AFTER)
    recorder = Recorder(url)

    def done() -> bool:
        if not kombu_consumer.alive():
            return True
        peak.sample()
        refused = within_bound(mb) or TOO_BIG in new_text(kombu_consumer.log, 0)
        return recorder.count(keys) >= len(expected) and refused

    wait_for(done, timeout_s=90)
    assert kombu_consumer.alive(), new_text(kombu_consumer.log, 0)[-3000:]
    assert handled(url, keys, len(expected), kombu_consumer.alive) == Outcome(expected, 0)
    if not within_bound(mb):
        check_logged(new_text(kombu_consumer.log, 0), TOO_BIG, kombu_record)
    check_nothing_held(r, keys.items)
    check_memory_sane(peak, r, mb)


# --- the kombu sum worker and ticket buyer: their work is on a queue too -----------------


def logged(log: str, target: Callable[..., None], *args: Any) -> None:
    """target(*args), with what it prints going to `log`."""
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    target(*args)


class KombuRole:
    """One process of a kombu role (a sum worker, a ticket buyer) on a run of its own."""

    def __init__(self, url: str, workdir: Path, target: Callable[..., None], *args: Any) -> None:
        self.url = url
        self.keys = RunKeys.new()
        self.log = workdir / "kombu-role.log"
        self.child = Child(
            target=logged, args=(str(self.log), target, *args, self.keys), name="kombu-role"
        )

    def stop(self, queue: str) -> None:
        if self.child.is_alive():
            with Connection(self.url) as connection:
                connection.SimpleQueue(queue, serializer="json").put(STOP)
            self.child.join(5)
        stop_processes([self.child])
        self.keys.cleanup(self.url)
        client(self.url).delete(*UNACKED_KEYS)


def sum_worker_of(url: str, visibility_timeout_s: float, keys: RunKeys) -> None:
    sum_worker(url, keys, visibility_timeout_s)


def buyer_of(url: str, job: TicketsJob, visibility_timeout_s: float, keys: RunKeys) -> None:
    serve_buyers(url, keys, job, visibility_timeout_s)


def chunk_message(chunk: Any) -> bytes:
    return envelope(json.dumps(chunk).encode(), routing_key="chunks")


SUM_CASES = [
    case(Bad(lambda k, p: chunk_message([0, 10**18]), r"stop must be"), "chunk-to-1e18"),
    case(Bad(lambda k, p: chunk_message([5, 2]), r"stop must be"), "chunk-stop-below-start"),
    case(Bad(lambda k, p: chunk_message(["1", 2]), r"start must be"), "chunk-start-a-string"),
    case(Bad(lambda k, p: chunk_message("abc"), r"chunk must be a pair"), "chunk-a-string"),
    case(Bad(lambda k, p: chunk_message([1, 2, 3]), r"chunk must be a pair"), "chunk-of-three"),
    case(Bad(lambda k, p: pickled([1, 2], celery=False), r"pickle"), "chunk-a-pickle"),
    case(Bad(lambda k, p: GARBAGE, NOT_JSON), "garbage-bytes"),
    case(
        Bad(lambda k, p: chunk_message([1, 2]).replace(b'"delivery_tag": "', b'"x": "'), TAG),
        "delivery-tag-missing",
    ),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", SUM_CASES)
def test_a_kombu_sum_worker_refuses_a_bad_chunk_and_keeps_serving(
    bad: Bad, redis_url: str, tmp_path: Path
) -> None:
    url = in_db(redis_url, 2)
    worker = KombuRole(url, tmp_path, sum_worker_of, url, VISIBILITY_TIMEOUT_S)
    chunks, totals = worker.keys.queue("chunks"), worker.keys.queue("totals")
    r = client(url)
    try:
        with Connection(url) as connection:
            chunk_queue = connection.SimpleQueue(chunks, serializer="json")
            chunk_queue.put([1, 11])
            r.lpush(chunks, bad.make(worker.keys, tmp_path / "pickle-ran"))
            chunk_queue.put([11, 21])
            worker.child.start()
            assert wait_for(lambda: r.llen(totals) >= 2 or not worker.child.is_alive())
            assert worker.child.is_alive(), new_text(worker.log, 0)[-3000:]
            totals_queue = connection.SimpleQueue(totals, serializer="json")
            got = []
            for _ in range(2):
                message = totals_queue.get(timeout=5)
                message.ack()
                got.append(message.payload)
            assert got == [[10, 55], [10, 155]]
            assert bad.names
            names = bad.names
            assert wait_for(lambda: re.search(names, new_text(worker.log, 0)) is not None)
            check_logged(new_text(worker.log, 0), names, kombu_record)
            check_nothing_held(r, chunks)
            assert r.llen(totals) == 0
            assert not (tmp_path / "pickle-ran").exists()
    finally:
        worker.stop(chunks)


def buyer_message(buyer: Any) -> bytes:
    return envelope(json.dumps(buyer).encode(), routing_key="buyers")


BUYER_CASES = [
    case(Bad(lambda k, p: buyer_message({"buyer": -1}), r"buyer must be"), "buyer-negative"),
    case(Bad(lambda k, p: buyer_message({"buyer": "5"}), r"buyer must be"), "buyer-a-string"),
    case(Bad(lambda k, p: buyer_message({"buyer": 2.5}), r"buyer must be"), "buyer-a-fraction"),
    case(
        Bad(lambda k, p: buyer_message({"buyer": MAX_BUYERS}), r"buyer must be"),
        "buyer-too-high",
    ),
    case(Bad(lambda k, p: buyer_message([1]), r"not a buyer"), "buyer-a-list"),
    case(Bad(lambda k, p: buyer_message({"id": 1}), r"not a buyer"), "buyer-without-number"),
    case(
        Bad(lambda k, p: envelope(b'{"buyer": 7}', properties={"delivery_tag": None}), TAG),
        "delivery-tag-null",
    ),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", BUYER_CASES)
def test_a_kombu_ticket_buyer_refuses_a_bad_buyer_and_keeps_serving(
    bad: Bad, redis_url: str, tmp_path: Path
) -> None:
    url = in_db(redis_url, 2)
    job = TicketsJob(tickets=10, buyers=2, workers=1, gap_ms=0.0)
    buyer = KombuRole(url, tmp_path, buyer_of, url, job, VISIBILITY_TIMEOUT_S)
    queue = buyers_queue(buyer.keys)
    r = client(url)
    tickets = RedisTickets(r, buyer.keys.prefix)
    with buyer.keys.lease(url):
        try:
            tickets.fill(job.tickets)
            buyer.child.start()
            assert wait_for(lambda: int(r.get(ready_key(buyer.keys)) or 0) >= 1)
            with Connection(url) as connection:
                channel = connection.SimpleQueue(queue, serializer="json")
                channel.put({"buyer": 0})
                r.lpush(queue, bad.make(buyer.keys, tmp_path / "pickle-ran"))
                channel.put({"buyer": 1})
            assert bad.names
            names = bad.names
            assert wait_for(lambda: re.search(names, new_text(buyer.log, 0)) is not None)
            assert wait_for(lambda: tickets.answered() >= 2 or not buyer.child.is_alive())
            assert buyer.child.is_alive(), new_text(buyer.log, 0)[-3000:]
            assert sorted(r.hkeys(tickets.answers)) == ["0", "1"]
            assert tickets.left() == job.tickets - 2
            check_logged(new_text(buyer.log, 0), names, kombu_record)
            check_nothing_held(r, queue)
        finally:
            buyer.stop(queue)
