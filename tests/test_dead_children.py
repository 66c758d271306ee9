"""A child killed mid-run (SIGKILL) on the local rungs: the run ends, fails (exit 1) with
one report that names the death, and leaves nothing running.

A pipeline's report is its result, whose note says who died and what the run came to;
a sum's or a sale's is the one error line. The child is picked by the order the fork
server forked them, which is the order ladder starts them: producers, then consumers.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.support import cli
from tests.support.cli import ENV, ROOT
from tests.support.proctree import cmdline, descendants, kill_all, running

# Each case waits for a child to work a while before it is killed.
pytestmark = pytest.mark.slow

LADDER = [*cli.LADDER, "run"]
ENDS_WITHIN_S = 30.0
# CPU seconds a child has worked before it is killed: mid-run, not at its start.
WORKED_S = 0.3

ITEMS = 2_000_000
PIPELINE = ["--workload", "pipeline", "--items", str(ITEMS), "--producers", "2", "--consumers", "2"]
# Consumers slower than producers: the queue stays full, so a producer's feeder thread
# spends most of its time writing to the pipe, holding the queue's write lock.
SLOW_CONSUMERS = ["--work-ms", "0.1", "--work-kind", "cpu"]
# Minutes of summing: 16 chunks of over 600 million numbers each.
HUGE_SUM = ["--workload", "sum", "--n", "10000000000", "--chunks", "16"]
LONG_SALE = ["--workload", "tickets", "--tickets", "100000", "--buyers", "100000", "--gap-ms", "1"]
POOL_DIED = r"a worker of the pool died \(killed by SIGKILL\): the pool is broken"


@dataclass(frozen=True)
class Case:
    args: list[str]
    kill: int  # which child of the fork server, in the order they were forked
    report: str  # a regular expression the note, or the error line, starts with


PIPELINES = {
    "processes-producer": Case(
        ["--rung", "processes", *PIPELINE, *SLOW_CONSUMERS],
        0,
        r"producer-0 died \(killed by SIGKILL\) after sending [\d,]+ of its 1,000,000 items; ",
    ),
    "processes-consumer": Case(
        ["--rung", "processes", *PIPELINE],
        2,
        r"consumer-0 died \(killed by SIGKILL\) before reporting what it had handled "
        r"\(at least [\d,]+ items\): their ids cannot be known, so they count as lost; ",
    ),
    "processes-join-producer": Case(
        ["--rung", "processes", *PIPELINE, *SLOW_CONSUMERS, "--end", "join"],
        1,
        r"producer-1 died \(killed by SIGKILL\) after sending [\d,]+ of its 1,000,000 items; ",
    ),
    "processes-join-consumer": Case(
        ["--rung", "processes", *PIPELINE, "--end", "join"],
        3,
        r"consumer-1 died \(killed by SIGKILL\) before reporting what it had handled",
    ),
    "process-pool": Case(
        ["--rung", "process-pool", *PIPELINE, "--work-ms", "0.2", "--work-kind", "cpu"],
        0,
        POOL_DIED,
    ),
    "asyncio": Case(
        ["--rung", "asyncio", *PIPELINE, "--work-ms", "0.2", "--work-kind", "cpu"],
        0,
        POOL_DIED,
    ),
}

FAILURES = {
    "processes-sum": Case(
        ["--rung", "processes", *HUGE_SUM],
        1,
        r"ladder: error: sum-1 died \(killed by SIGKILL\): the run stopped there, "
        r"with [\d,]+ of 16 chunks summed$",
    ),
    "processes-tickets": Case(
        ["--rung", "processes", *LONG_SALE],
        3,
        r"ladder: error: buyer-3 died \(killed by SIGKILL\) after answering [\d,]+ of its "
        r"12,500 buyers: the run stopped there, with [\d,]+ of 100,000 answered",
    ),
    "process-pool-sum": Case(
        ["--rung", "process-pool", *HUGE_SUM],
        0,
        rf"ladder: error: {POOL_DIED}, with [\d,]+ of 16 chunks summed$",
    ),
    "asyncio-sum": Case(
        ["--rung", "asyncio", *HUGE_SUM],
        0,
        rf"ladder: error: {POOL_DIED}, with [\d,]+ of 16 chunks summed$",
    ),
}


def forked(ladder: psutil.Process) -> list[psutil.Process]:
    """The children of ladder's fork server, oldest first."""
    servers = [p for p in descendants(ladder) if "multiprocessing.forkserver" in cmdline(p)]
    children = [child for server in servers for child in descendants(server)]

    def born(child: psutil.Process) -> tuple[float, int]:
        try:
            return child.create_time(), child.pid
        except psutil.Error:
            return 0.0, child.pid

    return sorted(children, key=born)


def worked_s(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


@dataclass
class Ended:
    code: int
    stdout: str
    stderr: str


def run_and_kill(case: Case, tmp_path: Path) -> Ended:
    """Run ladder, SIGKILL the case's child once it has worked, wait for the end and for
    every process the run started to be gone."""
    with open(tmp_path / "out", "w+") as out, open(tmp_path / "err", "w+") as err:
        process = subprocess.Popen(
            [*LADDER, *case.args, "--json"],
            cwd=ROOT,
            env=ENV,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        ladder = psutil.Process(process.pid)
        recorded: list[psutil.Process] = []
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, "ladder ended before the kill"
                assert time.monotonic() < deadline, "the child never started working"
                children = forked(ladder)
                if len(children) > case.kill and worked_s(children[case.kill]) >= WORKED_S:
                    break
                time.sleep(0.05)
            recorded = descendants(ladder)
            children[case.kill].kill()
            try:
                code = process.wait(timeout=ENDS_WITHIN_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"ladder still running {ENDS_WITHIN_S:.0f} s after the kill")
            _, alive = psutil.wait_procs(recorded, timeout=5)
            assert running(alive) == [], [cmdline(p) for p in alive]
            out.seek(0)
            err.seek(0)
            return Ended(code, out.read(), err.read())
        finally:
            kill_all(process, recorded)


@pytest.mark.parametrize("name", list(PIPELINES))
def test_a_dead_child_ends_the_pipeline_with_a_report(name: str, tmp_path: Path) -> None:
    ended = run_and_kill(PIPELINES[name], tmp_path)
    assert ended.code == 1, ended.stderr
    assert ended.stderr == ""
    assert ended.stdout.count("\n") == 1
    result = json.loads(ended.stdout)
    assert result["verified"] is False
    assert re.match(PIPELINES[name].report, result["note"]), result["note"]
    sent = ITEMS - result["unsent"]
    assert (
        f"of {sent:,} items sent, {result['got']:,} handled and {result['lost']:,} lost"
        in (result["note"])
    )
    assert result["unsent"] > 0  # the run stopped before the producers were done
    # The consumers still alive reported what they handled: it is counted, not lost.
    assert result["got"] > 0
    assert result["got"] + result["lost"] + result["unsent"] == ITEMS


@pytest.mark.parametrize("name", list(FAILURES))
def test_a_dead_child_fails_the_run_with_one_line(name: str, tmp_path: Path) -> None:
    ended = run_and_kill(FAILURES[name], tmp_path)
    assert ended.code == 1, ended.stderr
    assert ended.stdout == ""
    lines = ended.stderr.splitlines()
    assert len(lines) == 1, ended.stderr
    assert re.match(FAILURES[name].report, lines[0]), lines[0]
