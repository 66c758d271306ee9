"""kombu's Redis transport, refusing a malformed message instead of dying on it, and
with less work per message.

kombu decodes what BRPOP returns (JSON, then the envelope) with no check around it: one
LPUSH by hand of garbage, of a message whose delivery tag is null (Redis then refuses
to file it as unacknowledged), of a zlib bomb or of a 100 MB body would end a Celery
worker or a kombu consumer, or fill its memory. Here each message popped is checked
before kombu touches it: its size in bytes before anything decodes it, then every field
of its envelope that kombu or Celery reads. One that fails is logged in one line naming
the problem and dropped: it is off the list already, and never filed as unacknowledged,
so it does not come back either.

Above the transport: a producer's or a consumer's Session, whose connection is made
again after an outage, and PayloadQueue, a SimpleQueue with queue.Queue's get and put.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from typing import Any

from kombu.connection import Connection
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from core.broker import LEASE_S, OUTAGE_ERRORS, PREFIX, transport_options
from core.work import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

# What decoding a popped item raises (JSONDecodeError, binascii.Error and
# UnicodeDecodeError are ValueErrors); never what a lost connection raises.
MALFORMED = (ValueError, TypeError, AttributeError, KeyError, RecursionError)
# How long a channel trusts the bindings it read for a routing key they match. One they
# do not match is read again at once (a queue bound since: a reply queue, say); a queue
# unbound elsewhere may still get messages for this long, one unbound here does not.
BINDINGS_TTL_S = 1.0

# A body travels in base64 (4 characters for every 3 bytes, padded) inside a JSON
# envelope, so a message of more bytes than the base64 of MAX_MESSAGE_BYTES plus room
# for the envelope cannot hold a body within the bound, and is refused unread. The
# project's envelopes take about 1 KiB; 1 MiB leaves room for a user's large headers.
ENVELOPE_BYTES = 1024 * 1024
MAX_RAW_BYTES = 4 * math.ceil(MAX_MESSAGE_BYTES / 3) + ENVELOPE_BYTES
# Tags, exchanges, routing keys, reply queues and correlation ids are names: kombu's
# and Celery's are uuids and queue names, AMQP holds them in 255 bytes at most.
MAX_NAME_CHARS = 255
# What kombu writes: utf-8 for text (JSON), binary for raw bytes.
CONTENT_ENCODINGS = ("utf-8", "binary")
MISSING = object()


def shown(value: Any) -> str:
    """A field's value for a log line: cut short, as a hostile one may be huge."""
    if value is MISSING:
        return "nothing"
    return "null" if value is None else f"{value!r:.80}"


def check_size(raw: bytes) -> None:
    """Raise ValueError unless raw, a message as popped, may hold a body within
    MAX_MESSAGE_BYTES."""
    if len(raw) > MAX_RAW_BYTES:
        raise ValueError(
            f"a message of {len(raw):,} bytes, more than the {MAX_RAW_BYTES:,} that hold "
            f"a body of at most {MAX_MESSAGE_BYTES:,} bytes (MAX_MESSAGE_BYTES): not decoded"
        )


def check_name(field: str, value: Any, required: bool = False, least: int = 0) -> None:
    """Raise ValueError unless value is a name of `least` to MAX_NAME_CHARS characters,
    or is absent when not required."""
    if not required and (value is MISSING or value is None):
        return
    if not isinstance(value, str) or not least <= len(value) <= MAX_NAME_CHARS:
        raise ValueError(
            f"{field} must be a string of {least} to {MAX_NAME_CHARS} characters "
            f"(got {shown(value)})"
        )


def decoded_bytes(body: str) -> int:
    """How many bytes a base64 body decodes to, without decoding it."""
    return len(body) * 3 // 4 - body[-2:].count("=")


