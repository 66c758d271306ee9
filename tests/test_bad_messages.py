"""Bad input on the broker's queues, put there by hand as a confused or hostile user would.

    real item -> bad message (raw LPUSH, or a publish with bad content) -> real item
      -> Redis list -> a real `celery -A tasks worker`, or a real kombu consumer

For each bad message: both real items are handled exactly once, the bad one is refused
with one log line that names the problem (or, when it is a valid message after all, is
handled), it is neither left on the queue nor held unacknowledged to come back later,
and the same worker process is still alive and serving. Everything runs on a Redis of
this module's own: the Celery worker on database 0, the kombu consumers on database 1,
so that each side's `unacked` table is its own.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from celery import Celery
from kombu.connection import Connection

from consumers.celery_workers import CeleryWorkers, Topology
from consumers.kombu_consumer import consume
from consumers.recorder import Recorder
from ladder.broker import RunKeys, client
from ladder.jobs import PipelineJob
from ladder.stack import RedisServer
from local_ipc.processes import Child, stop_processes
from tasks.celery_app import make_app
from tasks.workloads import STOP, make_item
from tests.watch import wait_for

CELERY_QUEUE = "celery"
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


def envelope(
    body: bytes,
    content_type: str = "application/json",
    headers: Any = None,
    routing_key: str = CELERY_QUEUE,
    **fields: Any,
) -> bytes:
    """A message as kombu's Redis transport keeps it on a list; fields set to None are left out."""
    tag = str(uuid.uuid4())
    message: dict[str, Any] = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": {} if headers is None else headers,
        "properties": {
            "correlation_id": tag,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": routing_key},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": tag,
        },
    }
    message.update(fields)
    return json.dumps({k: v for k, v in message.items() if v is not None}).encode()


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


def task_message(args: Any, task: Any = "tasks.handle_item", **header_fields: Any) -> bytes:
    """A Celery task message: body [args, kwargs, embed], as JSON."""
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None}])
    return envelope(body.encode(), headers=task_headers(task, **header_fields))


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
        Bad(lambda k, p: task_message([bad_item(k), k.run_id], eta="not a date"), r"ETA"),
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
    case(
        Bad(lambda k, p: task_message([bad_item(k), k.run_id], odd="h" * (5 * MB)), None),
        "header-of-5-mb",
    ),
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
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of this module's own: the messages put here would upset any other test."""
    server = RedisServer(tmp_path_factory.mktemp("bad-messages-redis"))
    try:
        yield server.start()
    finally:
        server.stop()


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


# Redis takes a bulk string of up to 512 MB (proto-max-bulk-len), so 100 MB goes through.
SIZES_MB = [8, 100]
# What "sane" means for a 100 MB message: its JSON, its base64 and the decoded item
# each take a copy; several times the message, well below what kills a small machine.
MAX_RSS = 1536 * MB


class PeakRss:
    """The highest RSS seen of one process, sampled while waiting."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = 0

    def sample(self) -> None:
        with_rss = self.process.memory_info().rss
        self.peak = max(self.peak, with_rss)


def check_memory_sane(peak: PeakRss, r: redis.Redis, mb: int) -> None:
    peak.sample()
    print(f"{mb} MB message: peak RSS {peak.peak // MB} MB")
    assert peak.peak < MAX_RSS
    # Redis let go of the message once it was handled and acknowledged.
    # Redis gives back a big client's query buffer in its own time (clientsCron).
    assert wait_for(lambda: r.info("memory")["used_memory"] < 64 * MB), r.info("memory")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mb", SIZES_MB, ids=[f"{mb}-mb" for mb in SIZES_MB])
def test_a_celery_worker_handles_an_oversized_message_in_sane_memory(
    mb: int, celery_worker: CeleryWorker, celery_client: Celery
) -> None:
    r = celery_worker.redis
    keys = RunKeys.new()
    peak = PeakRss(celery_worker.process)
    with keys.lease(celery_worker.url):
        send_item(celery_client, keys, BEFORE)
        send_item(celery_client, keys, BAD, "x" * (mb * MB))
        send_item(celery_client, keys, AFTER)
        recorder = Recorder(celery_worker.url)

        def done() -> bool:
            if celery_worker.alive():
                peak.sample()
            return recorder.count(keys) >= 3 or not celery_worker.alive()

        wait_for(done, timeout_s=90)
        assert celery_worker.alive()
        assert handled(celery_worker.url, keys, 3, celery_worker.alive) == Outcome(
            [BEFORE, AFTER, BAD], 0
        )
        check_nothing_held(r, CELERY_QUEUE)
        check_memory_sane(peak, r, mb)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mb", SIZES_MB, ids=[f"{mb}-mb" for mb in SIZES_MB])
def test_a_kombu_consumer_handles_an_oversized_message_in_sane_memory(
    mb: int, kombu_consumer: KombuConsumer
) -> None:
    url, keys = kombu_consumer.url, kombu_consumer.keys
    r = client(url)
    peak = PeakRss(kombu_consumer.process)
    put_item(url, keys, BEFORE)
    put_item(url, keys, BAD, "x" * (mb * MB))
    put_item(url, keys, AFTER)
    recorder = Recorder(url)

    def done() -> bool:
        if kombu_consumer.alive():
            peak.sample()
        return recorder.count(keys) >= 3 or not kombu_consumer.alive()

    wait_for(done, timeout_s=90)
    assert kombu_consumer.alive(), new_text(kombu_consumer.log, 0)[-3000:]
    assert handled(url, keys, 3, kombu_consumer.alive) == Outcome([BEFORE, AFTER, BAD], 0)
    check_nothing_held(r, keys.items)
    check_memory_sane(peak, r, mb)
