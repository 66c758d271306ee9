"""The four servers as a user runs them (`ladder serve`, `ladder load`): replies under
concurrent clients, clients that leave or send too much, idle clients past the bound or
in bursts of thousands, bad input, an output that cannot be written, and Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from core import procs
from servers import MODELS, process_server, thread_server
from servers.protocol import (
    BACKLOG,
    MAX_LINE_BYTES,
    SPARE_FILES,
    TOO_LONG,
    Lines,
    busy,
    raise_open_files,
)
from tests.support import cli
from tests.support.cli import LADDER, ROOT
from tests.support.proctree import cmdline, descendants, kill_all, running

# Wide enough for `ladder load --compare`'s table.
ENV = {**cli.ENV, "COLUMNS": "160"}
READY = re.compile(r"^serving (\w+) on 127\.0\.0\.1:(\d+)$", re.MULTILINE)


@dataclass
class Server:
    model: str
    process: subprocess.Popen[bytes]
    port: int
    err: Path


def start(model: str, folder: Path, open_files: int | None = None) -> Server:
    """`ladder serve --model <model> --port 0`, once it has said where it listens;
    `open_files`: run it under that limit on open files, soft and hard."""

    def limit_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    out, err = folder / f"{model}.out", folder / f"{model}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            [*LADDER, "serve", "--model", model, "--port", "0"],
            cwd=ROOT,
            env=ENV,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=limit_files,
        )
    deadline = time.monotonic() + 20
    while not (found := READY.search(out.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            kill_all(process, [])
            raise AssertionError(f"the {model} server did not start: {err.read_text()}")
        time.sleep(0.05)
    assert found[1] == model
    return Server(model, process, int(found[2]), err)


@pytest.fixture(scope="module", params=list(MODELS))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server per model, shared by the tests that only talk to it."""
    started = start(request.param, tmp_path_factory.mktemp(request.param))
    try:
        yield started
    finally:
        kill_all(started.process, [])


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def ask(conn: socket.socket, line: bytes) -> bytes:
    conn.sendall(line + b"\n")
    return read_line(conn)


def read_line(conn: socket.socket) -> bytes:
    received = b""
    while not received.endswith(b"\n"):
        chunk = conn.recv(1)
        assert chunk, f"the server closed the connection after {received!r}"
        received += chunk
    return received


