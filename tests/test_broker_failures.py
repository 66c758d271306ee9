"""A broker that misbehaves, before or during a run: ladder says what is wrong in one
line and exits 1, never with a traceback, and leaves nothing running.

Each case has a redis-server of its own (they are killed, frozen, filled, made read-only
or given a user with too few rights), and runs `ladder run` against it as a real process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import redis

from core.broker import client
from core.stack import RedisServer
from tests.support import cli
from tests.support.cli import LADDER, ROOT
from tests.support.proctree import cmdline, descendants, kill_all, running
from tests.support.redis_servers import RedisServers
from tests.support.watch import poll_until, still_running

# A private redis-server per case, and ladder run against it as a process.
pytestmark = pytest.mark.slow

# A dead consumer's messages come back after a second: the outage limit is then 16 s.
ENV = {**cli.ENV, "LADDER_VISIBILITY_TIMEOUT_S": "1"}
KOMBU = ["run", "--rung", "kombu", "--workload", "pipeline"]
CELERY = ["run", "--rung", "celery", "--workload", "sum", "--n", "1000"]


@dataclass
class Broker:
    """A private redis-server, its URL in a file for --broker @FILE, and a client."""

    server: RedisServer
    url_file: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def redis(self) -> redis.Redis:
        return client(self.url)

    @property
    def process(self) -> psutil.Process:
        assert self.server.process is not None
        return psutil.Process(self.server.process.pid)


@pytest.fixture
def broker(redis_servers: RedisServers, tmp_path: Path) -> Iterator[Broker]:
    with redis_servers.running("failing-redis") as server:
        url_file = tmp_path / "broker-url"
        url_file.write_text(server.url + "\n")
        try:
            yield Broker(server, url_file)
        finally:
            if server.process is not None:  # a frozen one could not be stopped
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server.process.pid, signal.SIGCONT)


def check_one_line(stderr: str, names: str) -> None:
    """One error line naming the problem; notes (one line each) allowed; no traceback."""
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith("ladder: error: ")]
    assert len(errors) == 1, stderr[-3000:]
    assert re.search(names, errors[0]), errors[0]
    others = [line for line in lines if not line.startswith(("ladder: error: ", "ladder: note: "))]
    assert others == [], stderr[-3000:]


def check_failed(stdout: str, stderr: str, says: str) -> None:
    """The run ended in one error line, or as a failed run whose note says why: either
    way naming the problem, with nothing else on stderr but notes."""
    if stdout.strip():
        result = json.loads(stdout)
        assert result["verified"] is False
        assert re.search(says, result["note"]), result["note"]
        notes = [line for line in stderr.splitlines() if not line.startswith("ladder: note: ")]
        assert notes == [], stderr[-3000:]
    else:
        check_one_line(stderr, says)


def run_ladder(
    args: list[str], url_file: Path, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return cli.ladder(*args, "--broker", f"@{url_file}", env=ENV, timeout_s=timeout_s)


# --- refused before the run ----------------------------------------------------------------


def user_without(b: Broker, name: str, *rules: str) -> str:
    """The URL of a new user of the broker, with every right but what rules take away."""
    b.redis.execute_command(
        "ACL", "SETUSER", name, "on", f">{name}-pw", "resetchannels", "~*", "+@all", *rules
    )
    return b.url.replace(f":{b.server.password}@", f"{name}:{name}-pw@", 1)


REFUSED = "refused a command this user may not run"
BEFORE: dict[str, tuple[Callable[[Broker], str], str]] = {
    # (what is done to the broker; the URL to give; what the line must say)
    "read-only-replica": (
        lambda b: (b.redis.execute_command("REPLICAOF", "127.0.0.1", "1"), b.url)[1],
        "is a read-only replica",
    ),
    "user-without-eval": (
        lambda b: (
            b.redis.execute_command(
                *("ACL", "SETUSER", "noeval", "on", ">noeval-pw", "~*", "&*", "+@all"),
                *("-eval", "-evalsha"),
            ),
            b.url.replace(f":{b.server.password}@", ":noeval-pw@").replace("://", "://noeval", 1),
        )[1],
        "refused a command this user may not run (this user has no permissions to run the",
    ),
    "out-of-memory": (
        lambda b: (b.redis.config_set("maxmemory", 1), b.url)[1],
        "is out of memory",
    ),
    # A consumer refused its BRPOP, or Celery its channels, would otherwise wait for ever.
    "user-without-brpop": (
        lambda b: user_without(b, "nobrpop", "&*", "-brpop"),
        f"{REFUSED} (this user has no permissions to run the 'brpop' command)",
    ),
    "user-without-channels": (
        lambda b: user_without(b, "nochannels"),
        f"{REFUSED} (this user has no permissions to access one of the channels",
    ),
    "user-without-psubscribe": (
        lambda b: user_without(b, "nopsub", "&*", "-psubscribe"),
        f"{REFUSED} (this user has no permissions to run the 'psubscribe' command)",
    ),
    "user-without-multi": (
        lambda b: user_without(b, "nomulti", "&*", "-multi"),
        f"{REFUSED} (MULTI: transactions)",
    ),
    "user-without-zadd": (
        lambda b: user_without(b, "nozadd", "&*", "-zadd"),
        f"{REFUSED} (ZADD, in a script)",
    ),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rung", [KOMBU, CELERY], ids=["kombu", "celery"])
@pytest.mark.parametrize("case", list(BEFORE))
def test_a_broker_that_refuses_writes_is_named_in_one_line(
    case: str, rung: list[str], broker: Broker
) -> None:
    make, says = BEFORE[case]
    url = make(broker)
    broker.url_file.write_text(url + "\n")
    done = run_ladder([*rung, "--items", "100"] if rung is KOMBU else rung, broker.url_file)
    assert done.returncode == 1, done.stderr
    check_one_line(done.stderr, re.escape(says))
    assert broker.server.password not in done.stderr and "-pw" not in done.stderr


# --- failing in the middle of a run --------------------------------------------------------


def kill(b: Broker) -> None:
    b.process.kill()


def freeze(b: Broker) -> None:
    b.process.suspend()


def fill(b: Broker) -> None:
    used = int(b.redis.info("memory")["used_memory"])
    b.redis.config_set("maxmemory", used + 2_000_000)


# (the fault; what the one error line, or the failed run's note, must say)
DURING: dict[str, tuple[Callable[[Broker], None], str]] = {
    "killed-for-good": (kill, "the broker has been unreachable for"),
    "frozen": (freeze, "the broker has been unreachable for"),
    "out-of-memory": (fill, "out of memory|OutOfMemoryError"),
}


@pytest.mark.parametrize("case", list(DURING))
def test_a_broker_that_fails_mid_run_is_one_line_and_nothing_is_left(
    case: str, broker: Broker, tmp_path: Path
) -> None:
    fault, says = DURING[case]
    args = [*KOMBU, "--items", "2000000", "--payload-bytes", "2000", "--json"]
    args += ["--broker", f"@{broker.url_file}"]
    with open(tmp_path / "out", "w+") as out, open(tmp_path / "err", "w+") as err:
        process = subprocess.Popen(
            [*LADDER, *args],
            cwd=ROOT,
            env=ENV,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        seen: list[psutil.Process] = []
        try:
            poll_until(
                lambda: any(True for _ in broker.redis.scan_iter(match="ladder:*:deliveries")),
                30,
                "the run never delivered a message",
                still_running(process, "ladder ended before the fault"),
                step_s=0.1,
            )
            seen = descendants(psutil.Process(process.pid))
            fault(broker)
            returncode = process.wait(timeout=90)
            err.seek(0)
            stderr = err.read()
            assert returncode == 1, stderr[-3000:]
            out.seek(0)
            check_failed(out.read(), stderr, says)
            _, alive = psutil.wait_procs(seen, timeout=10)
            assert running(alive) == [], [cmdline(p) for p in alive]
        finally:
            kill_all(process, seen)
