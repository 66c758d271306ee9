"""Flower, watching real workers: its HTTP API and its tasks page in a headless Chromium.

The session's private Redis and workers (conftest) run a real sum and a real pipeline
through the celery rung while Flower listens to their events; then Flower's API must list
those workers and tasks, and the page a user opens must show our task names.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker_ipc.celery_rung import CeleryRung
from core import procs
from core.celery_workers import CeleryWorkers
from core.jobs import PipelineJob, SumJob
from core.settings import Settings
from core.stack import Flower
from ladder.runner import run
from tests.support.browser import headless

# Flower, real workers and tasks, events to wait for.
pytestmark = pytest.mark.slow

TASK_NAMES = {"tasks.sum_range", "tasks.add_totals", "tasks.handle_item"}
SUM_JOB = SumJob(n=200_000, chunks=8, workers=2)
EVENTS_WAIT_S = 15.0


@dataclass(frozen=True)
class Watched:
    """Flower's address, once it has seen the workers run our tasks."""

    address: str
    workers: CeleryWorkers
    login: str  # user:password, the basic auth Flower was started with


@pytest.fixture(scope="module")
def flower(
    redis_url: str, celery_workers: CeleryWorkers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Watched]:
    server = Flower(redis_url, tmp_path_factory.mktemp("flower"), port=procs.free_port())
    try:
        address = server.start()
        # Flower must be listening before the tasks run: it learns of them by events.
        with CeleryRung(Settings(broker_url=redis_url)) as rung:
            # The sum last: the newest tasks, on the tasks page's first rows, then show
            # all three of our names (add_totals, sum_range, handle_item).
            assert run(rung, PipelineJob(items=50)).verified
            assert run(rung, SUM_JOB).verified
        yield Watched(address, celery_workers, server.login)
    finally:
        server.stop()


def get(url: str, login: str | None = None) -> tuple[int, str]:
    """The status and body of a GET, with basic auth when a login is given."""
    request = urllib.request.Request(url)
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def get_json(url: str, login: str) -> Any:
    status, body = get(url, login)
    assert status == 200, (url, status)
    return json.loads(body)


def tasks_seen(flower: Watched) -> dict[str, dict[str, Any]]:
    """Flower's tasks by id, polled until every one of our task names is among them:
    events reach Flower after the results reach us."""
    deadline = time.monotonic() + EVENTS_WAIT_S
    while True:
        tasks: dict[str, dict[str, Any]] = get_json(f"{flower.address}/api/tasks", flower.login)
        seen = {task.get("name") for task in tasks.values()}
        if TASK_NAMES.issubset(seen):
            return tasks
        if time.monotonic() > deadline:
            raise AssertionError(f"Flower saw only {seen} within {EVENTS_WAIT_S:.0f} s")
        time.sleep(0.2)


def test_flower_api_lists_our_workers_and_tasks(flower: Watched) -> None:
    assert get(f"{flower.address}/healthcheck") == (200, "OK")

    workers = get_json(f"{flower.address}/api/workers?refresh=1", flower.login)
    assert set(flower.workers.names()) <= set(workers)

    tasks = tasks_seen(flower)
    # Arguments are readable: each chunk of the sum shows the range it added up.
    sum_args = {task["args"] for task in tasks.values() if task["name"] == "tasks.sum_range"}
    assert {str(chunk) for chunk in SUM_JOB.ranges()} <= sum_args
    assert {task["worker"] for task in tasks.values()} <= set(flower.workers.names())


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_chromium_shows_our_tasks_on_flowers_tasks_page(flower: Watched, tmp_path: Path) -> None:
    tasks_seen(flower)
    # Basic auth in the URL: Chromium sends it with the page's own requests too.
    page = flower.address.replace("://", f"://{flower.login}@") + "/tasks"

    dom = headless(page, tmp_path / "profile", "--dump-dom")
    # DataTables' "Showing 1 to 15 of N tasks": the table was filled by its script.
    assert "Showing 1 to" in dom, dom[-2000:]
    assert TASK_NAMES & set(re.findall(r"tasks\.\w+", dom)), dom[-2000:]

    screenshot = tmp_path / "flower.png"
    headless(page, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1400,900")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# What another user of the machine could do on loopback: read every page and API, run a
# task, shut a worker down.
LOCKED = [
    ("GET", "/"),
    ("GET", "/tasks"),
    ("GET", "/api/workers"),
    ("GET", "/api/tasks"),
    ("POST", "/api/task/async-apply/tasks.noop"),
    ("POST", "/api/worker/shutdown/{worker}"),
]


def request(method: str, url: str, login: str | None = None, as_nobody: bool = False) -> int:
    """The status of one request, made by a process of its own: as user nobody (uid 65534)
    if asked, with the system's python3, as nobody cannot read this project's venv."""
    probe = (
        "import base64, sys, urllib.request, urllib.error\n"
        "method, url, login = sys.argv[1:]\n"
        "data = b'' if method == 'POST' else None\n"
        "request = urllib.request.Request(url, method=method, data=data)\n"
        "if login:\n"
        "    token = base64.b64encode(login.encode()).decode()\n"
        "    request.add_header('Authorization', 'Basic ' + token)\n"
        "try:\n"
        "    print(urllib.request.urlopen(request, timeout=5).status)\n"
        "except urllib.error.HTTPError as error:\n"
        "    print(error.code)\n"
    )
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    done = subprocess.run(
        [python, "-c", probe, method, url, login or ""],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        user=65534 if as_nobody else None,
    )
    return int(done.stdout)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("method", "path"), LOCKED, ids=[f"{m} {p}" for m, p in LOCKED])
def test_flower_is_closed_to_anyone_without_its_login(
    flower: Watched, method: str, path: str
) -> None:
    url = flower.address + path.format(worker=flower.workers.names()[0])
    assert request(method, url) == 401
    assert request(method, url, "ladder:wrong-password") == 401
    if method == "GET":
        assert request(method, url, flower.login) == 200
    assert flower.workers.names()[0] in get_json(f"{flower.address}/api/workers", flower.login)


@pytest.mark.timeout(60)
@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user (nobody) needs root")
@pytest.mark.parametrize(("method", "path"), LOCKED, ids=[f"{m} {p}" for m, p in LOCKED])
def test_another_user_of_the_machine_gets_401(flower: Watched, method: str, path: str) -> None:
    url = flower.address + path.format(worker=flower.workers.names()[0])
    assert request(method, url, as_nobody=True) == 401
