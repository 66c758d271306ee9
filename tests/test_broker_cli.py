"""`ladder run` on the broker rungs, as a real subprocess: results, secrets, errors, signals.

A given broker is the session's private Redis (conftest.redis_url) with real workers
attached; the signal tests start ladder with no URL, so that it starts a stack of its
own, and check that nothing it started outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from core import procs
from core.broker import client
from core.celery_workers import CeleryWorkers
from tests.support import cli
from tests.support.cli import ENV, LADDER, ROOT
from tests.support.proctree import cmdline, descendants, kill_all, running
from tests.support.redis_servers import RedisServers
from tests.support.watch import poll_until, still_running

# ladder run on a broker, as a process, with real workers.
pytestmark = pytest.mark.slow

CELERY_SUM = ["--rung", "celery", "--workload", "sum", "--n", "2000000", "--chunks", "16"]
KOMBU_PIPELINE = ["--rung", "kombu", "--workload", "pipeline", "--items", "2000"]


@dataclass
class Done:
    """A finished ladder run: its exit code, its output and how long it took."""

    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def ladder(*args: str, env: dict[str, str] | None = None, timeout_s: float = 30) -> Done:
    """`ladder run *args`, timed."""
    start = time.monotonic()
    done = cli.ladder("run", *args, env=env, timeout_s=timeout_s)
    return Done(done.returncode, done.stdout, done.stderr, time.monotonic() - start)


def password(url: str) -> str:
    secret = url.split("://:", 1)[1].split("@", 1)[0]
    assert len(secret) >= 16
    return secret


def one_error_line(done: Done) -> str:
    """The single line a failed run prints on stderr, checked to be just that."""
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ladder: error: ")
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("given_by", ["--broker", "CELERY_BROKER_URL"])
@pytest.mark.parametrize("args", [CELERY_SUM, KOMBU_PIPELINE], ids=["celery-sum", "kombu-pipeline"])
def test_run_on_a_given_broker_verifies(
    args: list[str], given_by: str, redis_url: str, celery_workers: CeleryWorkers
) -> None:
    if given_by == "--broker":
        done = ladder(*args, "--broker", redis_url, "--json")
    else:
        done = ladder(*args, "--json", env={**ENV, "CELERY_BROKER_URL": redis_url})
    assert done.code == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.count("\n") == 1
    result = json.loads(done.stdout)
    assert (result["rung"], result["workload"]) == (args[1], args[3])
    assert result["verified"] is True
    assert result["expected"] == result["got"]
    assert (result["lost"], result["duplicates"]) == (0, 0)
    assert password(redis_url) not in done.output


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "args",
    [
        ["--rung", "celery", "--workload", "sum", "--n", "200000", "--chunks", "8"],
        ["--rung", "kombu", "--workload", "pipeline", "--items", "300"],
    ],
    ids=["celery-sum", "kombu-pipeline"],
)
def test_the_table_never_shows_the_password(
    args: list[str], redis_url: str, celery_workers: CeleryWorkers
) -> None:
    done = ladder(*args, "--broker", redis_url)
    assert done.code == 0, done.stderr
    assert f"{args[3]} on {args[1]}" in done.stdout
    assert password(redis_url) not in done.output


MALFORMED = [
    "foo",
    "http://x",
    "redis://",
    "redis://host:99999",
    "redis://:not-to-be-shown@127.0.0.1:99999/0",
]


@pytest.fixture(scope="module")
def malformed_runs() -> dict[str, Done]:
    """Every malformed URL run at once: each is mostly interpreter start-up. A case that
    outlasts its own timeout fails alone, rather than erroring every other case with it."""

    def run(url: str) -> Done:
        try:
            return ladder(*CELERY_SUM, "--broker", url, timeout_s=20)
        except subprocess.TimeoutExpired:
            return Done(-1, "", "timed out (20 s)", 20)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(zip(MALFORMED, pool.map(run, MALFORMED), strict=True))


# The first case waits for all of them, hence the wider timeout.
@pytest.mark.timeout(60)
@pytest.mark.parametrize("url", MALFORMED)
def test_a_malformed_broker_url_is_bad_input(malformed_runs: dict[str, Done], url: str) -> None:
    done = malformed_runs[url]
    assert done.code == 2, done.output
    line = one_error_line(done)
    assert "broker URL must look like redis://" in line
    assert "not-to-be-shown" not in done.output


@pytest.mark.timeout(20)
@pytest.mark.parametrize("rung", ["celery", "kombu"])
@pytest.mark.parametrize("port", [1, procs.free_port()], ids=["port-1", "free-port"])
def test_an_unreachable_broker_fails_fast(rung: str, port: int) -> None:
    url = f"redis://:not-to-be-shown@127.0.0.1:{port}/0"
    done = ladder("--rung", rung, "--workload", "sum", "--n", "1000", "--broker", url)
    assert done.code == 1, done.output
    line = one_error_line(done)
    assert f"cannot reach the broker at redis://:***@127.0.0.1:{port}/0" in line
    assert "not-to-be-shown" not in done.output
    assert done.seconds < 5


@pytest.mark.timeout(20)
def test_a_wrong_password_is_refused_without_showing_it(redis_url: str) -> None:
    wrong = "wrong-" + password(redis_url)[::-1]
    url = redis_url.replace(password(redis_url), wrong)
    done = ladder(*KOMBU_PIPELINE, "--broker", url)
    assert done.code == 1, done.output
    line = one_error_line(done)
    assert "refused the password" in line
    assert wrong not in done.output
    assert password(redis_url) not in done.output


@pytest.fixture
def lone_redis_url(redis_servers: RedisServers) -> Iterator[str]:
    """A second private Redis, with no worker attached."""
    with redis_servers.running("lone-redis") as server:
        yield server.url


@pytest.mark.timeout(30)
def test_celery_with_no_worker_attached_fails_clearly(lone_redis_url: str) -> None:
    done = ladder(*CELERY_SUM, "--broker", lone_redis_url)
    assert done.code == 1, done.output
    line = one_error_line(done)
    assert "no Celery worker answers on redis://:***@127.0.0.1:" in line
    assert "celery -A tasks worker" in line
    assert password(lone_redis_url) not in done.output
    assert done.seconds < 10


def count(argvs: list[str], *words: str) -> int:
    return sum(all(word in argv for word in words) for argv in argvs)


# When to send the signal, judged by the command lines of ladder's descendants.
PHASES: dict[str, Callable[[list[str]], bool]] = {
    # redis-server up and both workers spawned: ladder waits for them to answer a ping.
    "starting": lambda argvs: (
        count(argvs, "redis-server") == 1 and count(argvs, "-m celery", "worker") == 2
    ),
    # The fork server and its two producers: the run itself is under way.
    "running": lambda argvs: (
        count(argvs, "redis-server") == 1
        and count(argvs, "-m celery", "worker") == 2
        and count(argvs, "multiprocessing.forkserver") >= 3
    ),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("phase", ["starting", "running"], ids=["starting", "running"])
@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_stops_the_run_and_everything_it_started(
    signum: int, code: int, word: str, phase: str, tmp_path: Path
) -> None:
    # The embedded default: no --broker and no CELERY_BROKER_URL in ENV.
    argv = [*LADDER, "run", "--rung", "celery", "--workload", "pipeline", "--items", "20000"]
    # Files, not pipes: a child that kept a pipe open would hide the moment ladder exits.
    with open(tmp_path / "out", "w+") as out, open(tmp_path / "err", "w+") as err:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=ENV, stdout=out, stderr=err, start_new_session=True
        )
        ladder_process = psutil.Process(process.pid)
        recorded: list[psutil.Process] = []
        try:
            poll_until(
                lambda: PHASES[phase]([cmdline(p) for p in descendants(ladder_process)]),
                60,
                f"ladder never reached {phase}",
                still_running(process, "ladder exited before the signal"),
            )
            recorded = descendants(ladder_process)
            os.kill(process.pid, signum)
            start = time.monotonic()
            returncode = process.wait(timeout=15)
            assert time.monotonic() - start < 15
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
            assert returncode == code, stderr
            assert stdout == ""
            assert stderr.splitlines() == [f"ladder: error: {word}"]
            _, alive = psutil.wait_procs(recorded, timeout=10)
            assert running(alive) == [], [cmdline(p) for p in alive]
        finally:
            kill_all(process, recorded)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "args",
    [CELERY_SUM, [*KOMBU_PIPELINE[:-1], "500"], ["--rung", "celery", "--workload", "pipeline"]],
    ids=["celery-sum", "kombu-pipeline", "celery-pipeline"],
)
def test_broker_wins_over_the_environment_for_every_part_of_the_run(
    args: list[str],
    redis_url: str,
    celery_workers: CeleryWorkers,
    lone_redis_url: str,
) -> None:
    """The environment names one Redis, --broker another: everything goes to the second,
    Celery's sends and results included, and the first sees nothing."""
    elsewhere = {
        **ENV,
        "CELERY_BROKER_URL": lone_redis_url,
        "CELERY_RESULT_BACKEND": lone_redis_url,
        "CELERY_BROKER_WRITE_URL": lone_redis_url,
    }
    done = ladder(*args, "--items", "300", "--broker", redis_url, "--json", env=elsewhere)
    assert done.code == 0, done.output
    result = json.loads(done.stdout)
    assert result["verified"] is True
    assert result["lost"] == 0
    assert client(lone_redis_url).dbsize() == 0
    assert password(redis_url) not in done.output


