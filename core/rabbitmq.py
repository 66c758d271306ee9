"""A private RabbitMQ node: Debian's rabbitmq-server on loopback, in a folder of its own.

    open  -> a folder (0700): data, logs, config, HOME with the node's own Erlang cookie
          -> epmd on a free port -> rabbitmq-server on free AMQP and distribution ports
          -> ready once its user logs in over AMQP
    close -> SIGTERM (rabbit stops itself), SIGKILL to what is left, the folder removed

The password is in the node's environment only (RABBITMQ_DEFAULT_PASS), which only its
user and root can read: never on a command line that ps shows, nor in a file; the node
keeps a salted hash of it in its data folder, which goes with the node.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psutil
from kombu.connection import Connection

from core import procs
from core.closing import Closing
from core.errors import RunFailed
from core.urls import mask_url
from core.wait import wait_until

RABBIT_START_TIMEOUT_S = 60.0
RABBIT_STOP_TIMEOUT_S = 15.0
# A node still booting ignores SIGTERM until its signal handler is in; its data is
# nothing yet, so it is not waited for.
BOOTING_STOP_TIMEOUT_S = 2.0
LOGIN_POLL_S = 0.25
SHOWN_CHARACTERS = 300
USER = "ladder"
# Debian's /usr/sbin/rabbitmq-server is a wrapper that, run by root, switches to the
# rabbitmq user and its home (the machine's cookie, and no access to our folder): the
# script it wraps is started instead.
WRAPPER = "rabbitmq-script-wrapper"
# Where Debian puts them, for a PATH without the sbin folders (a user's, not root's).
FALLBACK_PATH = os.pathsep.join(["/usr/sbin", "/usr/lib/rabbitmq/bin", "/usr/bin"])
# Settings of the caller's shell that would point the node elsewhere: its name, its
# epmd, its configuration, Erlang flags. The node is given its own.
FOREIGN_PREFIXES = ("RABBITMQ_", "ERL_")


def rabbit_binary(name: str = "rabbitmq-server") -> str:
    """The script that starts the node (or one of its tools), not Debian's wrapper."""
    found = shutil.which(name) or shutil.which(name, path=FALLBACK_PATH)
    if not found:
        raise RunFailed(f"no {name} found: install RabbitMQ (apt-get install rabbitmq-server)")
    real = Path(found).resolve()
    if real.name == WRAPPER:
        return str(real.parent / name)
    return found


def epmd_binary() -> str:
    found = shutil.which("epmd") or shutil.which("epmd", path=FALLBACK_PATH)
    if not found:
        raise RunFailed("no epmd found: install Erlang (apt-get install erlang-base)")
    return found


def shorten(line: str, limit: int = SHOWN_CHARACTERS) -> str:
    return line if len(line) <= limit else line[:limit] + "..."


