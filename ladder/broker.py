"""Talking to the Redis broker: URLs checked and masked, clients, per-run keys.

Every key a run makes sits under `ladder:<run id>:`, so runs never collide and the
cleanup of a run is one SCAN.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from kombu.exceptions import OperationalError
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ladder.errors import BadInput, RunFailed

PREFIX = "ladder:"
SCHEMES = ("redis", "rediss")
CONNECT_TIMEOUT_S = 3.0

# What a broker that is down, restarting or still loading its data raises: to redis-py
# (BusyLoadingError is a ConnectionError), to kombu, and to the socket underneath.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    OperationalError,
    ConnectionError,
)
# How long a client made to ride out outages keeps retrying one command before it gives
# up: long enough for a Redis restart, which reloads its append-only file.
RIDE_OUT_S = 60.0


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for every message and log line."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
    except ValueError:
        return "<unparseable URL>"


def check_url(url: str) -> str:
    """Raise BadInput unless url is a usable redis:// or rediss:// URL; return it."""
    example = "redis://[:password@]host[:port][/db]"
    try:
        parts = urlsplit(url)
        port = parts.port
        db = parts.path.lstrip("/")
    except ValueError:
        raise BadInput(f"broker URL must look like {example} (got {mask_url(url)})") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise BadInput(f"broker URL must look like {example} (got {mask_url(url)})")
    if port == 0 or (db and not db.isdigit()):
        raise BadInput(f"broker URL must look like {example} (got {mask_url(url)})")
    return url


def transport_options(visibility_timeout_s: float) -> dict[str, float]:
    """kombu's Redis transport options, for Celery and for kombu's own connections.

    A message taken but not acknowledged waits in Redis's `unacked` set; once it is
    older than visibility_timeout it goes back on the queue for another consumer. That
    is what brings back the items of a consumer killed mid-run, so the timeout must be
    short enough to matter within a run, and longer than any item takes, waiting in a
    worker's prefetch buffer included, or a slow item would be delivered twice (which
    the recorder would then count as a redelivery, and count once). Our items take
    milliseconds: 30 s is both. Sweeping for such messages every second (the default
    is every 100 s) costs one small Redis query per second per consumer.
    """
    return {
        "visibility_timeout": visibility_timeout_s,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }


def client(url: str, name: str | None = None, ride_out: bool = False) -> redis.Redis:
    """A Redis client that fails fast instead of hanging on a dead broker; `name` shows
    in Redis's CLIENT LIST, to tell who is connected.

    With ride_out, a command that meets a broker outage is retried (backing off to one
    try a second) for up to RIDE_OUT_S: a worker recording an item waits for a
    restarting Redis rather than failing the item.
    """
    options: dict[str, Any] = {}
    if ride_out:
        # Backing off 0.05, 0.1, ... then 1 s a try: RIDE_OUT_S tries last about as long.
        options["retry"] = Retry(ExponentialBackoff(cap=1.0, base=0.05), int(RIDE_OUT_S))
        options["retry_on_error"] = [redis.ConnectionError, redis.TimeoutError]
    return redis.Redis.from_url(
        url,
        client_name=name,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=30,
        decode_responses=True,
        **options,
    )


def ping(url: str) -> None:
    """Raise RunFailed, naming the broker, unless it answers within a few seconds."""
    try:
        client(url).ping()
    except redis.AuthenticationError:
        raise RunFailed(f"the broker at {mask_url(url)} refused the password") from None
    except redis.ResponseError as error:
        if "NOAUTH" in str(error) or "AUTH" in str(error):
            raise RunFailed(f"the broker at {mask_url(url)} needs a password") from None
        raise RunFailed(f"the broker at {mask_url(url)} answered: {error}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
        reason = str(error).split(". ")[0] or type(error).__name__
        raise RunFailed(f"cannot reach the broker at {mask_url(url)}: {reason}") from None


@dataclass(frozen=True)
class RunKeys:
    """The Redis names one run uses, all under ladder:<run id>:."""

    run_id: str

    @classmethod
    def new(cls) -> RunKeys:
        return cls(uuid.uuid4().hex[:12])

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.run_id}:"

    def queue(self, name: str) -> str:
        """The name of one of this run's kombu queues."""
        return f"{self.prefix}{name}"

    @property
    def items(self) -> str:
        """The kombu queue of this run's pipeline items."""
        return self.queue("items")

    @property
    def handled(self) -> str:
        """A string of lines, one per item handled: "<id> <latency_s>", each id once."""
        return f"{self.prefix}handled"

    @property
    def redeliveries(self) -> str:
        """How many deliveries were of an item already handled."""
        return f"{self.prefix}redeliveries"

    @property
    def deliveries(self) -> str:
        """A hash: how many times each item id was delivered and handled."""
        return f"{self.prefix}deliveries"

    def cleanup(self, url: str) -> None:
        """Delete every key of this run, and the bindings kombu made for its queues."""
        r = client(url)
        # kombu >= 5.7 keeps a second binding table per exchange, _kombu.binding_permanent.
        bindings = [f"_kombu.{table}.{self.prefix}*" for table in ("binding", "binding_permanent")]
        for pattern in (f"{self.prefix}*", *bindings):
            keys = list(r.scan_iter(match=pattern, count=1000))
            if keys:
                r.delete(*keys)
