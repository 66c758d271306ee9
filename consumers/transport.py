"""kombu's Redis transport, refusing a malformed message instead of dying on it, and
with less work per message.

kombu decodes what BRPOP returns (JSON, then the envelope) with no handler around it:
one LPUSH of garbage by hand would end a Celery worker or a kombu consumer. Here such a
message is logged in one line and dropped: it is off the list already, and was never
held unacknowledged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

# What decoding a popped item raises (JSONDecodeError, binascii.Error and
# UnicodeDecodeError are ValueErrors); never what a lost connection raises.
MALFORMED = (ValueError, TypeError, AttributeError, KeyError, RecursionError)
# How long a channel trusts the bindings it read for a routing key they match. One they
# do not match is read again at once (a queue bound since: a reply queue, say); a queue
# unbound elsewhere may still get messages for this long, one unbound here does not.
BINDINGS_TTL_S = 1.0


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

    def _queue_bind(self, *args: Any) -> Any:
        self._tables = None
        return super()._queue_bind(*args)

    def _delete(self, *args: Any, **kwargs: Any) -> Any:
        self._tables = None
        return super()._delete(*args, **kwargs)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))
        except MALFORMED as error:
            log.error(
                "discarded a malformed message, not a kombu message: %s: %.200s",
                type(error).__name__,
                error,
            )
            return True


class Transport(kombu_redis.Transport):
    Channel = Channel