def listens(port: int) -> bool:
    """Whether something accepts a TCP connection on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def logs_in(url: str) -> bool:
    """Whether the broker at url takes an AMQP login: a node whose port is open may
    still be booting, and takes none."""
    connection = Connection(url, connect_timeout=1)
    try:
        # One attempt: the caller's loop does the waiting.
        connection.ensure_connection(max_retries=0)
        return True
    except Exception:
        return False
    finally:
        connection.release()


class RabbitNode(Closing):
    """A private rabbitmq-server on 127.0.0.1, with its own user and password; a context
    manager. Never the machine's shared node (rabbit@<host>, on 5672): this one has its
    own name, ports, epmd and cookie."""

    def __init__(
        self, port: int | None = None, start_timeout_s: float = RABBIT_START_TIMEOUT_S
    ) -> None:
        if start_timeout_s <= 0:
            raise ValueError(f"start_timeout_s must be greater than 0 (got {start_timeout_s})")
        self.start_timeout_s = start_timeout_s
        self.name = f"ladder-{secrets.token_hex(4)}@localhost"
        self.user = USER
        self.password = secrets.token_urlsafe(16)
        self.port = port or 0
        self.dist_port = 0
        self.epmd_port = 0
        self.ready = False
        self.server: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def workdir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("the node has no folder until it is opened")
        return Path(self._tmp.name)

    @property
    def log_dir(self) -> Path:
        return self.workdir / "log"

    @property
    def url(self) -> str:
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{self.port}//"

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def open(self) -> None:
        self._tmp = procs.scratch("queue-ladder-rabbit-")
        workdir = self.workdir
        for folder in ("home", "mnesia", "log", "conf.d"):
            (workdir / folder).mkdir(mode=0o700)
        ports = self._free_ports(3)
        self.port = self.port or ports[0]
        self.dist_port, self.epmd_port = ports[1:]
        self._start_epmd()
        self._start_server()

    def _free_ports(self, count: int) -> list[int]:
        # Sockets held open together, so that the system gives three different ports.
        probes = [socket.socket() for _ in range(count)]
        try:
            for probe in probes:
                probe.bind(("127.0.0.1", 0))
            return [int(probe.getsockname()[1]) for probe in probes]
        finally:
            for probe in probes:
                probe.close()

    def _start_epmd(self) -> None:
        # An epmd of its own: the machine's (on 4369) belongs to its RabbitMQ, and one that
        # erl would start itself daemonises, out of reach of our stop.
        argv = [epmd_binary(), "-port", str(self.epmd_port), "-address", "127.0.0.1"]
        self.epmd = procs.start_ready(
            argv, self.workdir / "epmd.log", lambda: listens(self.epmd_port), "epmd", 10.0
        )

    def _environment(self) -> dict[str, str]:
        workdir = self.workdir
        env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}
        env.update(
            # Erlang makes a random cookie in HOME on first start: no other node's cookie
            # is read, and none of theirs works here.
            HOME=str(workdir / "home"),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            # A crash dump holds the node's memory, the password with it.
            ERL_CRASH_DUMP_BYTES="0",
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(workdir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_CONFIG_FILE=str(workdir / "rabbitmq.conf"),
            # Debian's /etc/rabbitmq: its env file names the machine's node, conf.d and
            # advanced.config would add to ours.
            RABBITMQ_CONF_ENV_FILE=str(workdir / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILES=str(workdir / "conf.d"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(workdir / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(workdir / "enabled_plugins"),
            # The first user, made at the first start instead of guest.
            RABBITMQ_DEFAULT_USER=self.user,
            RABBITMQ_DEFAULT_PASS=self.password,
        )
        return env

    def _start_server(self) -> None:
        workdir = self.workdir
        (workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "distribution.listener.interface = 127.0.0.1\n"
        )
        (workdir / "rabbitmq-env.conf").write_text("")
        (workdir / "enabled_plugins").write_text("[].\n")
        log = workdir / "rabbitmq-server.log"
        server = self.server = procs.spawn([rabbit_binary()], log, self._environment())
        url = self.url
        if not wait_until(
            lambda: logs_in(url),
            self.start_timeout_s,
            LOGIN_POLL_S,
            unless=lambda: server.poll() is not None,
        ):
            exited = server.poll() is not None
            why = "exited" if exited else f"took no login within {self.start_timeout_s:g} s"
            raise RunFailed(f"rabbitmq-server {self.name} {why}: {self._last_words()}")
        self.ready = True

    def _last_words(self) -> str:
        """Why the node stopped, in one line: Erlang's last word on a failed boot, else
        the first error in the node's log, else what it printed last."""
        printed = self.workdir / "rabbitmq-server.log"
        node_log = self.log_dir / f"{self.name}.log"
        for log, mark in ((printed, "init terminating in do_boot ("), (node_log, "reason:")):
            with contextlib.suppress(OSError):
                for line in log.read_text(errors="replace").splitlines():
                    if mark in line:
                        return shorten(line.strip())
        return shorten(procs.tail(printed, 3)) or "no log"

    def close(self) -> None:
        with contextlib.ExitStack() as cleanup:
            if self._tmp:
                cleanup.callback(self._tmp.cleanup)
            if self.epmd:
                cleanup.callback(procs.stop, self.epmd)
            if self.server:
                cleanup.callback(self._stop_server, self.server)
        self.server = self.epmd = self._tmp = None
        self.ready = False

    def _stop_server(self, server: subprocess.Popen[bytes]) -> None:
        # erl_child_setup leaves the session for one of its own (setsid), with
        # inet_gethost and the disk monitor below it: they are found before the stop
        # orphans them.
        try:
            below = psutil.Process(server.pid).children(recursive=True)
        except psutil.Error:
            below = []
        timeout_s = RABBIT_STOP_TIMEOUT_S if self.ready else BOOTING_STOP_TIMEOUT_S
        procs.stop(server, timeout_s=timeout_s)
        for process in below:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(below, timeout=5)