@pytest.mark.timeout(90)
def test_a_private_stack_is_its_own_result_backend(lone_redis_url: str) -> None:
    """CELERY_RESULT_BACKEND with no broker URL: the private stack's workers and its
    sums use the private Redis, not a backend they would never write to."""
    done = ladder(*CELERY_SUM, "--json", env={**ENV, "CELERY_RESULT_BACKEND": lone_redis_url})
    assert done.code == 0, done.output
    assert json.loads(done.stdout)["verified"] is True
    assert client(lone_redis_url).dbsize() == 0


@pytest.mark.timeout(90)
def test_stray_celery_variables_reach_neither_ladder_nor_its_workers() -> None:
    """Celery reads many CELERY_* variables besides the URLs: none left in ladder's
    environment reaches its own Celery clients or the workers it starts."""
    stray = {
        # Celery would import this module for its configuration, in ladder and workers.
        "CELERY_CONFIG_MODULE": "nonexistent_mod",
        # Celery would load its configuration with this class, in ladder and workers.
        "CELERY_LOADER": "nonexistent_loader:Loader",
    }
    args = ["--rung", "celery", "--workload", "sum", "--n", "100000", "--json"]
    done = ladder(*args, env={**ENV, **stray}, timeout_s=60)
    assert done.code == 0, done.output
    assert done.stderr == ""
    assert json.loads(done.stdout)["verified"] is True
