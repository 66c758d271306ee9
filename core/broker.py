"""Talking to the Redis broker: URLs checked and masked, clients, per-run keys.

Every key a run makes sits under `ladder:<run id>:`, so runs never collide and the
cleanup of a run is one SCAN.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
from kombu.exceptions import KombuError, OperationalError
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from core.errors import RunFailed
from core.urls import mask_url

log = logging.getLogger("ladder")

PREFIX = "ladder:"
CONNECT_TIMEOUT_S = 3.0
# How long a command may wait for its answer: a broker that is frozen (stopped, swapped
# out) rather than down would otherwise hang every client for good. Our commands answer
# in milliseconds; none of them blocks on the server.
COMMAND_TIMEOUT_S = 10.0

# What a broker that is down, restarting or still loading its data raises: to redis-py
# (BusyLoadingError is a ConnectionError), to kombu, and to the socket underneath.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    OperationalError,
    ConnectionError,
)
# What any failure of the broker raises, an outage or a refusal (OOM, READONLY, NOPERM).
BROKER_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, KombuError, *OUTAGE_ERRORS)
# How long a client made to ride out outages keeps retrying one command before it gives
# up: long enough for a Redis restart, which reloads its append-only file.
RIDE_OUT_S = 60.0


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
    """A Redis client that fails fast instead of hanging on a dead or frozen broker;
    `name` shows in Redis's CLIENT LIST, to tell who is connected.

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
        socket_timeout=COMMAND_TIMEOUT_S,
        health_check_interval=30,
        decode_responses=True,
        **options,
    )


# The commands a run makes (ladder, kombu's Redis transport, Celery), tried once on keys
# of its own before the run: a read-only replica, a server out of memory, and a user
# whose ACL forbids one of them (NOPERM) each refuse here, in one line, rather than in
# the middle of the run, where a consumer refused its BRPOP would wait for ever.
PROBE = """
redis.call('SET', KEYS[1], '1', 'PX', 1000)
redis.call('GET', KEYS[1])
redis.call('EXISTS', KEYS[1])
redis.call('INCRBY', KEYS[1], 1)
redis.call('DECR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 1000)
redis.call('EXPIRE', KEYS[1], 1)
redis.call('PTTL', KEYS[1])
redis.call('HSET', KEYS[2], 'probe', 1)
redis.call('HSETNX', KEYS[2], 'other', 1)
redis.call('HINCRBY', KEYS[2], 'probe', 1)
redis.call('HGET', KEYS[2], 'probe')
redis.call('HLEN', KEYS[2])
redis.call('HVALS', KEYS[2])
redis.call('HDEL', KEYS[2], 'probe')
redis.call('APPEND', KEYS[3], 'probe')
redis.call('LPUSH', KEYS[4], 'probe')
redis.call('LLEN', KEYS[4])
redis.call('ZADD', KEYS[5], 1, 'probe')
redis.call('ZRANGE', KEYS[5], 0, -1)
redis.call('ZRANGEBYSCORE', KEYS[5], 0, 2)
redis.call('ZREM', KEYS[5], 'probe')
redis.call('SADD', KEYS[6], 'probe')
redis.call('SMEMBERS', KEYS[6])
redis.call('SREM', KEYS[6], 'probe')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return 1
"""
PROBE_KEYS = ("string", "hash", "append", "list", "zset", "set")
# A BRPOP on an empty list waits this long: the consumers' blocking take, tried for real.
PROBE_WAIT_S = 0.01


def ping(url: str, what: str = "broker") -> None:
    """Raise RunFailed, in one line naming the broker (or result backend: `what`) and
    what is wrong, unless it answers within seconds and takes the commands a run makes:
    the PROBE script, cached as redis-py runs scripts (EVALSHA, SCRIPT LOAD) and sent
    as it is (EVAL); a transaction (MULTI/EXEC, kombu's); a blocking take; and publish
    and subscribe on a channel (Celery's control and results)."""
    try:
        r = client(url)
        r.ping()
        probe = RunKeys.new().prefix + "probe"
        keys = [f"{probe}:{kind}" for kind in PROBE_KEYS]
        r.register_script(PROBE)(keys=keys)
        r.eval(PROBE, len(keys), *keys)
        with r.pipeline(transaction=True) as transaction:
            transaction.lpush(keys[3], "probe")
            transaction.delete(keys[3])
            transaction.execute()
        r.brpop([keys[3]], timeout=PROBE_WAIT_S)
        with r.pubsub() as pubsub:  # type: ignore[no-untyped-call]
            pubsub.subscribe(probe)
            pubsub.psubscribe(f"{probe}*")
            # Each refused subscription comes back as an error in the place of its
            # confirmation: read both.
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            confirmed = 0
            while confirmed < 2 and time.monotonic() < deadline:
                confirmed += pubsub.get_message(timeout=PROBE_WAIT_S) is not None
        r.publish(probe, "probe")
        memory = r.info("memory")
    except (redis.RedisError, OSError) as error:
        raise RunFailed(describe(error, url, what)) from None
    policy = memory.get("maxmemory_policy", "noeviction")
    if int(memory.get("maxmemory", 0)) and policy != "noeviction":
        # A run's keys expire (see RunKeys.lease), and a full broker may evict them first.
        log.warning(
            "the %s at %s drops keys when it is full (maxmemory-policy %s): a run that "
            "fills it may lose items; noeviction refuses writes instead, which ladder reports",
            what,
            mask_url(url),
            policy,
        )


