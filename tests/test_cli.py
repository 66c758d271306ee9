"""The `ladder` command, run as a real subprocess: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from ladder.registry import RUNGS
from tests.support.cli import check_bad_input, ladder

SUM = ["run", "--rung", "threads", "--workload", "sum"]
PIPELINE = ["run", "--rung", "threads", "--workload", "pipeline"]


@pytest.mark.timeout(20)
def test_rungs_lists_every_rung() -> None:
    done = ladder("rungs")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    # The first cell of each body row of the table, wrapped rows giving an empty cell.
    first_cells = [
        line.split("│")[1].strip() for line in done.stdout.splitlines() if line.startswith("│")
    ]
    assert [cell for cell in first_cells if cell] == list(RUNGS)


KEYS = {
    "rung",
    "workload",
    "params",
    "seconds",
    "throughput",
    "unit",
    "verified",
    "expected",
    "got",
    "lost",
    "duplicates",
    "latency_ms",
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("rung", "workload", "extra"),
    [
        ("serial", "sum", []),
        ("process-pool", "sum", []),
        ("threads", "pipeline", []),
        ("processes", "pipeline", ["--end", "join", "--queue-size", "1"]),
        ("asyncio", "pipeline", ["--producers", "1", "--consumers", "8"]),
    ],
    ids=["serial-sum", "process-pool-sum", "threads-pipeline", "processes-join", "asyncio-1-to-8"],
)
def test_run_json_prints_one_verified_object(rung: str, workload: str, extra: list[str]) -> None:
    done = ladder(
        *["run", "--rung", rung, "--workload", workload, "--json"],
        *["--n", "200_000", "--chunks", "8", "--workers", "2", "--items", "2000", *extra],
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.count("\n") == 1
    result = json.loads(done.stdout)
    assert isinstance(result, dict)
    assert set(result) >= KEYS
    assert (result["rung"], result["workload"]) == (rung, workload)
    assert result["verified"] is True
    assert result["seconds"] > 0
    assert result["throughput"] > 0
    assert (result["lost"], result["duplicates"]) == (0, 0)
    if workload == "sum":
        assert result["params"] == {"n": 200_000, "chunks": 8, "workers": 2}
        assert result["unit"] == "numbers/s"
        assert result["expected"] == result["got"] == 20_000_100_000
        assert result["latency_ms"] is None
    else:
        assert result["params"]["items"] == 2_000
        assert result["unit"] == "items/s"
        assert result["expected"] == result["got"] == 2_000
        assert set(result["latency_ms"]) == {"p50", "p99"}
        assert 0 <= result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]


@pytest.mark.timeout(20)
def test_run_without_json_prints_a_table() -> None:
    done = ladder(*SUM, "--n", "1000", "--chunks", "2")
    assert done.returncode == 0, done.stderr
    assert "sum on threads" in done.stdout
    assert "500,500" in done.stdout


# (arguments, a piece the one error line must hold to name the parameter): the option
# as it is spelt on the command line.
BAD_INPUT = [
    ([*SUM, "--n", "0"], "--n must be at least 1"),
    ([*SUM, "--n", "-5"], "--n must be at least 1"),
    ([*SUM, "--n", "abc"], "argument --n:"),
    ([*SUM, "--n", "1.5"], "argument --n:"),
    ([*SUM, "--n", str(10**20)], "--n must be at most"),
    ([*SUM, "--n", "10**20"], "argument --n:"),
    ([*SUM, "--chunks", "0"], "--chunks must be at least 1"),
    ([*SUM, "--n", "100", "--chunks", "101"], "--chunks must be at most 100"),
    ([*SUM, "--workers", "0"], "--workers must be at least 1"),
    ([*SUM, "--workers", "two"], "argument --workers:"),
    ([*PIPELINE, "--producers", "0"], "--producers must be at least 1"),
    ([*PIPELINE, "--items", "2", "--producers", "3"], "--producers must be at most 2"),
    ([*PIPELINE, "--consumers", "0"], "--consumers must be at least 1"),
    ([*PIPELINE, "--items", "0"], "--items must be at least 1"),
    ([*PIPELINE, "--items", "many"], "argument --items:"),
    ([*PIPELINE, "--payload-bytes", "-1"], "--payload-bytes must be at least 0"),
    ([*PIPELINE, "--work-ms", "-1"], "--work-ms must be between 0 and"),
    ([*PIPELINE, "--work-ms", "nan"], "argument --work-ms:"),
    ([*PIPELINE, "--work-ms", "inf"], "argument --work-ms:"),
    ([*PIPELINE, "--work-ms", "soon"], "argument --work-ms:"),
    ([*PIPELINE, "--work-kind", "gpu"], "argument --work-kind:"),
    ([*PIPELINE, "--produce-ms", "-1"], "--produce-ms must be between 0 and"),
    ([*PIPELINE, "--queue-size", "0"], "--queue-size must be at least 1"),
    ([*PIPELINE, "--end", "never"], "argument --end:"),
    (["run", "--rung", "thred", "--workload", "sum"], "argument --rung: unknown rung 'thred'"),
    (["run", "--rung", "threads", "--workload", "product"], "argument --workload:"),
    (["run", "--workload", "sum"], "required: --rung"),
    (["run", "--rung", "threads"], "required: --workload"),
    (["walk"], "argument COMMAND:"),
    ([], "required: COMMAND"),
]


def case_id(args: list[str]) -> str:
    """The bad part of a case: the arguments after the shared `run --rung R --workload W`."""
    if args[:1] == ["run"] and len(args) > 5:
        return " ".join(args[5:])
    return " ".join(args) or "nothing"


Runs = dict[tuple[str, ...], subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def bad_input_runs() -> Runs:
    """Every bad-input case run at once: each is mostly interpreter start-up, a core apiece."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        runs = pool.map(lambda args: ladder(*args), [args for args, _ in BAD_INPUT])
        return {tuple(args): run for (args, _), run in zip(BAD_INPUT, runs, strict=True)}


# The first case waits for all of them, hence the wider timeout.
@pytest.mark.timeout(60)
@pytest.mark.parametrize(("args", "names"), BAD_INPUT, ids=[case_id(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(
    bad_input_runs: Runs, args: list[str], names: str
) -> None:
    check_bad_input(bad_input_runs[tuple(args)], names)


@pytest.mark.timeout(20)
def test_unknown_rung_suggests_every_rung() -> None:
    done = ladder("run", "--rung", "thred", "--workload", "sum")
    assert done.returncode == 2
    assert done.stderr.rstrip().endswith("choose one of: " + ", ".join(RUNGS))
