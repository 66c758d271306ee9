"""A real Docker Engine for the compose tests: dockerd, Compose v2 and the base images.

Each step says what it did, on stdout (`make test-compose` runs pytest with -s):

- the engine: Debian's `docker.io`. If no engine answers, dockerd is started here, its
  log in a file, and stopped at the end: only what was started here is stopped.
- Compose v2: Debian bookworm's `docker-compose` is the old v1; trixie's (2.26) holds a
  binary that works as the CLI plugin. It is fetched with `apt-get download` against a
  trixie source list kept in a temporary folder, and copied to the plugin folder.
- the base images, by the names the Dockerfile and compose.yaml give: kept when present,
  else pulled, else, where no registry answers, stand-ins of the same names built from
  Debian's packages (debootstrap bookworm). They carry this machine's CA bundle, since
  HTTPS to the package registries may pass a proxy that it alone trusts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

from core import procs

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
PLUGIN = Path("/usr/local/lib/docker/cli-plugins/docker-compose")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# The label that tells a stand-in from a pulled image, in a later run.
STAND_IN_LABEL = "org.queue-ladder.stand-in"
STAND_IN_PACKAGES = ("python3", "python3-pip", "python3-venv", "passwd", "ca-certificates")
PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"


class EngineError(Exception):
    """A step of the set-up failed; the message says which and why."""


def say(message: str) -> None:
    print(f"engine: {message}", flush=True)


def run(
    args: Sequence[str],
    timeout_s: float,
    what: str,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: IO[bytes] | None = None,
) -> subprocess.CompletedProcess[str]:
    """args, which must succeed within timeout_s; else an EngineError with their output."""
    try:
        done = subprocess.run(
            list(args),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EngineError(f"{what}: no answer within {timeout_s:.0f} s") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-2000:]
        raise EngineError(f"{what} failed (exit {done.returncode}): {output}")
    return done


def engine_answers() -> bool:
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:  # an engine starting, or stuck: not an answer
        return False
    return done.returncode == 0


def server_version() -> str:
    done = run(["docker", "version", "--format", "{{.Server.Version}}"], 30, "docker version")
    return done.stdout.strip()


@contextlib.contextmanager
def docker_engine(folder: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """An engine that answers, for the duration; yields its version. One that already
    answers is used as it is; else dockerd is started (its log in folder) and stopped after."""
    if engine_answers():
        say(f"Docker Engine {server_version()} answers already: using it")
        yield server_version()
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise EngineError("no dockerd on PATH (Debian: apt-get install docker.io)")
    log = folder / "dockerd.log"
    started = time.monotonic()
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [dockerd, "--storage-driver=overlay2"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = started + timeout_s
        while not engine_answers():
            if process.poll() is not None or time.monotonic() > deadline:
                raise EngineError(f"dockerd did not start: {procs.tail(log)}")
            time.sleep(0.5)
        version = server_version()
        say(
            f"started dockerd (pid {process.pid}), Docker Engine {version}, in "
            f"{time.monotonic() - started:.1f} s; its log: {log}"
        )
        yield version
    finally:
        # SIGTERM lets dockerd stop its containerd; SIGKILL then ends whatever is left.
        procs.stop(process, timeout_s=60)
        say(f"stopped the dockerd started here (pid {process.pid})")


def compose_version() -> str | None:
    """The version `docker compose` reports, or None if the client has no such command."""
    done = subprocess.run(
        ["docker", "compose", "version", "--short"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout.strip().removeprefix("v") if done.returncode == 0 else None


def apt_options(folder: Path, sources: str) -> list[str]:
    """apt options that read only `sources` and keep every list and download in folder,
    so that this machine's own apt set-up is left as it is."""
    (folder / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (folder / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (folder / "debian.sources").write_text(sources)
    settings = {
        "Dir::Etc::sourcelist": folder / "debian.sources",
        "Dir::Etc::sourceparts": "-",
        "Dir::State::Lists": folder / "lists",
        "Dir::Cache": folder / "cache",
        # The folder is root's: apt's own user could not write there.
        "APT::Sandbox::User": "root",
    }
    return [arg for name, value in settings.items() for arg in ("-o", f"{name}={value}")]


def compose_v2() -> str:
    """`docker compose` at version 2, installed from Debian trixie's package if need be."""
    version = compose_version()
    if version and version.startswith("2."):
        say(f"Compose {version} is there already")
        return version
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="compose-") as scratch:
        folder = Path(scratch)
        sources = (
            f"Types: deb\nURIs: {DEBIAN_MIRROR}\nSuites: trixie\nComponents: main\n"
            f"Signed-By: {DEBIAN_KEYRING}\n"
        )
        options = apt_options(folder, sources)
        run(["apt-get", *options, "update"], 300, "apt-get update (trixie)")
        run(
            ["apt-get", *options, "download", "docker-compose"], 300, "apt-get download", cwd=folder
        )
        (package,) = folder.glob("docker-compose_*.deb")
        run(["dpkg-deb", "-x", str(package), str(folder / "x")], 120, "dpkg-deb -x")
        (binary,) = (folder / "x").rglob("cli-plugins/docker-compose")
        PLUGIN.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(binary, PLUGIN)
        PLUGIN.chmod(0o755)
        name = package.name
    version = compose_version()
    if not (version and version.startswith("2.")):
        raise EngineError(f"docker compose reports {version!r} after installing {PLUGIN}")
    say(
        f"installed Compose {version} from Debian trixie's {name} as {PLUGIN}, "
        f"in {time.monotonic() - started:.1f} s"
    )
    return version


@dataclass(frozen=True)
class BaseImages:
    """The images the project's own image and services start from."""

    python: str
    redis: str


def base_images() -> BaseImages:
    """The names as the project gives them, in the one place it does: compose.yaml's
    x-base-images (which the Dockerfile's FROM and the redis service take)."""
    named = yaml.safe_load((ROOT / "compose.yaml").read_text())["x-base-images"]
    return BaseImages(python=named["python"], redis=named["redis"])


def image_kind(name: str) -> str | None:
    """'stand-in' or 'pulled' for an image this engine has, None for one it has not."""
    label = f'{{{{index .Config.Labels "{STAND_IN_LABEL}"}}}}'
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", label, name],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        return None
    return "stand-in" if done.stdout.strip() not in ("", "<no value>") else "pulled"


def pulled(name: str) -> bool:
    """Whether a registry gave us the image: no answer and a refusal are both a no."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            ["docker", "pull", name], capture_output=True, text=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        say(f"{name}: no registry answered within 600 s")
        return False
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        say(f"{name}: not pulled: {reason}")
        return False
    say(f"{name}: pulled in {time.monotonic() - started:.1f} s")
    return True


def debootstrap() -> str:
    """Debian's debootstrap, installed if missing."""
    found = shutil.which("debootstrap")
    if found:
        return found
    started = time.monotonic()
    run(
        ["apt-get", "install", "-y", "-qq", "debootstrap"],
        600,
        "apt-get install debootstrap",
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    say(f"installed Debian's debootstrap in {time.monotonic() - started:.1f} s")
    return shutil.which("debootstrap") or "/usr/sbin/debootstrap"


def build_python_stand_in(name: str, folder: Path) -> None:
    """name, made from debootstrap bookworm: Debian's python3 and pip, on /usr/local/bin
    as in the official image, and pip free to install (no EXTERNALLY-MANAGED marker)."""
    started = time.monotonic()
    rootfs = folder / "rootfs"
    include = ",".join(STAND_IN_PACKAGES)
    run(
        [
            debootstrap(),
            "--variant=minbase",
            f"--include={include}",
            "bookworm",
            str(rootfs),
            DEBIAN_MIRROR,
        ],
        900,
        "debootstrap bookworm",
    )
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    local_bin = rootfs / "usr/local/bin"
    for link, target in {
        "python": "python3",
        "python3": "python3",
        "pip": "pip3",
        "pip3": "pip3",
    }.items():
        (local_bin / link).symlink_to(f"/usr/bin/{target}")
    # This machine's CA bundle, for pip (and anything else) behind its HTTPS proxy.
    shutil.copy(CA_BUNDLE, rootfs / CA_BUNDLE.relative_to("/"))
    (rootfs / "etc/pip.conf").write_text(f"[global]\ncert = {CA_BUNDLE}\n")
    # As in Debian's own images: no service starts while a package installs.
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)
    changes = [
        f"ENV PATH={PATH}",
        "ENV LANG=C.UTF-8",
        f"LABEL {STAND_IN_LABEL}=debootstrap-bookworm",
        'CMD ["python3"]',
    ]
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        change_args = [arg for change in changes for arg in ("--change", change)]
        run(
            ["docker", "import", *change_args, "-", name],
            600,
            f"docker import {name}",
            stdin=tar.stdout,
        )
    finally:
        if tar.stdout:
            tar.stdout.close()
        tar.wait()
    say(
        f"{name}: built a stand-in from debootstrap bookworm ({', '.join(STAND_IN_PACKAGES)}) "
        f"in {time.monotonic() - started:.1f} s"
    )


def build_redis_stand_in(name: str, python: str, folder: Path) -> None:
    """name, made from the python image plus Debian's redis-server, run as in the official
    image: as the redis user, in /data."""
    started = time.monotonic()
    (folder / "Dockerfile").write_text(
        f"FROM {python}\n"
        "RUN apt-get update \\\n"
        " && apt-get install -y --no-install-recommends redis-server \\\n"
        " && rm -rf /var/lib/apt/lists/* \\\n"
        " && mkdir /data && chown redis:redis /data\n"
        f"LABEL {STAND_IN_LABEL}=debootstrap-bookworm+redis-server\n"
        "WORKDIR /data\n"
        "USER redis\n"
        'CMD ["redis-server"]\n'
    )
    run(["docker", "build", "--tag", name, str(folder)], 900, f"docker build {name}")
    say(
        f"{name}: built a stand-in from {python} and Debian's redis-server "
        f"in {time.monotonic() - started:.1f} s"
    )


def ensure_base_images(images: BaseImages) -> dict[str, str]:
    """Each base image present, kept or pulled or built; returns its kind by name."""
    kinds = {}
    for name in (images.python, images.redis):
        kind = image_kind(name)
        if kind:
            say(f"{name}: present already ({kind})")
        elif pulled(name):
            kind = "pulled"
        else:
            with tempfile.TemporaryDirectory(prefix="stand-in-") as scratch:
                if name == images.python:
                    build_python_stand_in(name, Path(scratch))
                else:
                    build_redis_stand_in(name, images.python, Path(scratch))
            kind = "stand-in"
        kinds[name] = kind
    return kinds


def image_version(name: str, command: str) -> str:
    """What command prints inside image name, for the record of what the test ran on."""
    done = run(
        ["docker", "run", "--rm", "--entrypoint", "sh", name, "-c", command],
        120,
        f"docker run {name}",
    )
    return "; ".join(done.stdout.split("\n")).strip("; ")
