"""The load client: K connections open at once, each sending M lines and checking every reply.

    open K connections -> all at once: send a line, await its reply, compare with .upper()
    -> requests/s over the sending phase, latency p50/p99, wrong replies and errors

asyncio holds hundreds of connections in one thread, so the client stays one process
however many it opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

from core.errors import BadInput, RunFailed
from core.results import percentiles_ms
from servers import protocol

TIMEOUT_S = 10.0
REQUESTS_PER_RUN = 50_000  # split across the connections when --messages is not given
SPARE_FILES = 64  # besides one per connection: the interpreter's own, a log, a pipe


@dataclass(frozen=True)
class LoadResult:
    """One load run against one server: what was sent, what came back, how fast."""

    host: str
    port: int
    connections: int
    messages: int
    seconds: float
    replies: int
    wrong: int
    errors: int
    latency_ms: dict[str, float] | None
    problem: str  # the first wrong reply or error, to say what went wrong

    @property
    def requests(self) -> int:
        return self.connections * self.messages

    @property
    def requests_per_s(self) -> float:
        return self.replies / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.replies == self.requests and self.wrong == 0 and self.errors == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "requests_per_s": round(self.requests_per_s, 1), "ok": self.ok}


def messages_for(connections: int, messages: int | None, requests: int = REQUESTS_PER_RUN) -> int:
    """Lines per connection: as asked, else `requests` split across the connections."""
    return messages if messages is not None else max(1, requests // max(1, connections))


def check(connections: int, messages: int) -> None:
    if connections < 1:
        raise BadInput(f"--connections must be at least 1 (got {connections})")
    if messages < 1:
        raise BadInput(f"--messages must be at least 1 (got {messages})")


def ensure_open_files(connections: int) -> None:
    """Room for one socket per connection, the soft limit raised as far as the hard one allows."""
    needed = connections + SPARE_FILES
    if protocol.raise_open_files(needed) < needed:
        raise BadInput(
            f"--connections {connections} needs {needed} open files, more than this "
            "process may have (raise the hard limit: ulimit -Hn)"
        )


def probe(host: str, port: int, timeout_s: float = 5.0) -> None:
    """One connection first, so that a wrong host or port is one clear line, not K errors."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except socket.gaierror as error:
        raise BadInput(f"--host {host!r} is not a name or address ({error.strerror})") from None
    except ConnectionRefusedError:
        raise RunFailed(f"nothing listening on {host}:{port} (connection refused)") from None
    except TimeoutError:
        raise RunFailed(f"{host}:{port} did not answer within {timeout_s:g} s") from None
    except OSError as error:
        raise RunFailed(f"cannot connect to {host}:{port}: {error.strerror or error}") from None


def run_load(
    host: str, port: int, connections: int, messages: int, timeout_s: float = TIMEOUT_S
) -> LoadResult:
    """Load the server at host:port; raises BadInput or RunFailed before sending anything."""
    check(connections, messages)
    ensure_open_files(connections)
    probe(host, port)
    return asyncio.run(_load(host, port, connections, messages, timeout_s))


class _Tally:
    def __init__(self) -> None:
        self.replies = self.wrong = self.errors = 0
        self.latencies_s: list[float] = []
        self.problem = ""

    def fail(self, what: str) -> None:
        self.errors += 1
        self.problem = self.problem or what


async def _load(
    host: str, port: int, connections: int, messages: int, timeout_s: float
) -> LoadResult:
    tally = _Tally()

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(timeout_s):
            return await asyncio.open_connection(host, port)

    async def talk(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clock = time.perf_counter
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                for i in range(messages):
                    line = f"line {i} of connection {number}: hello, server\n".encode()
                    deadline.reschedule(asyncio.get_running_loop().time() + timeout_s)
                    sent = clock()
                    writer.write(line)
                    answer = await reader.readline()
                    tally.latencies_s.append(clock() - sent)
                    if not answer.endswith(b"\n"):
                        tally.fail(f"connection {number} closed by the server after {i} replies")
                        return
                    if answer == line.upper():
                        tally.replies += 1
                    else:
                        tally.wrong += 1
                        tally.problem = tally.problem or f"sent {line!r}, got {answer!r}"
        except TimeoutError:
            tally.fail(f"no reply within {timeout_s:g} s on connection {number}")
        except OSError as error:
            tally.fail(f"connection {number}: {error.strerror or error}")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    # Every connection is open before the first line, so that K are served at once.
    opened = await asyncio.gather(*(connect() for _ in range(connections)), return_exceptions=True)
    streams = []
    for result in opened:
        if isinstance(result, BaseException):
            if not isinstance(result, OSError | TimeoutError):
                raise result
            tally.fail(f"connect: {getattr(result, 'strerror', None) or result or 'timed out'}")
        else:
            streams.append(result)
    start = time.perf_counter()
    await asyncio.gather(*(talk(n, r, w) for n, (r, w) in enumerate(streams)))
    seconds = time.perf_counter() - start
    return LoadResult(
        host=host,
        port=port,
        connections=connections,
        messages=messages,
        seconds=seconds,
        replies=tally.replies,
        wrong=tally.wrong,
        errors=tally.errors,
        latency_ms=percentiles_ms(tally.latencies_s),
        problem=tally.problem,
    )
