"""compose.yaml on a real Docker Engine: the image built, the demo run, nothing left behind.

Marked `engine`, so plain `make test` leaves it out: `make test-compose` runs it, as root,
on the engine and base images that tests/engine.py sets up. Each test works on a copy of
the repository as git has it (no .env, no results/), under a compose project name of its
own, and takes the project down (`down -v`) however it ends.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from ladder import procs
from tests import engine
from tests.engine import ROOT, say

pytestmark = pytest.mark.engine

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


def set_up_as_compose_asks(folder: Path, uid: int, gid: int) -> dict[str, str]:
    """What today's compose.yaml asks of a user before `up`: a .env made from .env.example
    with passwords of its own and the user's ids, and a ./results the user owns. Returns
    the secrets, which no output may show."""
    secret = {
        "REDIS_PASSWORD": secrets.token_hex(24),
        "FLOWER_BASIC_AUTH": f"ladder:{secrets.token_hex(12)}",
    }
    values = {
        **secret,
        "FLOWER_PORT": str(procs.free_port()),
        "LADDER_UID": str(uid),
        "LADDER_GID": str(gid),
    }
    text = (folder / ".env.example").read_text()
    for name, value in values.items():
        text, found = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
        assert found == 1, f".env.example sets no {name}"
    (folder / ".env").write_text(text)
    (folder / "results").mkdir()
    os.chown(folder / "results", uid, gid)
    return secret


@dataclass
class Project:
    """A compose project on a copy of the repository, under a name of its own."""

    folder: Path
    name: str
    logs: Path

    def env(self, extra: Mapping[str, str]) -> dict[str, str]:
        # A variable in our environment would win over .env: keep compose's own out.
        names = compose_variables(self.folder)
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in names and not key.startswith("COMPOSE_")
        }
        return {**env, **extra}

    def compose(
        self, *args: str, timeout_s: float, extra: Mapping[str, str] | None = None
    ) -> tuple[int, str]:
        """`docker compose` on this project: its exit code and its output (also in a log)."""
        argv = ["docker", "compose", "-p", self.name, "--project-directory", str(self.folder)]
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
    # The repository as git has it: no .env, no results/, no .venv.
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", "HEAD"], stdout=subprocess.PIPE)
    try:
        engine.run(["tar", "-x", "-C", str(folder)], 120, "tar -x", stdin=archive.stdout)
    finally:
        if archive.stdout:
            archive.stdout.close()
        assert archive.wait() == 0, "git archive HEAD failed"
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


@pytest.mark.timeout(1500)
def test_the_demo_runs_verified_and_down_leaves_nothing(docker: Engine, project: Project) -> None:
    secret = set_up_as_compose_asks(project.folder, OWNER_UID, OWNER_GID)

    started = time.monotonic()
    code, output = project.compose("build", timeout_s=900)
    assert code == 0, f"docker compose build: {output[-3000:]}"
    say(f"docker compose build: {time.monotonic() - started:.1f} s")

    started = time.monotonic()
    code, output = project.compose(
        "up",
        "--build",
        "--exit-code-from",
        "demo",
        "demo",
        timeout_s=600,
        extra={"DEMO_ARGS": "--quick"},
    )
    say(
        f"docker compose up --exit-code-from demo demo (--quick): "
        f"{time.monotonic() - started:.1f} s, exit {code}"
    )
    assert code == 0, output[-4000:]
    for value in secret.values():
        assert value not in output

    results = project.folder / "results"
    for name in RESULTS:
        path = results / name
        assert path.is_file(), f"the demo wrote no {name}: {output[-3000:]}"
        assert (path.stat().st_uid, path.stat().st_gid) == (OWNER_UID, OWNER_GID), name
    rows = json.loads((results / "results.json").read_text())
    assert rows
    unverified = [(row["workload_label"], row["rung"]) for row in rows if not row["verified"]]
    assert not unverified, unverified
    assert {row["rung"] for row in rows} >= {"serial", "threads", "kombu", "celery"}
    servers = json.loads((results / "servers.json").read_text())
    assert servers and all(row["ok"] for row in servers)
    say(f"{len(rows)} runs, every one verified; {', '.join(RESULTS)} in ./results")

    project.down()
    assert project.leftovers() == {"containers": [], "networks": [], "volumes": []}
    say("docker compose down -v: no container, network or volume of the project left")
    images = ", ".join(f"{name} ({kind})" for name, kind in docker.images.items())
    say(f"on Docker Engine {docker.version}, Compose {docker.compose}, base images {images}")
