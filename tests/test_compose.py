"""compose.yaml, proven without a Docker engine.

`docker compose config` (or Debian's `docker-compose config`) must accept the file, and
what it resolves the file to must keep Redis private and Flower on loopback. Then every
service's command, read from that resolved config, runs here as a local process, the
host name `redis` pointed at a private redis-server on loopback, and the demo must end
verified: the commands in compose.yaml are proven, not hoped.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import pytest
import redis

from consumers.celery_workers import ping_workers
from ladder import procs
from ladder.stack import redis_binary

try:
    import yaml
except ImportError:  # it comes with the dev extra; without it, need() says what is missing
    yaml = None

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
SERVICES = {"redis", "worker", "flower", "demo"}
APP_SERVICES = SERVICES - {"redis"}
# Short enough for a test, and every kind of rung: local, kombu, Celery on the workers.
DEMO_RUNGS = ("serial", "threads", "kombu", "celery")
DEMO_ARGS = f"--quick --rungs {','.join(DEMO_RUNGS)}"

T = TypeVar("T")


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
    env = {name: value for name, value in os.environ.items() if name not in compose_variables()}
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
    """compose.yaml as compose resolves it, and the variables it was given."""

    values: dict[str, str]
    services: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> Resolved:
    values = {
        "REDIS_PASSWORD": secrets.token_hex(16),
        "FLOWER_BASIC_AUTH": f"ladder:{secrets.token_hex(8)}",
        "FLOWER_PORT": str(procs.free_port()),
        "DEMO_ARGS": DEMO_ARGS,
        "WORKER_LOGLEVEL": "INFO",
        "LADDER_UID": str(os.getuid()),
        "LADDER_GID": str(os.getgid()),
    }
    done = compose_config(values, tmp_path_factory.mktemp("compose"))
    assert done.returncode == 0, f"compose config refused compose.yaml: {done.stderr}"
    if yaml is None:
        need("pyyaml, to read the output of compose config (the dev extra)")
    return Resolved(values, yaml.safe_load(done.stdout)["services"])


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


def with_option(args: list[str], name: str, value: str) -> list[str]:
    """args with the value of option name replaced."""
    assert option(args, name) is not None, f"{name} not in {args}"
    out = list(args)
    for index, arg in enumerate(out):
        if arg.startswith(f"{name}="):
            out[index] = f"{name}={value}"
        elif arg == name:
            out[index + 1] = value
    return out


@pytest.mark.timeout(60)
def test_compose_config_accepts_the_file(resolved: Resolved) -> None:
    assert set(resolved.services) == SERVICES


@pytest.mark.timeout(60)
def test_redis_is_private_durable_and_asks_for_the_password(resolved: Resolved) -> None:
    service = resolved.services["redis"]
    assert not service.get("ports"), "Redis must not be published on the host"
    assert "network_mode" not in service
    command = argv(service["command"])
    assert option(command, "--requirepass") == resolved.values["REDIS_PASSWORD"]
    assert option(command, "--appendonly") == "yes"
    assert "redis-cli" in " ".join(service["healthcheck"]["test"])
    # Data in a named volume, not in the container nor in a folder of the host.
    assert not mounts(service)["/data"].startswith("/")


@pytest.mark.timeout(60)
def test_flower_is_published_on_loopback_only_and_asks_for_a_login(resolved: Resolved) -> None:
    service = resolved.services["flower"]
    ports = [published(port) for port in service["ports"]]
    assert ports
    for host_ip, host_port, container_port in ports:
        assert host_ip == "127.0.0.1"
        assert host_port == resolved.values["FLOWER_PORT"]
        assert container_port == option(argv(service["command"]), "--port")
    assert service["environment"]["FLOWER_BASIC_AUTH"] == resolved.values["FLOWER_BASIC_AUTH"]
    for name in SERVICES - {"flower"}:
        assert not resolved.services[name].get("ports"), f"{name} must not be published"


@pytest.mark.timeout(60)
def test_workers_scale_and_everything_waits_for_a_healthy_redis(resolved: Resolved) -> None:
    worker = resolved.services["worker"]
    # Any of these would make `docker compose up --scale worker=4` clash.
    for fixed in ("container_name", "hostname", "ports"):
        assert fixed not in worker
    for name in APP_SERVICES:
        depends_on = resolved.services[name]["depends_on"]
        assert depends_on["redis"]["condition"] == "service_healthy", name
    assert "worker" in resolved.services["demo"]["depends_on"]


@pytest.mark.timeout(60)
def test_the_demo_writes_results_through_a_bind_volume(resolved: Resolved) -> None:
    # `ladder demo` writes to ./results in its working folder, the image's WORKDIR.
    workdirs = re.findall(r"^WORKDIR\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert mounts(resolved.services["demo"])[f"{workdirs[-1]}/results"] == str(ROOT / "results")


@pytest.mark.timeout(10)
def test_the_image_copies_every_package_it_installs() -> None:
    """`pip install .` in the image fails on a package pyproject names and no COPY brought."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(project["tool"]["setuptools"]["packages"])
    copied = re.findall(r"^COPY\s+(\w+)/\s", (ROOT / "Dockerfile").read_text(), re.M)
    assert packages <= set(copied)


