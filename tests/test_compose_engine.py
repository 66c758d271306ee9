"""compose.yaml on a real Docker Engine: the image built, the demo run, nothing left behind.

Marked `engine`, so plain `make test` leaves it out: `make test-compose` runs it, as root,
on the engine and base images that tests/engine.py sets up. Each test works on a copy of
the repository as git has it (no .env, no results/), under a compose project name of its
own, and takes the project down (`down -v`) however it ends.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from core import procs
from tests import engine
from tests.engine import ROOT, say
from tests.support.browser import headless

pytestmark = [pytest.mark.engine, pytest.mark.docker, pytest.mark.slow]

# Who owns the copy, as a user owns their clone: not root, and not the image's own user.
OWNER_UID = OWNER_GID = 2345
# Every test project's name starts so: the images they leave untagged can be told apart.
PROJECT_PREFIX = "ladder-test-"
RESULTS = ("results.json", "results.csv", "comparison.png", "servers.json")


@dataclass(frozen=True)
class Engine:
    """What the tests run on, as the harness found or made it."""

    version: str
    compose: str
    images: dict[str, str]


@pytest.fixture(scope="session")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    if os.geteuid() != 0:
        pytest.fail("make test-compose runs as root: it starts dockerd and installs packages")
    with engine.docker_engine(tmp_path_factory.mktemp("engine")) as version:
        compose = engine.compose_v2()
        base = engine.base_images()
        images = engine.ensure_base_images(base)
        for name, command in {
            base.python: "python --version; pip --version",
            base.redis: "redis-server --version",
        }.items():
            say(f"base image {name} ({images[name]}): {engine.image_version(name, command)}")
        yield Engine(version, compose, images)


def compose_variables(folder: Path) -> set[str]:
    """The names compose.yaml interpolates: ${NAME}, ${NAME:-default}, ${NAME:?error}."""
    return set(re.findall(r"(?<!\$)\$\{(\w+)", (folder / "compose.yaml").read_text()))


@dataclass
class Project:
    """A compose project on a copy of the repository, under a name of its own."""

    folder: Path
    name: str
    logs: Path
    # Variables for compose in every call, as if set in the user's shell.
    variables: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        """`docker compose` on this project, from any folder."""
        return ["docker", "compose", "-p", self.name, "--project-directory", str(self.folder)]

    def env(self, extra: Mapping[str, str]) -> dict[str, str]:
        # A variable in our environment would win over .env: keep compose's own out.
        names = compose_variables(self.folder)
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in names and not key.startswith("COMPOSE_")
        }
        return {**env, **self.variables, **extra}

    def compose(
        self, *args: str, timeout_s: float, extra: Mapping[str, str] | None = None
    ) -> tuple[int, str]:
        """`docker compose` on this project: its exit code and its output (also in a log)."""
        argv = self.argv()
        log = self.logs / f"{args[0]}.log"
        with open(log, "ab") as out:
            try:
                done = subprocess.run(
                    [*argv, *args],
                    cwd=self.folder,
                    env=self.env(extra or {}),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=timeout_s,
                    check=False,
                )
                code = done.returncode
            except subprocess.TimeoutExpired:
                code = -1
        output = log.read_text(errors="replace")
        say(f"docker compose {' '.join(args)}: exit {code}, its output in {log}")
        if code == -1:
            raise AssertionError(
                f"docker compose {args[0]}: not done in {timeout_s:.0f} s: {output[-3000:]}"
            )
        return code, output

    def output(self, *args: str, timeout_s: float = 60) -> str:
        """What `docker compose` prints on stdout; it must succeed."""
        argv = self.argv()
        done = engine.run(
            [*argv, *args],
            timeout_s,
            f"docker compose {args[0]}",
            cwd=self.folder,
            env=self.env({}),
        )
        return done.stdout

    def login(self) -> str:
        """Flower's login, read the way the demo's closing lines tell a user to."""
        return self.output("exec", "-T", "flower", "cat", "/run/ladder/flower-login").strip()

    def secrets(self) -> set[str]:
        """The passwords in use: Redis's, and Flower's of each user."""
        logins = self.login().split(",")
        password = self.output("exec", "-T", "flower", "cat", "/run/ladder/redis-password")
        return {password.strip(), *(login.partition(":")[2] for login in logins)}

    def containers(self, service: str) -> list[str]:
        return self.output("ps", "-q", service).split()

    def down(self) -> None:
        code, output = self.compose("down", "-v", "--remove-orphans", timeout_s=300)
        assert code == 0, f"docker compose down -v: {output[-2000:]}"

    def leftovers(self) -> dict[str, list[str]]:
        """The containers, networks and volumes the engine still has of this project."""
        label = f"label=com.docker.compose.project={self.name}"
        found = {}
        for kind, command in {
            "containers": ["docker", "ps", "-a"],
            "networks": ["docker", "network", "ls"],
            "volumes": ["docker", "volume", "ls"],
        }.items():
            done = engine.run([*command, "-q", "--filter", label], 60, " ".join(command))
            found[kind] = done.stdout.split()
        return found


def remove_untagged_images() -> None:
    """Remove the images that test projects built and a later build untagged: compose tags
    one image per service with the same name, so each build leaves some, each holding on
    to layers that the current image may no longer share."""
    dangling = engine.run(
        ["docker", "image", "ls", "-q", "--no-trunc", "--filter", "dangling=true"],
        60,
        "docker image ls",
    ).stdout.split()
    ours = []
    for image in dangling:
        done = subprocess.run(
            [
                "docker",
                "image",
                "inspect",
                "--format",
                '{{index .Config.Labels "com.docker.compose.project"}}',
                image,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.stdout.startswith(PROJECT_PREFIX):
            ours.append(image)
    if ours:
        engine.run(["docker", "image", "rm", *ours], 120, "docker image rm")
        say(f"removed {len(ours)} untagged image(s) that test projects built")


@pytest.fixture
def project(docker: Engine, tmp_path: Path) -> Iterator[Project]:
    folder = tmp_path / "queue-ladder"
    folder.mkdir()
    # The files git keeps or would keep: no .env, no results/, no .venv (all ignored).
    listed = engine.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        60,
        "git ls-files",
    ).stdout
    for relative in filter(None, listed.split("\0")):
        source = ROOT / relative
        if source.is_file():  # a file deleted but not yet committed is listed too
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / relative)
    assert not (folder / ".env").exists() and not (folder / "results").exists()
    for path in [folder, *folder.rglob("*")]:
        os.lchown(path, OWNER_UID, OWNER_GID)
    logs = tmp_path / "logs"
    logs.mkdir()
    name = f"{PROJECT_PREFIX}{secrets.token_hex(4)}"
    say(f"compose project {name} in {folder}")
    current = Project(folder, name, logs)
    try:
        yield current
    finally:
        # Whatever happened: no container, network or volume of the project stays.
        current.down()
        remove_untagged_images()


def get(url: str, login: str | None = None) -> tuple[int, str]:
    """The status and body of a GET, with basic auth when a login is given."""
    request = urllib.request.Request(url)
    if login:
        token = base64.b64encode(login.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""


def answer(url: str, timeout_s: float = 60) -> int:
    """The status of a GET without a login, once the server answers at all."""
    deadline = time.monotonic() + timeout_s
    while (status := get(url)[0]) == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    return status


def wait_for_workers(url: str, login: str, count: int, timeout_s: float = 60) -> list[str]:
    """The workers Flower lists, once it lists count of them."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = get(f"{url}/api/workers?refresh=1", login)
        names = sorted(json.loads(body)) if status == 200 else []
        if len(names) >= count or time.monotonic() > deadline:
            return names
        time.sleep(1)