def ladder(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return cli.ladder(*args, env=ENV, timeout_s=timeout_s)


@pytest.mark.timeout(10)
def test_lines_are_answered_whatever_the_chunks() -> None:
    stream = b"hello\nw\xc3\xb6rld \xff\n" + b"x" * (MAX_LINE_BYTES + 1) + b"\nafter\n"
    whole = Lines().feed(stream)
    assert whole == b"HELLO\nW\xc3\x96RLD \xff\n" + TOO_LONG + b"AFTER\n"
    for size in (1, 7, 4096):
        lines = Lines()
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert b"".join(lines.feed(chunk) for chunk in chunks) == whole


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_every_model_answers_50_concurrent_clients(server: Server) -> None:
    done = ladder(
        "load", "--port", str(server.port), "--connections", "50", "--messages", "20", "--json"
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    [result] = json.loads(done.stdout)
    assert result["ok"]
    assert (result["connections"], result["replies"], result["wrong"], result["errors"]) == (
        50,
        1000,
        0,
        0,
    )


@pytest.mark.timeout(30)
def test_a_client_leaving_mid_line_does_not_hurt_the_others(server: Server) -> None:
    with connect(server.port) as staying:
        assert ask(staying, b"before") == b"BEFORE\n"
        with connect(server.port) as leaving:
            leaving.sendall(b"half a li")
        with connect(server.port) as reset:
            reset.sendall(b"half a li")
            # Closing with SO_LINGER 0 sends a reset rather than an orderly end.
            reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert ask(staying, b"still here") == b"STILL HERE\n"
    with connect(server.port) as new:
        assert ask(new, b"and a new one") == b"AND A NEW ONE\n"
    assert server.process.poll() is None


@pytest.mark.timeout(30)
def test_an_over_long_line_gets_the_error_and_the_server_keeps_serving(server: Server) -> None:
    with connect(server.port) as greedy, connect(server.port) as other:
        greedy.sendall(b"a" * (MAX_LINE_BYTES + 10_000))
        assert read_line(greedy) == TOO_LONG
        assert ask(other, b"meanwhile") == b"MEANWHILE\n"
        greedy.sendall(b"a" * 100_000)  # the rest of that line is dropped, not held
        assert ask(greedy, b"end of it\nnext") == b"NEXT\n"
    assert server.process.poll() is None


@pytest.fixture(scope="module")
def taken_port() -> Iterator[int]:
    """A port something already listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def bad_input(taken: int) -> list[tuple[list[str], int, str]]:
    """(arguments, exit code, what the one line on stderr says)."""
    nothing = str(procs.free_port())
    return [
        *(
            (["serve", "--model", model, "--port", str(taken)], 2, f"--port {taken} is in use")
            for model in MODELS
        ),
        (["serve", "--model", "thread", "--port", "70000"], 2, "--port: must be between 0 and"),
        (["serve", "--model", "asyncio", "--host", "192.0.2.1"], 2, "--host 192.0.2.1 is not an"),
        (["load", "--connections", "0"], 2, "--connections must be at least 1 (got 0)"),
        (["load", "--messages", "0"], 2, "--messages must be at least 1 (got 0)"),
        (["load", "--compare", "--connections", "0"], 2, "--connections must be at least 1"),
        (["load", "--host", "no-such-host.invalid"], 2, "--host 'no-such-host.invalid' is not"),
        (["load", "--port", nothing], 1, f"nothing listening on 127.0.0.1:{nothing}"),
    ]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_bad_input_is_one_line_and_exit_2(taken_port: int) -> None:
    cases = bad_input(taken_port)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        runs = list(pool.map(lambda case: ladder(*case[0]), cases))
    for (args, code, says), done in zip(cases, runs, strict=True):
        assert done.returncode == code, (args, done.stdout, done.stderr)
        assert done.stdout == "", args
        lines = done.stderr.splitlines()
        assert len(lines) == 1, (args, done.stderr)
        assert lines[0].startswith("ladder: error: "), args
        assert says in lines[0], (args, lines[0])


def unwritable(where: str) -> tuple[int | None, Callable[[], None] | None, str]:
    """How to give a child a standard output it cannot write, as `>&-` or `>/dev/full`
    do: the file descriptor for Popen's stdout, what to run in the child before it
    starts, and why ladder then says the output cannot be written."""
    if where == "closed":
        # Closed in the child itself, so that its fd 1 is not open at all.
        return subprocess.DEVNULL, lambda: os.close(1), "standard output is closed"
    return os.open(where, os.O_WRONLY), None, "No space left on device"


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["closed", "/dev/full"])
@pytest.mark.parametrize("model", list(MODELS))
def test_serve_with_an_output_it_cannot_write_is_one_line_and_exit_1(
    model: str, where: str, tmp_path: Path
) -> None:
    # "serving <model> on <host>:<port>" is the only way to learn the port of --port 0: a
    # server that cannot say it is of no use, so it stops.
    stdout, before_start, said = unwritable(where)
    with open(tmp_path / "err", "w+") as err:
        process = subprocess.Popen(
            [*LADDER, "serve", "--model", model, "--port", "0"],
            cwd=ROOT,
            env=ENV,
            stdout=stdout,
            stderr=err,
            start_new_session=True,
            preexec_fn=before_start,
        )
        try:
            if stdout != subprocess.DEVNULL:
                os.close(stdout)
            try:
                returncode = process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the {model} server still runs 20 s after it could not say so")
            err.seek(0)
            stderr = err.read()
            assert "Traceback" not in stderr, stderr
            assert returncode == 1, stderr
            assert stderr.splitlines() == [f"ladder: error: cannot write the output: {said}"]
        finally:
            kill_all(process, [])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("where", ["closed", "/dev/full"])
def test_a_server_help_it_cannot_write_is_one_line_and_exit_1(where: str) -> None:
    # argparse ignores a --help it could not write, and exits 0 as if it had.
    stdout, before_start, said = unwritable(where)
    try:
        done = subprocess.run(
            [sys.executable, "-m", MODELS["thread"], "--help"],
            cwd=ROOT,
            env=ENV,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=20,
            preexec_fn=before_start,
        )
    finally:
        if stdout != subprocess.DEVNULL:
            os.close(stdout)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [f"ladder: error: cannot write the output: {said}"]


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("model", list(MODELS))
def test_sigint_stops_the_server_within_10_s_leaving_no_child(model: str, tmp_path: Path) -> None:
    server = start(model, tmp_path)
    seen: list[psutil.Process] = []
    clients = [connect(server.port) for _ in range(3)]
    try:
        for client in clients:
            assert ask(client, b"hello") == b"HELLO\n"
            client.sendall(b"half a li")
        seen = descendants(psutil.Process(server.process.pid))
        if model == "process":
            assert len(running(seen)) == 3, [cmdline(p) for p in seen]
        os.kill(server.process.pid, signal.SIGINT)
        assert server.process.wait(timeout=10) == 130
        assert server.err.read_text().splitlines()[-1] == "ladder: error: interrupted"
        _, alive = psutil.wait_procs(seen, timeout=10)
        assert running(alive) == [], [cmdline(p) for p in alive]
    finally:
        for client in clients:
            client.close()
        kill_all(server.process, seen)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_compare_starts_every_model_and_says_which_held_up_best() -> None:
    done = ladder("load", "--compare", "--connections", "1,5", "--messages", "5", timeout_s=50)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "Four servers, side by side" in done.stdout
    for model in MODELS:
        assert model in done.stdout
    said = " ".join(done.stdout.split())  # as one line, however the terminal wrapped it
    assert re.search(
        r"Held up best \(most requests/s, no errors\): at K = 1, \w+ .*; at K = 5, ", said
    ), said
    assert len(re.findall(r" ok$", done.stderr, re.MULTILINE)) == 2 * len(MODELS)


@contextmanager
def idle_clients(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections opened one after another, then left idle; all closed at the end."""
    assert raise_open_files(count + SPARE_FILES) >= count + SPARE_FILES, "ulimit -Hn too low"
    clients: list[socket.socket] = []
    try:
        for _ in range(count):
            clients.append(connect(port))
        yield clients
    finally:
        for client in clients:
            client.close()


def told_busy(conn: socket.socket, bound: int) -> None:
    """The one line a client past the bound gets, then the end of its connection."""
    assert read_line(conn) == busy(bound, bound)
    assert conn.recv(1) == b""


def served_within(port: int, seconds: float) -> float:
    """How long until a new client gets its line answered, asking again while told busy."""
    start = time.monotonic()
    while True:
        with socket.create_connection(("127.0.0.1", port), timeout=seconds) as new:
            answer = ask(new, b"hello")
        if answer == b"HELLO\n":
            return time.monotonic() - start
        assert answer.startswith(b"ERROR busy: "), answer
        assert time.monotonic() - start < seconds, f"still {answer!r} after {seconds} s"
        time.sleep(0.05)


# (model, its open-files limit or None for the usual, the bound it then has). gevent and
# asyncio allow more clients than these open files, so their bound is what the limit
# leaves; asyncio keeps room for the backlog, which it accepts in one go.
BOUNDS = [
    ("process", None, process_server.MAX_CONNECTIONS),
    ("thread", None, thread_server.MAX_CONNECTIONS),
    ("gevent", 512, 512 - SPARE_FILES),
    ("asyncio", 2048, 2048 - SPARE_FILES - BACKLOG),
]


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize(("model", "open_files", "bound"), BOUNDS, ids=[b[0] for b in BOUNDS])
def test_idle_clients_past_the_bound_are_told_busy_and_the_next_is_served_once_one_leaves(
    model: str, open_files: int | None, bound: int, tmp_path: Path
) -> None:
    server = start(model, tmp_path, open_files)
    try:
        with idle_clients(server.port, bound) as held:
            for client in held:
                assert ask(client, b"hi") == b"HI\n"
            with idle_clients(server.port, 100) as excess:
                for client in excess:
                    told_busy(client, bound)
            with connect(server.port) as new:
                told_busy(new, bound)
            assert ask(held[-1], b"still served") == b"STILL SERVED\n"
            held.pop(0).close()
            served_within(server.port, 5)
        assert server.process.poll() is None
        assert "Traceback" not in server.err.read_text()
    finally:
        kill_all(server.process, [])


BURST = 8000  # past the bound of process and thread, under that of gevent and asyncio


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("model", list(MODELS))
def test_a_new_client_is_served_within_5_s_of_8000_clients_leaving_at_once(
    model: str, tmp_path: Path
) -> None:
    server = start(model, tmp_path)
    try:
        with idle_clients(server.port, BURST), connect(server.port) as one_more:
            answer = ask(one_more, b"hello")  # served, or told busy: answered, either way
            assert answer == b"HELLO\n" or answer.startswith(b"ERROR busy: "), answer
        assert served_within(server.port, 5) < 5
        assert server.process.poll() is None
        assert "Traceback" not in server.err.read_text()
    finally:
        kill_all(server.process, [])


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_a_bad_max_connections_is_one_line_and_exit_2() -> None:
    cases = [
        (["--max-connections", "0"], None, "argument --max-connections: must be at least 1"),
        (["--max-connections", "many"], None, "--max-connections: must be a whole number"),
        (["--max-connections", "1000"], 256, "more than this process may have (256; raise"),
    ]
    for model in ("thread", "asyncio"):
        for args, open_files, says in cases:
            done = subprocess.run(
                [sys.executable, "-m", MODELS[model], "--port", "0", *args],
                cwd=ROOT,
                env=ENV,
                capture_output=True,
                text=True,
                timeout=20,
                preexec_fn=None
                if open_files is None
                else lambda n=open_files: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)),
            )
            assert done.returncode == 2, (model, args, done.stdout, done.stderr)
            assert done.stdout == ""
            [line] = done.stderr.splitlines()
            assert line.startswith("ladder: error: ") and says in line, (model, line)
