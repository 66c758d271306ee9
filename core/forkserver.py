"""Child processes from multiprocessing's fork server, and process pools, that the rungs
start: tied to ladder's life, quiet on Ctrl-C, saying in one line why they failed."""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import signal
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.process import BaseProcess
from typing import Any, Protocol, TypeAlias

from core import interrupt, procs


class Count(Protocol):
    """A number one worker keeps and another reads (a shared-memory value, for processes)."""

    value: int


# Children start from a fork server: a clean process, started once, that forks a
# child per request. A plain fork would copy whatever the parent holds, among it a
# broker client's sockets, which kombu's after-fork hooks then try to close from the
# child, hanging it. The server imports, once, what the local rungs' children run, so
# that such a child starts in milliseconds: no broker library among it, which a local
# child has no use for. A broker rung's child imports its own on start.
PRELOAD = ("core.forkserver", "local_ipc.loops", "tasks.workloads", "tasks.tickets")
CONTEXT = multiprocessing.get_context("forkserver")
CONTEXT.set_forkserver_preload(list(PRELOAD))


_fork_server_ready = False


def start_fork_server() -> None:
    """Start the fork server and wait for its imports, so they are not timed as a run's."""
    global _fork_server_ready
    if not _fork_server_ready:
        warm_up = Child(target=time.sleep, args=(0,), name="warm-up")
        warm_up.start()
        warm_up.join()
        _fork_server_ready = True


def quiet_child() -> None:
    """In a child: Ctrl-C and SIGTERM are the parent's to handle; it stops its children.

    A child the parent could not stop (the parent was killed with SIGKILL, say) still
    ends with it. The child's own parent is the fork server, which lives as long as
    some process holds its "alive" pipe: the parent, and by default every child too, so
    that a child could start children of its own. Ours start none, so each lets go of
    the pipe: the fork server then exits with the parent, and the child, told to by
    Linux, with the fork server.
    """
    interrupt.leave_to_parent()
    procs.die_with_parent()
    # The pipe's write end, as the fork server handed it to this child (CPython keeps it
    # here; there is no public way to let go of it).
    server: Any = multiprocessing.forkserver._forkserver
    if server._forkserver_alive_fd is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor whose workers are forked and leave interruptions to us."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=CONTEXT, initializer=quiet_child)


# How much of a child's last error it keeps for its parent to tell.
REASON_BYTES = 300


class Child(multiprocessing.context.ForkServerProcess):
    """A child that leaves interruptions to its parent, and says why it failed in one
    line: an error is not printed as a traceback on the parent's terminal (a broker out
    of memory would print one per child), but kept in shared memory for the parent, which
    tells of the death (how_it_ended), and the child exits with code 1."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reason = CONTEXT.RawArray("c", REASON_BYTES)

    @property
    def reason(self) -> str:
        """The child's error, in one line; empty while it has none."""
        return bytes(self._reason.value).decode(errors="replace")

    def run(self) -> None:
        quiet_child()
        try:
            super().run()
        except Exception as error:
            said = " ".join(f"{type(error).__name__}: {error}".split())
            self._reason.value = said.encode()[: REASON_BYTES - 1]
            raise SystemExit(1) from None


def stop_processes(processes: Iterable[BaseProcess], timeout_s: float = 5.0) -> None:
    """Terminate the children still running, then kill what ignores it: no orphans."""
    procs.stop(*processes, timeout_s=timeout_s)


SentCounter: TypeAlias = Count


def shared_count() -> Count:
    """A number one child writes and the parent reads, in shared memory, still readable
    after the child died, even by SIGKILL. It has no lock: a lock held by a child killed
    mid-write would never be released, and the parent's next read would wait for ever."""
    count: Count = CONTEXT.RawValue("q", 0)
    return count


def sent_counter() -> SentCounter:
    """How many items one producer has sent, in memory shared with it."""
    return shared_count()


def how_it_ended(process: BaseProcess) -> str:
    """How a child exited, in a phrase: the signal that killed it, or its error."""
    code = process.exitcode
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    reason = process.reason if isinstance(process, Child) else ""
    return reason or f"exit code {code}"


def pool_workers(pool: ProcessPoolExecutor) -> list[BaseProcess]:
    """The pool's worker processes. Before Python 3.14 (terminate_workers, kill_workers)
    ProcessPoolExecutor has no public way to reach them: we read its _processes, a dict
    of pid to Process, as those two methods do; None once the pool is shut down."""
    workers: dict[int, BaseProcess] | None = getattr(pool, "_processes", None)
    return list((workers or {}).values())


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool at once: terminate its workers, then shut it down, cancelling the calls
    still queued. shutdown alone would wait for every running call to finish; with no
    worker left, the pool's own thread fails what it held and ends, and shutdown waits
    for that, so that the thread is not left cleaning up as ladder exits."""
    stop_processes(pool_workers(pool))
    pool.shutdown(wait=True, cancel_futures=True)


def pool_death(pool: ProcessPoolExecutor) -> str:
    """Which worker of a broken pool died, and how, in one phrase."""
    workers = pool_workers(pool)
    # The pool's own thread saw the death; it terminates the other workers and reaps them
    # all. Their exit codes are read once it is done: read while it reaps, one is lost.
    pool.shutdown(wait=True)
    terminated = -signal.SIGTERM
    dead = [w for w in workers if w.exitcode not in (None, 0, terminated)]
    dead = dead or [w for w in workers if w.exitcode]
    return f"a worker of the pool died ({how_it_ended(dead[0]) if dead else 'how is unknown'})"
