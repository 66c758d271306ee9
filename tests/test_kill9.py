"""`kill -9` of ladder in the middle of a run: nothing it started keeps running, and
nothing it leaves behind holds a secret or lasts for ever.

    ladder (SIGKILL) -> fork server: its "alive" pipe is closed, it exits
                     -> fork-server children, told by Linux that their parent died
                     -> redis-server, Celery workers, Flower: told the same, of ladder
                     -> network namespaces: gone with the last process in them

Each case runs ladder as a real process, in a session of its own, with a temporary
folder of the test's own (TMPDIR), and kills it once its children are at work.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from core.broker import LEASE_S, client
from core.celery_workers import CeleryWorkers
from core.work import CPU_QUEUE, IO_QUEUE
from ladder import netns
from tests.support.cli import ENV, LADDER, ROOT
from tests.support.proctree import cmdline, descendants, kill_all, running
from tests.support.watch import poll_until, still_running

# Each case starts ladder with its whole stack and kills it mid-run: seconds apiece.
pytestmark = pytest.mark.slow

GONE_WITHIN_S = 15.0
SEMAPHORES = Path("/dev/shm")


def count(argvs: list[str], *words: str) -> int:
    return sum(all(word in argv for word in words) for argv in argvs)


def fork_children(argvs: list[str]) -> int:
    """Children of the fork server (the server itself included)."""
    return count(argvs, "multiprocessing.forkserver")


@dataclass(frozen=True)
class Case:
    """A ladder command, and when it is at work: judged by its descendants' command lines."""

    args: list[str]
    at_work: Callable[[list[str]], bool]


CASES = {
    "processes": Case(
        ["run", "--rung", "processes", "--workload", "pipeline", "--items", "50000000"],
        lambda argvs: fork_children(argvs) >= 5,  # the server, 2 producers, 2 consumers
    ),
    "process-pool": Case(
        ["run", "--rung", "process-pool", "--workload", "sum", "--n", "5000000000"],
        lambda argvs: fork_children(argvs) >= 3,
    ),
    "kombu": Case(
        ["run", "--rung", "kombu", "--workload", "pipeline", "--items", "50000000"],
        lambda argvs: count(argvs, "redis-server") == 1 and fork_children(argvs) >= 5,
    ),
    "celery": Case(
        ["run", "--rung", "celery", "--workload", "pipeline", "--items", "50000000"],
        lambda argvs: (
            count(argvs, "redis-server") == 1
            and count(argvs, "-m celery", "worker") >= 2
            and fork_children(argvs) >= 3
        ),
    ),
    # Every worker is in the middle of a long task when ladder dies: a warm shutdown would
    # wait for it, and for the broker, which died too.
    "celery-mid-task": Case(
        ["run", "--rung", "celery", "--workload", "pipeline", "--items", "100", "--work-ms", "6e4"],
        lambda argvs: (
            count(argvs, "redis-server") == 1
            and count(argvs, "-m celery", "worker") >= 2
            and fork_children(argvs) >= 3
        ),
    ),
    # Dramatiq's worker processes are its main process's children, not ladder's.
    "bench-peers": Case(
        ["bench", "--peers", "--quick"],
        lambda argvs: count(argvs, "dramatiq", "peers.dramatiq_peer") >= 2,
    ),
    "bench-hosts": Case(
        ["bench", "--hosts", "--quick"],
        lambda argvs: (
            count(argvs, "redis-server") == 1 and count(argvs, "-m celery", "worker") >= 1
        ),
    ),
}
NO_HOSTS = netns.unavailable()


def case_param(name: str) -> object:
    if name == "bench-hosts" and NO_HOSTS:
        return pytest.param(name, marks=pytest.mark.skip(reason=f"no namespaces: {NO_HOSTS}"))
    return name


def namespaces() -> set[int]:
    """Every network namespace some process is in, by inode."""
    held = set()
    for ns in Path("/proc").glob("[0-9]*/ns/net"):
        with contextlib.suppress(OSError):
            held.add(ns.stat().st_ino)
    return held


def links() -> set[str]:
    """The links of this namespace that ladder's hosts make (their names start with ql)."""
    done = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    names = {line.split(":")[1].strip().split("@")[0] for line in done.stdout.splitlines()}
    return {name for name in names if name.startswith("ql")}


def namespaces_of(processes: list[psutil.Process]) -> set[int]:
    """The network namespaces, other than this one, that these processes are in."""
    own = os.stat("/proc/self/ns/net").st_ino
    found = set()
    for process in processes:
        with contextlib.suppress(OSError):
            found.add(os.stat(f"/proc/{process.pid}/ns/net").st_ino)
    return found - {own}


def semaphores_of(processes: list[psutil.Process]) -> set[str]:
    """The named semaphores these processes have open: each is a file in /dev/shm that a
    process maps into its memory when it opens it."""
    found = set()
    for process in processes:
        with contextlib.suppress(psutil.Error, OSError):
            for mapped in process.memory_maps(grouped=True):
                if mapped.path.startswith(f"{SEMAPHORES}/sem."):
                    found.add(mapped.path)
    return found