def check_envelope(message: Any, body_encoding: str = "base64") -> None:
    """Raise ValueError, naming the field and what is allowed, unless message is an
    envelope as kombu's Redis transport writes it, in every field kombu or Celery reads:

        properties      an object: delivery_tag, a name of 1 character or more (null
                        would stop the message being filed as unacknowledged);
                        delivery_info, an object with exchange and routing_key, names
                        (where a message is restored to; a broadcast's routing key is
                        empty), and redelivered, true or false; body_encoding, as this
                        transport writes it; priority 0 to 255, reply_to and
                        correlation_id names, each if given
        headers         an object if given, without compression (kombu would inflate
                        the body before anything could bound it)
        content-type    a name if given (which ones are accepted is the consumer's say)
        content-encoding  utf-8 or binary if given
        body            a string that decodes to at most MAX_MESSAGE_BYTES
    """
    if not isinstance(message, dict):
        raise ValueError(
            f"not a kombu message: a JSON {type(message).__name__}, not an object with "
            "properties and body"
        )
    properties = message.get("properties", MISSING)
    if not isinstance(properties, dict):
        raise ValueError(f"properties must be an object (got {shown(properties)})")
    check_name("properties.delivery_tag", properties.get("delivery_tag", MISSING), True, 1)
    info = properties.get("delivery_info", MISSING)
    if not isinstance(info, dict):
        raise ValueError(
            f"properties.delivery_info must be an object with exchange and routing_key "
            f"(got {shown(info)})"
        )
    for name in ("exchange", "routing_key"):
        check_name(f"properties.delivery_info.{name}", info.get(name, MISSING), True)
    if not isinstance(info.get("redelivered", False), bool):
        raise ValueError(
            "properties.delivery_info.redelivered must be true or false "
            f"(got {shown(info['redelivered'])})"
        )
    if properties.get("body_encoding", MISSING) != body_encoding:
        raise ValueError(
            f"properties.body_encoding must be {body_encoding!r}, as this transport "
            f"writes it (got {shown(properties.get('body_encoding', MISSING))})"
        )
    priority = properties.get("priority")
    if priority is not None and (
        isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 255
    ):
        raise ValueError(f"properties.priority must be 0 to 255 (got {shown(priority)})")
    for name in ("reply_to", "correlation_id"):
        check_name(f"properties.{name}", properties.get(name, MISSING))
    headers = message.get("headers")
    if headers is not None and not isinstance(headers, dict):
        raise ValueError(f"headers must be an object (got {shown(headers)})")
    if headers and headers.get("compression") is not None:
        raise ValueError(
            f"headers.compression is {shown(headers['compression'])}: a compressed "
            "message is refused, not inflated (nothing in this project compresses one)"
        )
    check_name("content-type", message.get("content-type", MISSING))
    encoding = message.get("content-encoding")
    if encoding is not None and (
        not isinstance(encoding, str) or encoding.lower() not in CONTENT_ENCODINGS
    ):
        raise ValueError(
            f"content-encoding must be one of: {', '.join(CONTENT_ENCODINGS)} "
            f"(got {shown(encoding)})"
        )
    body = message.get("body", MISSING)
    if not isinstance(body, str):
        raise ValueError(f"body must be a string, in base64 (got {shown(body)})")
    if decoded_bytes(body) > MAX_MESSAGE_BYTES:
        raise ValueError(
            f"body of {decoded_bytes(body):,} bytes, more than MAX_MESSAGE_BYTES "
            f"({MAX_MESSAGE_BYTES:,}): not decoded"
        )


class Channel(kombu_redis.Channel):
    _sync_client: Any = None
    _tables: dict[str, tuple[float, Any]] | None = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        """The channel's client on its pool, made once (a new one after the pool is)."""
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        if self._sync_client is None or self._sync_client.connection_pool is not pool:
            self._sync_client = super()._create_client()
        return self._sync_client

    def get_table(self, exchange: str) -> Any:
        """The exchange's bindings, read from Redis, and kept for _lookup."""
        table = super().get_table(exchange)
        self._tables = self._tables if self._tables is not None else {}
        self._tables[exchange] = (time.monotonic(), table)
        return table

    def _lookup(self, exchange: str, routing_key: str, default: Any = None) -> Any:
        """The queues a message goes to, from bindings read in the last BINDINGS_TTL_S;
        read again when they have none for it (a queue bound since, a reply queue)."""
        read_at, table = (self._tables or {}).get(exchange, (0.0, None))
        if exchange and table and time.monotonic() - read_at <= BINDINGS_TTL_S:
            try:
                found = self.typeof(exchange).lookup(table, exchange, routing_key, None)
            except KeyError:
                found = []
            if found:
                return found
        return super()._lookup(exchange, routing_key, default)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> Any:
        self._tables = None
        bound = super()._queue_bind(exchange, routing_key, pattern, queue)
        if queue.startswith(PREFIX):
            with self.conn_or_acquire() as client:
                pipe = client.pipeline(transaction=False)
                for table in (self.keyprefix_queue, self.keyprefix_binding_permanent):
                    pipe.expire(table % (exchange,), LEASE_S)
                pipe.execute()
        return bound

    def _put(self, queue: str, message: Any, **kwargs: Any) -> Any:
        """kombu's, but a run's queue (ladder:<run id>:...) is given the run's lease in the
        same round trip, so that a run killed before its clean-up leaves no list for ever
        (RunKeys.lease renews it while the run is alive)."""
        if not queue.startswith(PREFIX) or kwargs.get("_publish_batch") is not None:
            return super()._put(queue, message, **kwargs)
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        with self.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            pipe.lpush(key, dumps(message))
            pipe.expire(key, LEASE_S)
            pipe.execute()
        return None

    def _do_restore_message(
        self, payload: Any, exchange: str, routing_key: str, pipe: Any, leftmost: bool = False
    ) -> None:
        """kombu's; a message restored to a run's queue gives it the lease too, so that
        one restored after its run was killed does not make the queue again for ever."""
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        for queue in self._lookup(exchange, routing_key):
            if queue.startswith(PREFIX):
                pipe.expire(queue, LEASE_S)

    def _delete(self, *args: Any, **kwargs: Any) -> Any:
        self._tables = None
        return super()._delete(*args, **kwargs)

    def _take(self, raw: bytes, queue: str) -> dict[str, Any] | None:
        """The message popped from queue, checked; None, and one log line, if refused."""
        try:
            check_size(raw)
            try:
                message = loads(bytes_to_str(raw))
            except MALFORMED as error:
                reason = f"{type(error).__name__}: {str(error)[:200]}"
                raise ValueError(f"not a kombu message: {reason}") from None
            check_envelope(message, self.body_encoding)
        except ValueError as error:
            log.error("refused a message on %s: %s", queue, error)
            return None
        return message  # type: ignore[no-any-return]

    def _deliver_checked(self, message: dict[str, Any], queue: str) -> None:
        """Hand a checked message to kombu; one it still cannot read (a body not base64,
        say) is dropped before it is filed as unacknowledged."""
        try:
            self.connection._deliver(message, queue)
        except MALFORMED as error:
            log.error(
                "refused a message on %s: malformed: %s: %.200s", queue, type(error).__name__, error
            )

    def _brpop_read(self, **options: Any) -> bool:
        """kombu's, with the message popped checked (_take) before kombu decodes it."""
        try:
            try:
                dest_item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # Disconnected, so that the next poll reconnects.
                self.client.connection.disconnect()
                raise
            if not dest_item:
                raise Empty()
            dest, raw = dest_item
            queue = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            message = self._take(raw, queue)
            if message is not None:
                self._deliver_checked(message, queue)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]  # as kombu sets it
            self._flush_brpop_reauth()

    def _get(self, queue: str, timeout: Any = None) -> Any:
        """kombu's, with each message popped checked as _brpop_read checks it."""
        while True:
            with self.conn_or_acquire() as client:
                raw = None
                for priority in self.priority_steps:
                    raw = client.rpop(self._q_for_pri(queue, priority))
                    if raw:
                        break
                self._maybe_update_queues_expire(client, queue)
            if not raw:
                raise Empty()
            message = self._take(raw, queue)
            if message is not None:
                return message

    def _deliver_fanout_message(self, message: Any, exchange: str) -> bool:
        """A broadcast (remote control), checked as a message popped is."""
        try:
            check_envelope(message, self.body_encoding)
        except ValueError as error:
            log.error("refused a message on %s: %s", exchange, error)
            return True
        return bool(super()._deliver_fanout_message(message, exchange))


