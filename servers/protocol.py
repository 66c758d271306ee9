"""The line protocol every model speaks, and the start and stop every model shares.

A client sends lines ending in a newline; the server answers each with the same line
upper-cased. A line longer than MAX_LINE_BYTES is answered with TOO_LONG and dropped up
to its newline, so one client cannot make the server hold more than a line's worth.
A client that leaves, even mid-line, ends its own connection and nothing else.
A client past a server's bound on open connections is told BUSY and closed at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import signal
import socket
import socketserver
import sys
from collections.abc import Callable, Sequence
from types import FrameType

import click

from core.commandline import AT_LEAST_ONE, PORT_NUMBER, fail, invoke
from core.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED
from core.output import guard_stdout
from servers import HOST, PORT

MAX_LINE_BYTES = 64 * 1024
TOO_LONG = f"ERROR line longer than {MAX_LINE_BYTES} bytes\n".encode()
RECV_BYTES = 64 * 1024
# socketserver listens with a backlog of 5: a burst of 500 connects would see most
# of them dropped and retried a second later. Every model gets the same, larger one.
BACKLOG = 1024
OPEN_FILES = 65536
# Besides a file per connection: the listening socket, the interpreter's own files, and
# the one a client past the bound is accepted on to be told so.
SPARE_FILES = 64

EXIT_BY_SIGNAL = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED}
SAID_BY_SIGNAL = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}

log = logging.getLogger("servers")

Address = tuple[str, int]
# serve(host, port, max_connections, ready)
Serve = Callable[[str, int, int, Callable[[Address], None]], None]


def reply(line: bytes) -> bytes:
    """One line upper-cased, UTF-8 letters included; bytes that are not UTF-8 pass unchanged."""
    text = line.decode("utf-8", "surrogateescape")
    return text.upper().encode("utf-8", "surrogateescape") + b"\n"


class Lines:
    """Turns the bytes a connection receives into the bytes to send back, in any chunks."""

    def __init__(self) -> None:
        self._partial = bytearray()
        self._dropping = False  # inside a line already answered with TOO_LONG

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        *complete, rest = data.split(b"\n")
        for piece in complete:
            if not self._dropping:
                self._partial += piece
                too_long = len(self._partial) > MAX_LINE_BYTES
                out += TOO_LONG if too_long else reply(bytes(self._partial))
            self._partial.clear()
            self._dropping = False
        if not self._dropping:
            self._partial += rest
            if len(self._partial) > MAX_LINE_BYTES:
                # Answer now, not at a newline that may never come.
                out += TOO_LONG
                self._partial.clear()
                self._dropping = True
        return bytes(out)


def busy(open_now: int, max_connections: int) -> bytes:
    """The one line a client past the bound gets before the server closes its connection."""
    return f"ERROR busy: {open_now} connections open, at most {max_connections}\n".encode()


def admitted(conn: socket.socket, open_now: int, max_connections: int) -> bool:
    """Whether a new client fits under the bound; if not, it is told BUSY, without waiting
    on it (the accepting thread says it), and the caller closes the connection."""
    if open_now < max_connections:
        return True
    with contextlib.suppress(OSError):  # a client gone already needs no answer
        conn.setblocking(False)
        conn.send(busy(open_now, max_connections))
    return False


class LineHandler(socketserver.BaseRequestHandler):
    """One connection of the socketserver models (process, thread, gevent), until it ends."""

    request: socket.socket

    def handle(self) -> None:
        lines = Lines()
        try:
            while data := self.request.recv(RECV_BYTES):
                if replies := lines.feed(data):
                    self.request.sendall(replies)
        except OSError as error:
            log_error(self.client_address, error)


def log_error(peer: object, error: BaseException) -> None:
    """One line on stderr for a connection that failed; the server carries on."""
    log.warning("connection from %s: %s", peer, error)


class Stopped(SystemExit):
    """SIGINT or SIGTERM arrived. A SystemExit, which socketserver, gevent's hub and
    asyncio's tasks all let through, so that it unwinds the server wherever it is."""

    def __init__(self, signum: int) -> None:
        super().__init__(EXIT_BY_SIGNAL[signal.Signals(signum)])
        self.signum = signum


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


class Unwritable(Exception):
    """Standard output cannot take the line that says where the server listens."""


def raise_open_files(wanted: int) -> int:
    """Raise the soft limit on open files towards `wanted`, up to the hard limit; the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return wanted if soft == resource.RLIM_INFINITY else soft


def cannot_listen(host: str, port: int, error: OSError) -> str:
    """What went wrong binding host:port, said in terms of the options."""
    if isinstance(error, socket.gaierror):
        return f"--host {host!r} is not a name or address to listen on ({error.strerror})"
    if error.errno == errno.EADDRINUSE:
        return f"--port {port} is in use on {host}: choose another, or 0 for a free one"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"--host {host} is not an address of this machine"
    if error.errno == errno.EACCES:
        return f"--port {port} needs privileges on {host}: choose one above 1023"
    return f"cannot listen on {host}:{port}: {error.strerror or error}"


def main(
    model: str,
    serve: Serve,
    max_connections: int,
    spare_files: int | None = SPARE_FILES,
    argv: Sequence[str] | None = None,
) -> int:
    """Run serve(host, port, max_connections, ready) for `python -m servers.<model>_server`:
    one line once it listens, one line on stderr and exit 2 if it cannot, 130 or 143 when
    stopped, exit 1 if standard output cannot take that first line. The server holds a
    file per connection and `spare_files` more, so its bound is kept under its open-files
    limit; None where children hold the connections."""
    output = guard_stdout()
    fewer = "" if spare_files is None else ", fewer if open files would run out"

    @click.command(help=f"An upper-casing line server, {model} model.")
    @click.option("--host", default=HOST, show_default=True, help="address to listen on")
    @click.option(
        "--port", type=PORT_NUMBER, default=PORT, show_default=True, help="0 picks a free one"
    )
    @click.option(
        "--max-connections",
        "asked",
        type=AT_LEAST_ONE,
        metavar="N",
        help=f"clients served at once; one more is told busy (default {max_connections}{fewer})",
    )
    def server(host: str, port: int, asked: int | None) -> int:
        logging.basicConfig(stream=sys.stderr, format=f"{model} server: %(message)s")
        open_files = raise_open_files(OPEN_FILES)
        bound = asked or max_connections
        if spare_files is not None and bound + spare_files > open_files:
            # Past the limit, accept() fails and clients wait unanswered in the backlog.
            if asked:
                fail(
                    f"--max-connections {bound} needs {bound + spare_files} open files, more than "
                    f"this process may have ({open_files}; raise the hard limit: ulimit -Hn)"
                )
            bound = max(1, open_files - spare_files)
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        listening = False

        def ready(address: Address) -> None:
            nonlocal listening
            listening = True
            print(f"serving {model} on {address[0]}:{address[1]}", flush=True)
            if output.error:
                # That line is how whoever started the server learns its port (--port 0 picks
                # one): a server that cannot say it serves no one.
                raise Unwritable(output.error)

        try:
            serve(host, port, bound, ready)
        except Stopped as stopped:
            print(
                f"ladder: error: {SAID_BY_SIGNAL[signal.Signals(stopped.signum)]}", file=sys.stderr
            )
            return int(stopped.code or 0)
        except Unwritable as error:
            fail(f"cannot write the output: {error}", EXIT_FAILED)
        except OSError as error:
            if listening:
                raise
            fail(cannot_listen(host, port, error))
        return EXIT_OK

    prog = f"python -m servers.{model}_server"
    return invoke(server, sys.argv[1:] if argv is None else argv, prog)