def describe(error: BaseException, url: str, what: str = "broker") -> str:
    """One line for a broker that failed a command: what it means, never the password."""
    where = mask_url(url)
    the = f"the {what} at {where}"
    # What the error says, in one line, with any URL in it masked as well.
    said = re.sub(r"\w+://\S+", lambda m: mask_url(m.group()), " ".join(str(error).split()))[:200]
    if isinstance(error, redis.AuthenticationError) or "WRONGPASS" in said:
        return f"{the} refused the password"
    if "NOAUTH" in said:
        return f"{the} needs a password"
    if isinstance(error, redis.exceptions.NoPermissionError) or said.startswith("NOPERM"):
        return f"{the} refused a command this user may not run ({said})"
    if "can't run this command" in said:  # a command of a script, refused by the ACL
        line = re.search(r"@user_script:(\d+)", said)
        lines = PROBE.split("\n")
        command = re.findall(r"'(\w+)'", lines[int(line[1]) - 1])[:1] if line else []
        named = f"{command[0]}, in a script" if command else "in a script"
        return f"{the} refused a command this user may not run ({named})"
    if "EXEC without MULTI" in said:  # MULTI refused, then EXEC is out of place
        return f"{the} refused a command this user may not run (MULTI: transactions)"
    if isinstance(error, redis.exceptions.ReadOnlyError) or said.startswith("READONLY"):
        return f"{the} is a read-only replica: give the primary's URL"
    if isinstance(error, redis.exceptions.OutOfMemoryError) or said.startswith("OOM"):
        return (
            f"{the} is out of memory (its maxmemory is reached and it "
            "evicts nothing): free some, or raise maxmemory"
        )
    if said.startswith("MISCONF"):
        return f"{the} refuses writes: it cannot save its data ({said})"
    if isinstance(error, redis.ConnectionError | redis.TimeoutError | OSError):
        reason = said.split(". ")[0] or type(error).__name__
        return f"cannot reach the {what} at {where}: {reason}"
    return f"{the} answered: {said or type(error).__name__}"


# How long a run's keys outlive the last sign that the run is alive: a run that was
# killed leaves them for this long, no longer. The run renews them every LEASE_EVERY_S.
LEASE_S = 600
LEASE_EVERY_S = 2.0


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

    @property
    def alive(self) -> str:
        """Set while the run is under way: consumers record nothing for a run without it."""
        return f"{self.prefix}alive"

    def names(self) -> list[str]:
        """Every key the run may make: its own, its queues', and kombu's bindings of them."""
        own = ["alive", "handled", "deliveries", "redeliveries", "tickets", "answers"]
        own += ["tickets-lock", "buyers-ready"]
        queues = [self.queue(name) for name in QUEUES]
        bindings = [f"_kombu.{table}.{queue}" for queue in queues for table in BINDING_TABLES]
        return [*(self.prefix + name for name in own), *queues, *bindings]

    @contextlib.contextmanager
    def lease(self, url: str) -> Iterator[None]:
        """The run's keys, alive while the block runs and deleted after it; should this
        process die first, they expire within LEASE_S.

        A thread renews them every LEASE_EVERY_S: every name the run may use, those made
        since the last renewal included. A broker that cannot be reached at the end is
        left to expire the keys itself, with a note on stderr.
        """
        stop = threading.Event()
        r = client(url, name=f"ladder-lease-{self.run_id}")
        try:
            r.set(self.alive, "1", ex=LEASE_S)
        except (redis.RedisError, OSError) as error:
            raise RunFailed(describe(error, url)) from None

        def renew() -> None:
            names = self.names()
            while not stop.wait(LEASE_EVERY_S):
                with contextlib.suppress(redis.RedisError, OSError):
                    pipe = r.pipeline(transaction=False)
                    for name in names:
                        pipe.expire(name, LEASE_S)
                    pipe.execute()

        renewer = threading.Thread(target=renew, name=f"lease-{self.run_id}", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            try:
                self.cleanup(url)
            except (redis.RedisError, OSError) as error:
                log.warning(
                    "left the run's keys to expire in %d s: %s", LEASE_S, describe(error, url)
                )

    def cleanup(self, url: str) -> None:
        """Delete every key of this run, and the bindings kombu made for its queues."""
        client(url).delete(*self.names())


# The kombu queues a run may declare, and the tables in which kombu keeps an exchange's
# bindings (kombu >= 5.7 keeps a second one, binding_permanent).
QUEUES = ("items", "chunks", "totals", "buyers")
BINDING_TABLES = ("binding", "binding_permanent")