def secrets_of(processes: list[psutil.Process]) -> set[str]:
    """The passwords in the broker URLs these processes were given (in their environment)."""
    found = set()
    for process in processes:
        with contextlib.suppress(psutil.Error):
            for name, value in process.environ().items():
                if name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "FLOWER_BASIC_AUTH"):
                    secret = value.split("@")[0].rsplit(":", 1)[-1]
                    if len(secret) >= 12:
                        found.add(secret)
    return found


# What a file holding a broker's password would hold besides: Redis's configuration
# keyword for it, or a URL with one (Celery's banner shows it masked, as :**@).
SECRET_MARKS = re.compile(rb"requirepass|FLOWER_BASIC_AUTH|rediss?://[^@\s/]*:(?!\*\*@)[^@\s/]+@")


def files_holding(folder: Path, secrets: set[str]) -> list[Path]:
    """Files under folder that hold one of the secrets, or look as if they held one."""
    holding = []
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if not path.is_file():
                continue
            text = path.read_bytes()
            if SECRET_MARKS.search(text) or any(s.encode() in text for s in secrets):
                holding.append(path)
    return holding


@contextlib.contextmanager
def ladder_at_work(
    case: Case, tmp: Path
) -> Iterator[tuple[subprocess.Popen[bytes], list[psutil.Process]]]:
    """ladder started and at work; yields it and its descendants at that moment."""
    env = {**ENV, "TMPDIR": str(tmp)}
    with open(tmp / "ladder.out", "wb") as out:
        process = subprocess.Popen(
            [*LADDER, *case.args], cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
        )
    seen: list[psutil.Process] = []
    try:
        poll_until(
            lambda: case.at_work([cmdline(p) for p in descendants(psutil.Process(process.pid))]),
            90,
            "ladder never got to work",
            still_running(process, (tmp / "ladder.out").read_text),
            step_s=0.1,
        )
        time.sleep(1.0)  # mid-run: children started, messages moving
        seen = descendants(psutil.Process(process.pid))
        yield process, seen
    finally:
        kill_all(process, seen)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", [case_param(name) for name in CASES])
def test_kill_9_leaves_nothing_running_and_no_secret_behind(name: str, tmp_path: Path) -> None:
    links_before = links()
    with ladder_at_work(CASES[name], tmp_path) as (process, seen):
        made = namespaces_of(seen)
        if name == "bench-hosts":
            assert made  # the hosts' namespaces: the test would prove nothing
        secrets = secrets_of(seen)
        semaphores = semaphores_of([psutil.Process(process.pid), *seen])
        if name in ("processes", "process-pool"):
            assert semaphores  # their queues' locks: the test would prove nothing
        if name in ("celery", "celery-mid-task", "bench-hosts"):
            assert secrets, [cmdline(p) for p in seen]  # the workers' URLs hold them
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        _, alive = psutil.wait_procs(seen, timeout=GONE_WITHIN_S)
        assert running(alive) == [], [cmdline(p) for p in running(alive)]
        assert files_holding(tmp_path, secrets) == []
        assert [s for s in semaphores if Path(s).exists()] == []
        assert made & namespaces() == set()
        assert links() == links_before


def test_the_next_start_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    with ladder_at_work(CASES["kombu"], tmp_path) as (process, seen):
        left = [p for p in tmp_path.iterdir() if p.name.startswith("queue-ladder-")]
        assert len(left) == 1, list(tmp_path.iterdir())
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        psutil.wait_procs(seen, timeout=GONE_WITHIN_S)
    assert left[0].exists()  # logs only, no secret: see the test above
    done = subprocess.run(
        [*LADDER, "run", "--rung", "kombu", "--workload", "sum", "--n", "1000", "--json"],
        cwd=ROOT,
        env={**ENV, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not left[0].exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith("queue-ladder-")] == []


@pytest.mark.parametrize("rung", ["kombu", "celery"])
def test_a_killed_run_leaves_no_key_without_an_expiry(
    rung: str, redis_url: str, celery_workers: CeleryWorkers, tmp_path: Path
) -> None:
    """On a given broker, which outlives ladder, every key the run made expires."""
    url_file = tmp_path / "broker-url"
    url_file.write_text(redis_url + "\n")
    r = client(redis_url)
    case = Case(
        ["run", "--rung", rung, "--workload", "pipeline", "--items", "50000000"],
        lambda argvs: fork_children(argvs) >= 3,
    )
    case = Case([*case.args, "--broker", f"@{url_file}"], case.at_work)
    with ladder_at_work(case, tmp_path) as (process, seen):
        assert any(True for _ in r.scan_iter(match="ladder:*"))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        _, alive = psutil.wait_procs(seen, timeout=GONE_WITHIN_S)
        assert running(alive) == [], [cmdline(p) for p in running(alive)]
        keys = [*r.scan_iter(match="ladder:*"), *r.scan_iter(match="_kombu.*ladder:*")]
        assert keys
        ttls = {key: r.ttl(key) for key in keys}
        assert all(0 < ttl <= LEASE_S for ttl in ttls.values()), ttls
    # The messages the run left on Celery's queue are for a run that is over: the
    # workers take them and record nothing.
    for key in keys:
        r.delete(key)
    r.delete(CPU_QUEUE, IO_QUEUE)