class Transport(kombu_redis.Transport):
    Channel = Channel


# How long a producer or consumer waits before it connects again after an outage.
RECONNECT_S = 0.5


def connect(url: str, visibility_timeout_s: float, name: str | None = None) -> Connection:
    """A kombu connection to the broker that gives back what a dead consumer held;
    `name` shows in Redis's CLIENT LIST."""
    options: dict[str, Any] = {**transport_options(visibility_timeout_s), "client_name": name}
    return Connection(url, transport=Transport, transport_options=options)


class Session:
    """A producer's or a consumer's connection to the broker, for as long as it runs:
    made at first use, and made again at the first use after an outage."""

    def __init__(self, url: str, visibility_timeout_s: float, name: str) -> None:
        self.url = url
        self.visibility_timeout_s = visibility_timeout_s
        self.name = name
        self._connection: Connection | None = None

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            self._connection = connect(self.url, self.visibility_timeout_s, self.name)
        return self._connection

    @contextmanager
    def riding_out(self) -> Iterator[None]:
        """Run the block; a broker outage in it (Redis restarting, say) drops the
        connection and waits RECONNECT_S, and the next use connects again.

        What the old connection held unacknowledged comes back after the visibility
        timeout, to be handled again: the tally counts it once."""
        try:
            yield
        except OUTAGE_ERRORS as error:
            # Quietly: the run reports the outage and how long it lasted, once.
            log.info("lost the broker (%s); reconnecting", error)
            self.drop()
            time.sleep(RECONNECT_S)

    def drop(self) -> None:
        """Let go of the connection without closing it: closing would talk to a broker
        that is not there."""
        if self._connection is not None:
            self._connection.collect()
            self._connection = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.release()
            self._connection = None


@contextmanager
def session(url: str, visibility_timeout_s: float, name: str) -> Iterator[Session]:
    """A Session, closed on the way out, or dropped when the way out is an error."""
    held = Session(url, visibility_timeout_s, name)
    try:
        yield held
    except BaseException:
        held.drop()
        raise
    held.close()


class PayloadQueue:
    """A SimpleQueue whose get returns the payload, acknowledged: queue.Queue's API exactly.

    What the kombu rung's parent puts chunks on and gets totals from, and what a sum
    worker puts its totals on."""

    def __init__(self, connection: Connection, name: str) -> None:
        self.simple = connection.SimpleQueue(name, serializer="json", accept=["json"])

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        self.simple.put(obj)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        message = self.simple.get(block=block, timeout=timeout)
        message.ack()
        return message.payload
