"""compose.yaml and its scripts, proven without a Docker engine.

`docker compose config` (or Debian's `docker-compose config`) must accept the file with
nothing set, and what it resolves the file to must keep Redis private, Flower on
loopback, and every password out of it. docker/setup.py, the one-shot service that makes
the credentials, runs here as a local process, and a real redis-server takes the
redis.conf it writes. make test-compose (tests/test_compose_engine.py) runs it all on a
real Docker Engine.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis

from core.jobs import PipelineJob
from core.settings import Settings
from core.stack import redis_binary
from ladder.demo import workloads
from tests.support.redis_servers import RedisServers

try:
    import yaml
except ImportError:  # it comes with the dev extra; without it, need() says what is missing
    yaml = None

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
SETUP = ROOT / "docker" / "setup.py"
SERVICES = {"setup", "redis", "worker-cpu", "worker-io", "flower", "demo"}
APP_SERVICES = {"worker-cpu", "worker-io", "flower", "demo"}
# What .env may set that compose does not interpolate: setup.py reads them from .env.
CREDENTIALS = {"REDIS_PASSWORD", "FLOWER_BASIC_AUTH"}


def need(what: str) -> NoReturn:
    """Missing tooling: a failure in CI, where .ci/run installs it; a skip elsewhere."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI must provide {what}")
    pytest.skip(f"needs {what}")


def compose_tool() -> list[str]:
    """`docker compose` (v2) if the docker client has it, else Debian's `docker-compose`."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    need("`docker compose` or `docker-compose` (Debian: apt-get install docker-compose)")


def compose_variables() -> set[str]:
    """The names compose.yaml interpolates: ${NAME}, ${NAME:-default}, ${NAME:?error}."""
    return set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE_FILE.read_text()))


def compose_config(values: Mapping[str, str], folder: Path) -> subprocess.CompletedProcess[str]:
    """`config` on compose.yaml with exactly these variables: no .env, none from our shell."""
    env_file = folder / "compose.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    # A variable in the shell wins over the env file in compose: keep ours out of the way.
    names = compose_variables() | CREDENTIALS
    env = {name: value for name, value in os.environ.items() if name not in names}
    return subprocess.run(
        [
            *compose_tool(),
            "--project-directory",
            str(ROOT),
            "--file",
            str(COMPOSE_FILE),
            "--env-file",
            str(env_file),
            "config",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@dataclass(frozen=True)
class Resolved:
    """compose.yaml as compose resolves it with nothing set, and its whole output."""

    services: dict[str, dict[str, Any]]
    text: str


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> Resolved:
    done = compose_config({}, tmp_path_factory.mktemp("compose"))
    assert done.returncode == 0, (
        f"compose config refused compose.yaml with nothing set: {done.stderr}"
    )
    if yaml is None:
        need("pyyaml, to read the output of compose config (the dev extra)")
    return Resolved(yaml.safe_load(done.stdout)["services"], done.stdout)


# compose v1 prints the short forms of commands, ports and volumes; v2 the long ones.


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


def published(port: str | dict[str, Any]) -> tuple[str, str, str]:
    """(host address, host port, container port) of a `ports:` entry."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), str(port.get("published", "")), str(port["target"])
    fields = port.split("/")[0].split(":")
    fields = [""] * (3 - len(fields)) + fields
    return fields[0], fields[1], fields[2]


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Each volume's target in the container -> its source (a host path or a volume name)."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            found[target] = source
    return found