@pytest.mark.timeout(60)
def test_the_image_runs_as_a_user_not_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["REDIS_PASSWORD", "FLOWER_BASIC_AUTH"])
def test_a_missing_secret_is_a_clear_error(name: str, tmp_path: Path) -> None:
    values = {"REDIS_PASSWORD": "a-password", "FLOWER_BASIC_AUTH": "user:password"}
    del values[name]
    done = compose_config(values, tmp_path)
    assert done.returncode != 0
    assert f"set {name}" in done.stderr


@pytest.mark.timeout(60)
def test_env_example_documents_every_variable_and_works(tmp_path: Path) -> None:
    example = (ROOT / ".env.example").read_text()
    values = dict(re.findall(r"^(\w+)=(.*)$", example, re.M))
    assert set(values) == compose_variables()
    done = compose_config(values, tmp_path)
    assert done.returncode == 0, done.stderr


# The services as local processes.


def on_loopback(value: str, ports: Mapping[str, int]) -> str:
    """A URL naming a compose service (redis://:pw@redis:6379/0), pointed at its stand-in
    on 127.0.0.1; any other value as it is."""
    parts = urlsplit(value)
    if not parts.scheme or parts.hostname not in ports:
        return value
    userinfo, at, _ = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo}{at}127.0.0.1:{ports[parts.hostname]}").geturl()


def local_env(service: Mapping[str, Any], ports: Mapping[str, int]) -> dict[str, str]:
    """This machine's environment with the service's on top, as the container has it."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CELERY_", "FLOWER_", "REDISCLI_"))
    }
    # The image has the project's commands on PATH: here, they are in our virtualenv.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for name, value in (service.get("environment") or {}).items():
        env[name] = on_loopback(str(value), ports)
    return env


def wait_until(probe: Callable[[], T], timeout_s: float, what: str) -> T:
    """probe's first true answer, asked again and again for up to timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not (answer := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout_s:.0f} s")
        time.sleep(0.2)
    return answer


