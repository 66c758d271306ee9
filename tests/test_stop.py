"""Ctrl-C and SIGTERM on every rung's sum, mid-work: ladder stops within 10 s, says one
line, exits 130 or 143, and leaves nothing running.

Each sum is minutes of work, so the signal always finds it summing; the test sends it
once the summing has begun, judged by the CPU time of whatever sums: ladder's own
threads, the children of its fork server, or the Celery workers once connected. The
broker rungs run on their embedded stack: no URL, no CELERY_BROKER_URL.

The signal goes to ladder alone, as `kill` sends it, or to its whole process group, as a
terminal's Ctrl-C does: then every child ladder started gets it too, at the same moment.
The pool rungs get more chunks than workers, so that calls still wait in the pool's queue
when the signal comes.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.support import cli
from tests.support.cli import ENV, ROOT
from tests.support.proctree import cmdline, descendants, kill_all, running
from tests.support.watch import poll_until, still_running

# Each case sums for seconds before the signal.
pytestmark = pytest.mark.slow

LADDER = [*cli.LADDER, "run"]
# 10^10 numbers, the most a job allows: minutes of summing on any rung of this machine.
HUGE_SUM = ["--workload", "sum", "--n", "10000000000"]
STOP_WITHIN_S = 10.0
# CPU seconds of summing seen before the signal is sent.
SUMMING_S = 1.0

SIGNALS = pytest.mark.parametrize(
    ("signum", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
# Who the signal is sent to: ladder's pid, or its process group (ladder leads a session
# of its own here, so the group is ladder and whatever it started that stayed in it).
TARGETS = pytest.mark.parametrize("to", ["ladder", "group"])


def cpu_s(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def ladder_threads(ladder: psutil.Process) -> float:
    """CPU seconds of ladder's threads but the main one: the threads and pools that sum."""
    try:
        threads = ladder.threads()
    except psutil.Error:
        return 0.0
    return sum(t.user_time + t.system_time for t in threads if t.id != ladder.pid)


def fork_server_children(ladder: psutil.Process) -> float:
    """CPU seconds of the processes forked from ladder's fork server: they import nothing,
    so all of it is work."""
    servers = [p for p in descendants(ladder) if "multiprocessing.forkserver" in cmdline(p)]
    return sum(cpu_s(child) for server in servers for child in descendants(server))


class CeleryWork:
    """CPU seconds of the Celery workers since each first had a connection open: what
    they spent before was their start-up."""

    def __init__(self) -> None:
        self.at_connect: dict[int, float] = {}

    def __call__(self, ladder: psutil.Process) -> float:
        busy = 0.0
        for worker in descendants(ladder):
            argv = cmdline(worker)
            if "-m celery" not in argv or " worker " not in argv:
                continue
            if worker.pid not in self.at_connect:
                try:
                    connected = bool(worker.net_connections(kind="tcp"))
                except psutil.Error:
                    connected = False
                if connected:
                    self.at_connect[worker.pid] = cpu_s(worker)
                continue
            busy += cpu_s(worker) - self.at_connect[worker.pid]
        return busy


@pytest.fixture(scope="module")
def start_up_cpu_s() -> float:
    """CPU seconds ladder spends starting and stopping with nothing to sum: what the serial
    rung's one process spends before its sum begins, at most."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [*LADDER, "--rung", "serial", "--workload", "sum", "--n", "16"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        timeout=60,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


RUNS = {
    "serial": ["--rung", "serial"],
    "threads": ["--rung", "threads", "--chunks", "2", "--workers", "2"],
    # One chunk, one thread, for all 10^10 numbers: it cannot be stopped, only left.
    "threads-one-chunk": ["--rung", "threads", "--chunks", "1", "--workers", "1"],
    "processes": ["--rung", "processes", "--chunks", "2"],
    "thread-pool": ["--rung", "thread-pool", "--chunks", "16", "--workers", "2"],
    "process-pool": ["--rung", "process-pool", "--chunks", "16", "--workers", "2"],
    "asyncio": ["--rung", "asyncio", "--chunks", "16", "--workers", "2"],
    "kombu": ["--rung", "kombu", "--chunks", "2"],
    "celery": ["--rung", "celery", "--chunks", "2"],
}


def summing(case: str, start_up_cpu_s: float) -> Callable[[psutil.Process], float]:
    """The CPU seconds a case's run has spent summing so far, given ladder's process."""
    rung = case.removesuffix("-one-chunk")
    if rung == "serial":
        return lambda ladder: cpu_s(ladder) - start_up_cpu_s
    if rung in ("threads", "thread-pool"):
        return ladder_threads
    if rung == "celery":
        return CeleryWork()
    return fork_server_children


@TARGETS
@SIGNALS
@pytest.mark.parametrize("case", list(RUNS))
def test_a_signal_stops_a_sum_mid_work_within_10_s(
    case: str, signum: int, code: int, word: str, to: str, start_up_cpu_s: float, tmp_path: Path
) -> None:
    summed = summing(case, start_up_cpu_s)
    # Files, not pipes: a child that kept a pipe open would hide the moment ladder exits.
    with open(tmp_path / "out", "w+") as out, open(tmp_path / "err", "w+") as err:
        process = subprocess.Popen(
            [*LADDER, *RUNS[case], *HUGE_SUM],
            cwd=ROOT,
            env=ENV,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        ladder = psutil.Process(process.pid)
        recorded: list[psutil.Process] = []
        try:
            poll_until(
                lambda: summed(ladder) >= SUMMING_S,
                90,
                "the sum never started",
                still_running(process, "ladder exited before the signal"),
            )
            recorded = descendants(ladder)
            if to == "group":
                os.killpg(process.pid, signum)
            else:
                os.kill(process.pid, signum)
            start = time.monotonic()
            try:
                returncode = process.wait(timeout=STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"ladder still running {STOP_WITHIN_S:.0f} s after the signal")
            assert time.monotonic() - start < STOP_WITHIN_S
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
            assert returncode == code, stderr
            assert stdout == ""
            assert "Traceback" not in stderr and "Exception in thread" not in stderr, stderr
            # Exactly the one line: no traceback, no "leaked semaphore" warning.
            assert stderr.splitlines() == [f"ladder: error: {word}"]
            _, alive = psutil.wait_procs(recorded, timeout=5)
            assert running(alive) == [], [cmdline(p) for p in alive]
        finally:
            kill_all(process, recorded)


@pytest.mark.parametrize("qualname", ["Thing.__del__", "_get_module_lock.<locals>.cb"])
def test_a_signal_inside_a_callback_python_would_swallow_waits_for_the_next_check(
    qualname: str,
) -> None:
    """A signal that lands in a __del__ or in the callback that frees an import's module
    lock (a lazy import of celery mid-run) only sets the flag: raised there, Python would
    print "Exception ignored in ..." and go on. The next check raises it."""
    from core import interrupt

    def handled_in() -> None:
        interrupt._handle(signal.SIGINT, sys._getframe())

    handled_in.__code__ = handled_in.__code__.replace(
        co_name=qualname.rsplit(".", 1)[-1], co_qualname=qualname
    )
    try:
        handled_in()  # no KeyboardInterrupt here
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        with pytest.raises(KeyboardInterrupt):
            interrupt._handle(signal.SIGINT, sys._getframe())  # anywhere else: at once
    finally:
        interrupt._requested = None