def option(args: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in args."""
    for index, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.partition("=")[2]
        if arg == name and index + 1 < len(args):
            return args[index + 1]
    return None


@pytest.mark.docker
@pytest.mark.timeout(60)
def test_compose_config_takes_the_file_with_nothing_set(resolved: Resolved) -> None:
    assert set(resolved.services) == SERVICES


@pytest.mark.docker
@pytest.mark.timeout(60)
def test_no_password_is_in_the_resolved_file_even_when_env_sets_them(tmp_path: Path) -> None:
    given = {"REDIS_PASSWORD": secrets.token_hex(16), "FLOWER_BASIC_AUTH": "me:" + "x" * 20}
    done = compose_config(given, tmp_path)
    assert done.returncode == 0, done.stderr
    assert given["REDIS_PASSWORD"] not in done.stdout
    assert "x" * 20 not in done.stdout
    assert not re.search(r"(?i)password|requirepass|://[^@\s]*:[^@\s]+@", done.stdout)


@pytest.mark.docker
@pytest.mark.timeout(60)
def test_redis_is_private_and_durable_and_reads_its_password_from_a_file(
    resolved: Resolved,
) -> None:
    service = resolved.services["redis"]
    assert not service.get("ports"), "Redis must not be published on the host"
    assert "network_mode" not in service
    command = argv(service["command"])
    assert command[:2] == ["redis-server", "/run/ladder/redis.conf"]
    assert option(command, "--requirepass") is None
    assert option(command, "--appendonly") == "yes"
    assert "redis-cli" in " ".join(service["healthcheck"]["test"])
    # Data in a named volume, not in the container nor in a folder of the host.
    assert not mounts(service)["/data"].startswith("/")


@pytest.mark.docker
@pytest.mark.timeout(60)
def test_flower_is_published_on_loopback_only(resolved: Resolved) -> None:
    service = resolved.services["flower"]
    ports = [published(port) for port in service["ports"]]
    assert ports
    for host_ip, host_port, container_port in ports:
        assert host_ip == "127.0.0.1"
        assert host_port == "5555"
        assert container_port == option(argv(service["command"]), "--port")
    for name in SERVICES - {"flower"}:
        assert not resolved.services[name].get("ports"), f"{name} must not be published"


@pytest.mark.docker
@pytest.mark.timeout(60)
def test_workers_are_routed_by_kind_and_io_slots_match_the_demos_consumers(
    resolved: Resolved,
) -> None:
    cpu = argv(resolved.services["worker-cpu"]["command"])
    io = argv(resolved.services["worker-io"]["command"])
    assert set(option(cpu, "-Q").split(",")) == {"cpu", "celery"}
    assert option(cpu, "--pool") in (None, "prefork")  # one process per core by default
    assert option(io, "-Q") == "io" and option(io, "--pool") == "threads"
    replicas = resolved.services["worker-io"]["deploy"]["replicas"]
    slots = int(replicas) * int(option(io, "--concurrency") or 0)
    (io_pipeline,) = [w.job for w in workloads(quick=False) if "I/O" in w.label]
    assert isinstance(io_pipeline, PipelineJob)
    assert slots == io_pipeline.consumers
    # Any of these would make `docker compose up --scale worker-io=3` clash.
    for name in ("worker-cpu", "worker-io"):
        for fixed in ("container_name", "hostname", "ports"):
            assert fixed not in resolved.services[name], (name, fixed)


@pytest.mark.docker
@pytest.mark.timeout(60)
def test_every_service_waits_for_the_credentials_and_a_healthy_redis(resolved: Resolved) -> None:
    for name in SERVICES - {"setup"}:
        depends_on = resolved.services[name]["depends_on"]
        assert depends_on["setup"]["condition"] == "service_completed_successfully", name
    for name in APP_SERVICES:
        depends_on = resolved.services[name]["depends_on"]
        assert depends_on["redis"]["condition"] == "service_healthy", name
        assert mounts(resolved.services[name])["/run/ladder"] == "credentials"
    assert {"worker-cpu", "worker-io", "flower"} <= set(resolved.services["demo"]["depends_on"])


@pytest.mark.docker
@pytest.mark.timeout(60)
def test_the_demo_writes_results_through_a_bind_volume(resolved: Resolved) -> None:
    # `ladder demo` writes to ./results in its working folder, the image's WORKDIR.
    workdirs = re.findall(r"^WORKDIR\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert mounts(resolved.services["demo"])[f"{workdirs[-1]}/results"] == str(ROOT / "results")
    assert mounts(resolved.services["setup"])["/project"] == str(ROOT)


@pytest.mark.timeout(10)
def test_the_image_copies_every_package_it_installs() -> None:
    """`pip install .` in the image fails on a package pyproject names and no COPY brought."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # A subpackage (ladder.cli) comes with the folder of its top package.
    packages = {name.split(".")[0] for name in project["tool"]["setuptools"]["packages"]}
    copied = re.findall(r"^COPY\s+(\w+)/\s", (ROOT / "Dockerfile").read_text(), re.M)
    assert packages | {"docker"} <= set(copied)


@pytest.mark.docker
@pytest.mark.timeout(60)
def test_the_base_images_are_named_in_compose_alone(resolved: Resolved) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"^FROM\s+(\S+)", dockerfile, re.M) == ["${PYTHON_IMAGE}"]
    assert yaml is not None
    named = yaml.safe_load(COMPOSE_FILE.read_text())["x-base-images"]
    assert resolved.services["redis"]["image"] == named["redis"]
    for name in ("setup", *APP_SERVICES):
        assert resolved.services[name]["build"]["args"]["PYTHON_IMAGE"] == named["python"]
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}


@pytest.mark.docker
@pytest.mark.timeout(60)
def test_env_example_documents_every_setting_and_works(tmp_path: Path) -> None:
    example = (ROOT / ".env.example").read_text()
    values = dict(re.findall(r"^#?(\w+)=(.*)$", example, re.M))
    assert set(values) == compose_variables() | CREDENTIALS
    done = compose_config({k: v for k, v in values.items() if k not in CREDENTIALS}, tmp_path)
    assert done.returncode == 0, done.stderr


# docker/setup.py as a local process: the project folder and the volume are folders here.


