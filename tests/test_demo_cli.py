"""`ladder demo` as a user runs it: the report and its files, and Ctrl-C mid-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import TextIO

import psutil
import pytest

from tests.support import cli
from tests.support.cli import ROOT
from tests.support.proctree import cmdline, descendants, kill_all, running
from tests.support.watch import poll_until, still_running

# The demo starts every rung, Redis, workers and Flower.
pytestmark = pytest.mark.slow

LADDER = [*cli.LADDER, "demo", "--quick"]
ENV = {**cli.ENV, "COLUMNS": "160"}


def read(file: TextIO) -> str:
    file.seek(0)
    return file.read()


@pytest.mark.timeout(90)
def test_the_demo_prints_the_table_and_findings_and_writes_three_files(tmp_path: Path) -> None:
    done = subprocess.run(
        [*LADDER, "--rungs", "serial,threads,processes", "--out", str(tmp_path)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert done.returncode == 0, done.stderr
    assert "Every rung, side by side" in done.stdout
    # A sentence computed from this run's figures, with its number.
    assert "threads ran at" in done.stdout
    assert "x serial" in done.stdout
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {(r["workload"], r["rung"]) for r in rows} == {
        (w, r) for w in ("sum", "pipeline") for r in ("serial", "threads", "processes")
    }
    # Four workloads; the batched one only on the rungs that batch.
    batched = [r["rung"] for r in rows if r["params"].get("batch", 1) > 1]
    assert batched == ["threads", "processes"]
    assert len(rows) == 3 * 3 + 2
    assert all(r["verified"] for r in rows)
    header = (tmp_path / "results.csv").read_text().splitlines()[0]
    assert header.startswith("workload_label,rung,workload,seconds,throughput")
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The short servers section: four models at K = 1, 50 and 500, every reply checked.
    servers = json.loads((tmp_path / "servers.json").read_text())
    assert {(r["model"], r["connections"]) for r in servers} == {
        (m, k) for m in ("process", "thread", "gevent", "asyncio") for k in (1, 50, 500)
    }
    assert all(r["ok"] and r["errors"] == 0 for r in servers), servers
    assert "Held up best" in done.stdout


@pytest.mark.timeout(150)
def test_the_demo_says_where_flowers_password_is_never_what_it_is(tmp_path: Path) -> None:
    """Made on first use in a file of the user's alone, as compose keeps its own: the
    demo's output, which may go to a log, names the file."""
    config = tmp_path / "config"
    kept = config / "queue-ladder" / "flower-login"
    argv = [*LADDER, "--rungs", "celery", "--no-servers", "--out", str(tmp_path / "out")]
    env = {**ENV, "XDG_CONFIG_HOME": str(config)}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    password = kept.read_text().strip()
    assert len(password) >= 20
    assert kept.stat().st_mode & 0o777 == 0o600
    assert kept.parent.stat().st_mode & 0o777 == 0o700
    assert password not in done.stdout + done.stderr
    assert f"its password: cat {kept};" in done.stderr

    kept.chmod(0o644)  # a file other users can read is refused, not used
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    cli.check_bad_input(done, f"{kept} is open to other users: chmod 600 {kept}")
    assert password not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_stops_everything_and_keeps_what_was_measured(
    signum: int, code: int, word: str, tmp_path: Path
) -> None:
    out_dir = tmp_path / "results"
    argv = [*LADDER, "--rungs", "serial,threads,celery", "--no-servers", "--out", str(out_dir)]
    with open(tmp_path / "out", "w+") as out, open(tmp_path / "err", "w+") as err:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=ENV, stdout=out, stderr=err, start_new_session=True
        )
        ladder_process = psutil.Process(process.pid)
        recorded: list[psutil.Process] = []
        try:
            # Wait for the third row (celery's sum): Redis, Flower and workers are all up.
            poll_until(
                lambda: read(err).count(" ok") >= 3,
                90,
                "the demo never reached celery",
                still_running(process, "the demo ended before the signal"),
                step_s=0.1,
            )
            recorded = descendants(ladder_process)
            argvs = [cmdline(p) for p in recorded]
            assert any("redis-server" in a for a in argvs), argvs
            assert any("flower" in a for a in argvs), argvs
            os.kill(process.pid, signum)
            assert process.wait(timeout=20) == code
            assert read(err).splitlines()[-1] == f"ladder: error: {word}"
            rows = json.loads((out_dir / "results.json").read_text())
            assert len(rows) >= 3
            assert all(r["verified"] for r in rows)
            _, alive = psutil.wait_procs(recorded, timeout=10)
            assert running(alive) == [], [cmdline(p) for p in alive]
        finally:
            kill_all(process, recorded)
