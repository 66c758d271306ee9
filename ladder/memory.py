"""Peak resident memory (RSS) of this process and every process below it, during a run.

    sampler thread, every interval_s: this process + its descendants -> RSS of each
    -> the peak of each process, and the peak of their sum at one sample

The descendants are found through /proc/<pid>/task/<tid>/children, which reads only
this process's subtree (psutil's children(), the fallback, reads every process of the
machine): a sample costs a fraction of a millisecond, taken from the run it watches.

A sample can miss a short spike, and in this process any spike within one call that
holds the GIL (sorting a million latencies, unpickling a tally): the sampler thread
cannot run then. So on Linux each process's own high-water mark (VmHWM) is read too,
reset when the sampler starts (clear_refs), and its peak is the larger of the two.

Below this process are the fork server and its children (the rungs' producers and
consumers), and, with the embedded stack, redis-server, the Celery workers and Flower,
each in a session of its own: the caller says which of those sessions are the run's.
A process that exits between being listed and being read is skipped: the sampler must
never fail the run it watches.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import psutil

from core.closing import Closing

INTERVAL_S = 0.05
MB = 1024 * 1024
EXITED = "an exited process"
PROC = "/proc"


@dataclass(frozen=True)
class Peak:
    """What a sampler saw: the largest per-process peak, whose it was, the peak of the sum."""

    process_mb: float
    process: str
    total_mb: float
    processes: int  # how many processes were seen in all
    by_name: dict[str, float] = field(default_factory=dict)  # the largest peak per name


def describe(process: psutil.Process, root_pid: int) -> str:
    """A short name for a process: what it runs, not its whole command line."""
    if process.pid == root_pid:
        return "this process"
    try:
        argv = process.cmdline()
        name = process.name()
    except psutil.Error:
        return EXITED
    text = " ".join(argv)
    if "redis-server" in name or "redis-server" in text:
        return "redis-server"
    if "celery" in argv or any(arg.endswith("/celery") for arg in argv):
        for command in ("worker", "flower"):
            if command in argv:
                return f"celery {command}"
        return "celery"
    if "multiprocessing.forkserver" in text:
        try:
            parent = process.parent()
        except psutil.Error:
            parent = None
        return "fork server" if parent is None or parent.pid == root_pid else "fork server child"
    if "multiprocessing.resource_tracker" in text:
        return "resource tracker"
    return name or "a process"


def descendant_pids(pid: int) -> list[int] | None:
    """Every process below pid, from /proc; None where the kernel does not list children."""
    if not os.path.exists(f"{PROC}/{pid}/task/{pid}/children"):
        return None
    found: list[int] = []
    parents = [pid]
    while parents:
        parent = parents.pop()
        try:
            threads = os.listdir(f"{PROC}/{parent}/task")
        except OSError:
            continue  # exited
        for thread in threads:
            try:
                with open(f"{PROC}/{parent}/task/{thread}/children", "rb") as listing:
                    children = [int(child) for child in listing.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(children)
            parents.extend(children)
    return found


def high_water_bytes(pid: int) -> int | None:
    """The most RSS the process has had since it started or was last reset (Linux)."""
    try:
        with open(f"{PROC}/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_high_water(pid: int) -> bool:
    """Set the process's VmHWM to its RSS now (Linux 4.0+); False where that fails."""
    try:
        with open(f"{PROC}/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class PeakRss(Closing):
    """A context manager that samples RSS around a run, in a background thread.

    sessions() names the sessions whose processes count besides this process's own
    (asked at every sample, as processes start); None counts every descendant. The
    embedded stack starts redis-server, each Celery worker and Flower in a session of
    its own, and a local rung's run is none of theirs.
    """

    def __init__(
        self,
        interval_s: float = INTERVAL_S,
        sessions: Callable[[], Collection[int]] | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.sessions = sessions
        self.root = psutil.Process()
        self.session = os.getsid(0)
        self._by_pid: dict[int, psutil.Process] = {self.root.pid: self.root}
        self.peaks: dict[tuple[int, float], int] = {}
        self.names: dict[tuple[int, float], str] = {}
        self.total_peak = 0
        self.samples = 0
        # Processes whose high-water mark is the run's own: reset at the start, or
        # started since. Another's (a reset refused) would count what came before.
        self._before: set[int] = set()
        self._high_water_ok: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def open(self) -> None:
        for process in self.processes():
            self._before.add(process.pid)
            if reset_high_water(process.pid):
                self._high_water_ok.add(process.pid)
        self.sample()
        self._thread.start()

    def close(self) -> None:
        if self._thread.ident is None:
            return  # an open that failed before sampling began: no run to sample
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            # Whatever goes wrong, the run goes on: a sample missed is all it costs.
            with contextlib.suppress(Exception):
                self.sample()

    def processes(self) -> list[psutil.Process]:
        """This process and those of its descendants in the sessions that count."""
        pids = descendant_pids(self.root.pid)
        if pids is None:
            try:
                pids = [child.pid for child in self.root.children(recursive=True)]
            except psutil.Error:
                pids = []
        if self.sessions is not None:
            counted = {self.session, *self.sessions()}
            pids = [pid for pid in pids if self._session_of(pid) in counted]
        # One psutil.Process per pid while it is listed: it reads its start time once.
        known, self._by_pid = self._by_pid, {self.root.pid: self.root}
        for pid in pids:
            try:
                self._by_pid[pid] = known.get(pid) or psutil.Process(pid)
            except psutil.Error:
                continue
        return list(self._by_pid.values())

    @staticmethod
    def _session_of(pid: int) -> int | None:
        try:
            return os.getsid(pid)
        except OSError:
            return None

    def sample(self) -> None:
        """Read the RSS of every process now; keep each one's peak and the sum's."""
        total = 0
        self.samples += 1
        for process in self.processes():
            try:
                # psutil.Process identifies a process by pid and start time (cached):
                # a pid reused by another process is another key.
                key = (process.pid, process.create_time())
                rss = int(process.memory_info().rss)
            except psutil.Error:
                continue  # exited since it was listed
            total += rss
            if process.pid in self._high_water_ok or process.pid not in self._before:
                rss = max(rss, high_water_bytes(process.pid) or 0)
            if rss > self.peaks.get(key, 0):
                self.peaks[key] = rss
                # Named again as it grows: a child seen between its fork and its exec
                # still shows its parent's command line.
                name = describe(process, self.root.pid)
                if name != EXITED or key not in self.names:
                    self.names[key] = name
        self.total_peak = max(self.total_peak, total)

    def peak(self) -> Peak:
        if not self.peaks:
            return Peak(0.0, "", 0.0, 0)
        key = max(self.peaks, key=lambda k: self.peaks[k])
        by_name: dict[str, float] = {}
        for each, rss in self.peaks.items():
            name = self.names[each]
            by_name[name] = max(by_name.get(name, 0.0), rss / MB)
        return Peak(
            process_mb=self.peaks[key] / MB,
            process=self.names[key],
            total_mb=self.total_peak / MB,
            processes=len(self.peaks),
            by_name=by_name,
        )