@dataclass(frozen=True)
class Setup:
    project: Path
    credentials: Path

    def run(self) -> subprocess.CompletedProcess[str]:
        folders = ["--project", str(self.project), "--credentials", str(self.credentials)]
        return subprocess.run(
            [sys.executable, str(SETUP), *folders],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def read(self, name: str) -> str:
        return (self.credentials / name).read_text().strip()

    def exported(self) -> dict[str, str]:
        """The variables the image's entrypoint exports, as sh reads the env file."""
        done = subprocess.run(
            ["sh", "-c", f"set -a; . {shlex.quote(str(self.credentials / 'env'))}; env -0"],
            capture_output=True,
            text=True,
            env={},
            timeout=10,
            check=True,
        )
        pairs = (line.partition("=") for line in done.stdout.split("\0") if line)
        return {name: value for name, _, value in pairs}


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    project, credentials = tmp_path / "project", tmp_path / "credentials"
    project.mkdir()
    credentials.mkdir()
    return Setup(project, credentials)


@pytest.mark.timeout(60)
def test_setup_makes_the_credentials_once_and_keeps_them(setup: Setup) -> None:
    done = setup.run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"./results owned by {os.getuid()}:{os.getgid()}")
    password, login = setup.read("redis-password"), setup.read("flower-login")
    user, _, flower_password = login.partition(":")
    assert len(password) >= 32 and user == "ladder" and len(flower_password) >= 20
    assert password not in done.stdout + done.stderr
    assert flower_password not in done.stdout + done.stderr
    exported = setup.exported()
    assert exported["FLOWER_BASIC_AUTH"] == login
    assert exported["REDISCLI_AUTH"] == password
    assert exported["CELERY_BROKER_URL"] == f"redis://:{password}@redis:6379/0"
    assert exported["CELERY_RESULT_BACKEND"] == exported["CELERY_BROKER_URL"]
    assert setup.run().returncode == 0
    assert (setup.read("redis-password"), setup.read("flower-login")) == (password, login)


@pytest.mark.timeout(60)
def test_setup_takes_the_credentials_from_env_and_encodes_them(setup: Setup) -> None:
    password = 'p@ss/w"rd #1\\'
    (setup.project / ".env").write_text(
        f"# mine\nFLOWER_PORT=5555\nREDIS_PASSWORD='{password}'\nexport FLOWER_BASIC_AUTH=a:b,c:d\n"
    )
    done = setup.run()
    assert done.returncode == 0, done.stderr
    assert "Redis password .env, Flower login .env" in done.stdout
    exported = setup.exported()
    assert exported["REDISCLI_AUTH"] == password
    assert exported["FLOWER_BASIC_AUTH"] == "a:b,c:d"
    # The URL as ladder takes it: the password percent-encoded.
    url = exported["CELERY_BROKER_URL"]
    assert Settings.load(url).broker_url == url
    assert redis.Redis.from_url(url).connection_pool.connection_kwargs["password"] == password


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "line",
    ["REDIS_PASSWORD=' padded'", "FLOWER_BASIC_AUTH=nocolon", "FLOWER_BASIC_AUTH=user:"],
)
def test_setup_refuses_a_credential_it_cannot_use_in_one_line(setup: Setup, line: str) -> None:
    (setup.project / ".env").write_text(line + "\n")
    done = setup.run()
    assert done.returncode == 2
    assert done.stderr.startswith("setup: error:") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(60)
@pytest.mark.skipif(os.geteuid() != 0, reason="handing a folder to another user needs root")
def test_setup_hands_results_to_the_folders_owner(setup: Setup) -> None:
    owner = (2345, 2346)
    os.chown(setup.project, *owner)
    (setup.project / "results").mkdir()
    (setup.project / "results" / "results.json").write_text("{}")  # left by a root run
    assert setup.run().returncode == 0
    for path in (setup.project / "results", setup.project / "results" / "results.json"):
        assert (path.stat().st_uid, path.stat().st_gid) == owner
    assert setup.read("owner") == "2345:2346"


@pytest.mark.docker
@pytest.mark.timeout(60)
def test_redis_takes_the_written_config_and_the_healthcheck_tells_the_password(
    setup: Setup, resolved: Resolved, redis_servers: RedisServers
) -> None:
    assert setup.run().returncode == 0
    command = argv(resolved.services["redis"]["command"])
    password = setup.read("redis-password")
    config = setup.credentials / "redis.conf"
    with redis_servers.running(
        "compose-redis", config=config, args=command[2:], password=password
    ) as server:
        port = server.port
        client = redis.Redis(port=port, password=password)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="not-it").ping()
        # The healthcheck, as compose runs it, on this volume and port.
        kind, check = resolved.services["redis"]["healthcheck"]["test"]
        assert kind == "CMD-SHELL"
        cli = shlex.quote(str(Path(redis_binary()).with_name("redis-cli")))
        check = check.replace("/run/ladder", str(setup.credentials))
        check = check.replace("redis-cli", f"{cli} -p {port}", 1)
        assert subprocess.run(["sh", "-c", check], timeout=10).returncode == 0
        (setup.credentials / "env").write_text("REDISCLI_AUTH=not-it\n")
        assert subprocess.run(["sh", "-c", check], timeout=10).returncode != 0