def http_get(url: str, auth: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""


@dataclass
class Local:
    """The services' processes: started in sessions of their own, stopped on close."""

    folder: Path
    cleanup: contextlib.ExitStack

    def start(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        # The working folder stands for the image's WORKDIR, /app.
        with open(self.folder / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                args,
                cwd=self.folder,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # procs.stop: SIGTERM, then SIGKILL to whatever is left of the process's session.
        self.cleanup.callback(procs.stop, process)
        return process

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def alive(self, name: str, process: subprocess.Popen[bytes]) -> bool:
        assert process.poll() is None, f"{name} exited: {self.log(name)[-2000:]}"
        return True


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    with contextlib.ExitStack() as cleanup:
        yield Local(tmp_path, cleanup)


@pytest.mark.timeout(150)
def test_every_service_command_runs_as_a_local_process(resolved: Resolved, local: Local) -> None:
    services, values = resolved.services, resolved.values
    redis_port = procs.free_port()
    ports = {"redis": redis_port}

    # redis: the image's redis-server is ours, on a free loopback port, in a temp folder.
    redis_args = argv(services["redis"]["command"])
    assert redis_args[0] == "redis-server"
    server = redis_binary()
    redis_env = local_env(services["redis"], ports)
    loopback = ["--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(local.folder)]
    local.start("redis", [server, *redis_args[1:], *loopback], redis_env)

    # Its healthcheck, as compose runs it. redis-cli has no variable for the port (in the
    # container it is the default one), so it is given here as an option.
    kind, check = services["redis"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    cli = shlex.quote(str(Path(server).with_name("redis-cli")))
    check = check.replace("redis-cli", f"{cli} -p {redis_port}", 1)

    def healthy(env: Mapping[str, str]) -> bool:
        done = subprocess.run(["sh", "-c", check], env=env, capture_output=True, timeout=10)
        return done.returncode == 0

    # condition: service_healthy
    wait_until(lambda: healthy(redis_env), 10, "redis healthy")
    assert not healthy({**redis_env, "REDISCLI_AUTH": "not-the-password"})
    url = f"redis://:{values['REDIS_PASSWORD']}@127.0.0.1:{redis_port}/0"
    with redis.Redis.from_url(url) as client:
        assert client.config_get("appendonly") == {"appendonly": "yes"}

    worker_env = local_env(services["worker"], ports)
    assert worker_env["CELERY_BROKER_URL"] == url
    worker = local.start("worker", argv(services["worker"]["command"]), worker_env)

    # Flower on this machine's loopback and on the published port: the container's
    # 0.0.0.0:5555 is what the host sees at 127.0.0.1:FLOWER_PORT.
    flower_port = values["FLOWER_PORT"]
    flower_args = with_option(argv(services["flower"]["command"]), "--address", "127.0.0.1")
    flower_args = with_option(flower_args, "--port", flower_port)
    flower = local.start("flower", flower_args, local_env(services["flower"], ports))
    flower_url = f"http://127.0.0.1:{flower_port}"
    login = values["FLOWER_BASIC_AUTH"]

    # compose only waits for the worker to start; the demo wants an answer from it.
    def answering() -> list[str]:
        local.alive("worker", worker)
        return ping_workers(url, url, timeout_s=1.0)

    names = wait_until(answering, 60, "a worker answering")
    wait_until(
        lambda: (
            local.alive("flower", flower)
            and http_get(f"{flower_url}/healthcheck", login) == (200, "OK")
        ),
        30,
        "flower's /healthcheck",
    )

    demo = local.start(
        "demo", argv(services["demo"]["command"]), local_env(services["demo"], ports)
    )
    try:
        code = demo.wait(timeout=100)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the demo did not finish: {local.log('demo')[-2000:]}") from None
    output = local.log("demo")
    assert code == 0, output[-3000:]
    assert values["REDIS_PASSWORD"] not in output
    # The Celery runs were served by the worker service, not by workers of the demo's own.
    for task in ("tasks.sum_range", "tasks.handle_item", "tasks.handle_batch"):
        assert f"Task {task}[" in local.log("worker")

    results = json.loads((local.folder / "results" / "results.json").read_text())
    assert {row["rung"] for row in results} == set(DEMO_RUNGS)
    assert len({row["workload_label"] for row in results}) == 4
    servers = json.loads((local.folder / "results" / "servers.json").read_text())
    assert servers and all(row["ok"] for row in servers)
    unverified = [(row["workload_label"], row["rung"]) for row in results if not row["verified"]]
    assert not unverified

    # Flower serves the compose workers, and its API asks for the login.
    assert http_get(f"{flower_url}/api/workers")[0] == 401
    status, body = http_get(f"{flower_url}/api/workers?refresh=1", login)
    assert status == 200
    assert set(names) <= set(json.loads(body))
