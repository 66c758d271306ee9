"""A local command, and a local rung's children, import no broker library: celery, kombu
and redis are the broker rungs', imported by the commands and children that use them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.forkserver import CONTEXT, Child
from tests.support.cli import ENV, ROOT
from tests.support.modules_probe import BROKER_LIBRARIES, report

# Run ladder's main in this interpreter, then say which broker libraries it imported.
PROBE = f"""
import json, sys
from ladder.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {BROKER_LIBRARIES} if m in sys.modules)), file=sys.stderr)
"""

LOCAL_COMMANDS = {
    "rungs": ["rungs"],
    "deadlock": ["deadlock", "--timeout-s", "0.2", "--json"],
    "help": ["--help"],
    **{
        f"run-{rung}": ["run", "--rung", rung, "--workload", "pipeline", "--items", "2000"]
        for rung in ("serial", "threads", "processes", "thread-pool", "process-pool", "asyncio")
    },
    "run-process-pool-sum": ["run", "--rung", "process-pool", "--workload", "sum", "--n", "10000"],
    "run-processes-tickets": ["run", "--rung", "processes", "--workload", "tickets"],
}


@pytest.mark.parametrize("args", LOCAL_COMMANDS.values(), ids=LOCAL_COMMANDS.keys())
def test_a_local_command_imports_no_broker_library(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr.splitlines()[-1]) == [], done.stderr


@pytest.mark.parametrize("model", ["process", "thread", "asyncio"])
def test_a_server_imports_no_broker_library(model: str) -> None:
    probe = (
        f"import sys, servers.{model}_server; "
        f"print(sorted(m for m in {BROKER_LIBRARIES} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_a_local_rungs_child_imports_no_broker_library() -> None:
    """A child of the fork server, once it has imported the local rungs' modules: the
    server preloads only what they need, whatever the parent (here, pytest) imported."""
    answers = CONTEXT.SimpleQueue()
    child = Child(target=report, args=(answers,), name="probe")
    child.start()
    try:
        assert answers.get() == []
    finally:
        child.join(10)
        child.kill()