class CommandLines:
    """Every command line on this machine, as ps shows them to any user, read again and
    again while a block runs: a password must never be among them."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def watch(self) -> None:
        while not self.stopping.wait(0.5):
            for process in psutil.process_iter(["cmdline"]):
                self.seen.add(" ".join(process.info["cmdline"] or ()))

    def __enter__(self) -> CommandLines:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join()


def holding(texts: Mapping[str, str], secrets_: set[str]) -> list[str]:
    """The names of the texts in which one of the secrets shows."""
    return [name for name, text in texts.items() if any(s in text for s in secrets_)]


@pytest.mark.browser
@pytest.mark.timeout(1500)
def test_up_demo_with_nothing_set_up_first(docker: Engine, project: Project) -> None:
    """A fresh clone, no .env, no ./results: `docker compose up demo` runs the demo, its
    files the folder owner's, then leaves Flower up, behind a generated login, and says
    how to reach it and how to stop everything."""
    started = time.monotonic()
    code, output = project.compose("build", timeout_s=900)
    assert code == 0, f"docker compose build: {output[-3000:]}"
    say(f"docker compose build: {time.monotonic() - started:.1f} s")

    flower_port = procs.free_port()
    project.variables["FLOWER_PORT"] = str(flower_port)
    started = time.monotonic()
    with CommandLines() as ps:
        code, output = project.compose("up", "demo", timeout_s=900, extra={"DEMO_ARGS": "--quick"})
    say(f"docker compose up demo (--quick): {time.monotonic() - started:.1f} s, exit {code}")
    assert code == 0, output[-4000:]
    flower = f"http://127.0.0.1:{flower_port}"
    assert f"Flower shows this demo's tasks: {flower}" in output, output[-2000:]
    assert "Stop them all: docker compose down" in output

    results = project.folder / "results"
    for name in RESULTS:
        path = results / name
        assert path.is_file(), f"the demo wrote no {name}: {output[-3000:]}"
        assert (path.stat().st_uid, path.stat().st_gid) == (OWNER_UID, OWNER_GID), name
    rows = json.loads((results / "results.json").read_text())
    unverified = [(row["workload_label"], row["rung"]) for row in rows if not row["verified"]]
    assert rows and not unverified, unverified
    assert {row["rung"] for row in rows} >= {"serial", "threads", "kombu", "celery"}
    servers = json.loads((results / "servers.json").read_text())
    assert servers and all(row["ok"] for row in servers)
    # The shapes the workers reported: prefork for the sum, 8 threads in all for I/O.
    shapes = {row["workload_label"]: row["workers"] for row in rows if row["rung"] == "celery"}
    assert {w["pool"] for w in shapes["sum (CPU)"]} == {"prefork"}
    io = shapes["pipeline, 5 ms I/O per item"]
    assert {w["pool"] for w in io} == {"threads"} and sum(w["concurrency"] for w in io) == 8
    say(f"{len(rows)} runs, every one verified, in ./results owned by {OWNER_UID}:{OWNER_GID}")

    # The demo is over; Redis, the workers and Flower are not.
    running = set(project.output("ps", "--status", "running", "--services").split())
    assert running == {"redis", "worker-cpu", "worker-io", "flower"}, running
    login = project.login()
    assert login.startswith("ladder:") and len(login) > len("ladder:") + 20
    for path in ("/", "/tasks", "/api/workers"):
        assert get(f"{flower}{path}")[0] == 401, path
        assert get(f"{flower}{path}", "ladder:not-the-password")[0] == 401, path
    assert get(flower, login)[0] == 200
    workers = wait_for_workers(flower, login, 3)
    assert len(workers) == 3, workers  # one worker-cpu, two worker-io
    dom = headless(
        flower.replace("://", f"://{login}@") + "/tasks", project.logs / "chromium", "--dump-dom"
    )
    assert "Showing 1 to" in dom, dom[-2000:]
    names = set(re.findall(r"tasks\.\w+", dom))
    assert names & {"tasks.handle_item", "tasks.handle_batch", "tasks.sum_range"}, dom[-2000:]
    say(f"Flower: 401 without the login, 200 with it; workers {workers}; tasks page {names}")

    secret = project.secrets()
    texts = {
        "docker compose up": output,
        "docker compose config": project.output("config"),
        "docker compose logs": project.output("logs", "--no-color", timeout_s=120),
        "command lines (ps)": "\n".join(ps.seen),
    }
    assert holding(texts, secret) == []
    say(f"no password in {', '.join(texts)}")

    # The demo's exit code comes back with --exit-code-from (which stops the rest too);
    # the next start keeps the generated login.
    code, output = project.compose(
        "up",
        "--exit-code-from",
        "demo",
        "demo",
        timeout_s=300,
        extra={"DEMO_ARGS": "--quick --rungs nosuch"},
    )
    assert code == 2, output[-2000:]
    assert "ladder: error:" in output
    code, output = project.compose("up", "-d", "flower", timeout_s=300)
    assert code == 0, output[-2000:]
    assert project.login() == login

    project.down()
    assert project.leftovers() == {"containers": [], "networks": [], "volumes": []}
    say("docker compose down -v: no container, network or volume of the project left")
    images = ", ".join(f"{name} ({kind})" for name, kind in docker.images.items())
    say(f"on Docker Engine {docker.version}, Compose {docker.compose}, base images {images}")


def run_with_fault(project: Project, fault: list[str], items: int = 12_000) -> dict[str, object]:
    """A celery pipeline run from the demo's container, with fault run on the host once
    its workers have been at it for a few seconds; the run's JSON result."""
    argv = project.argv()
    ladder = ["ladder", "run", "--rung", "celery", "--workload", "pipeline", "--json"]
    ladder += ["--items", str(items), "--consumers", "12", "--work-ms", "5"]
    log = project.logs / "run.log"
    with open(log, "ab") as errors:
        run = subprocess.Popen(
            [*argv, "run", "--rm", "-T", "demo", *ladder],
            cwd=project.folder,
            env=project.env({}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    try:
        time.sleep(8)  # the container started and the run under way
        assert run.poll() is None, log.read_text()[-2000:]
        engine.run(fault, 120, " ".join(fault[:3]))
        say(f"{' '.join(fault)}: done mid-run")
        stdout, _ = run.communicate(timeout=300)
    finally:
        procs.stop(run)  # type: ignore[arg-type]
    assert run.returncode == 0, f"{stdout[-2000:]} {log.read_text()[-2000:]}"
    return dict(json.loads(stdout))


@pytest.mark.timeout(1500)
def test_env_overrides_and_scaled_workers_lose_nothing_to_faults(
    docker: Engine, project: Project
) -> None:
    """.env sets the credentials and a short visibility timeout; three I/O workers; one is
    killed mid-run, then Redis is restarted mid-run: nothing is lost either time."""
    given = {
        "REDIS_PASSWORD": secrets.token_hex(20),
        "FLOWER_BASIC_AUTH": f"me:{secrets.token_hex(10)}",
    }
    flower_port = procs.free_port()
    settings = {**given, "FLOWER_PORT": str(flower_port), "LADDER_VISIBILITY_TIMEOUT_S": "3"}
    # A variable of compose's in the shell would win over .env: none is set here.
    (project.folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    os.lchown(project.folder / ".env", OWNER_UID, OWNER_GID)
    code, output = project.compose("build", timeout_s=900)
    assert code == 0, f"docker compose build: {output[-3000:]}"
    code, output = project.compose(
        "up", "-d", "--scale", "worker-io=3", "worker-cpu", "worker-io", "flower", timeout_s=300
    )
    assert code == 0, output[-3000:]

    flower = f"http://127.0.0.1:{flower_port}"
    assert project.login() == given["FLOWER_BASIC_AUTH"]
    assert answer(f"{flower}/api/workers") == 401
    workers = wait_for_workers(flower, given["FLOWER_BASIC_AUTH"], 4)
    assert len(workers) == 4, workers  # one worker-cpu, three worker-io
    assert holding({"docker compose config": project.output("config")}, set(given.values())) == []
    say(f"the .env login works; Flower lists {len(workers)} workers; config shows no password")

    killed = project.containers("worker-io")[1]
    result = run_with_fault(project, ["docker", "kill", killed])
    say(f"one of 3 worker-io containers killed mid-run: {summary(result)}")
    assert result["verified"] and result["lost"] == 0, result

    result = run_with_fault(project, [*project.argv(), "restart", "redis"])
    say(f"docker compose restart redis mid-run: {summary(result)}")
    assert result["verified"] and result["lost"] == 0, result

    project.down()
    assert project.leftovers() == {"containers": [], "networks": [], "volumes": []}


def summary(result: Mapping[str, object]) -> str:
    fields = ("verified", "lost", "duplicates", "redelivered", "resent", "seconds")
    return ", ".join(f"{name} {result.get(name)}" for name in fields)
