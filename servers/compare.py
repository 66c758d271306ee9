"""The four models side by side: each server started as its own process, loaded at each K, stopped.

for each model: start `python -m servers.<model>_server --port 0`, read its port
    -> run_load at K = 1, 50, 500 -> stop it (SIGTERM, then its whole session)
-> one row per model and K, a table, and which model held up best at each K
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from core import procs
from core.errors import BadInput, RunFailed
from servers import HOST, MODELS
from servers.load import REQUESTS_PER_RUN, LoadResult, check, messages_for, run_load

CONNECTIONS = (1, 50, 500)
START_TIMEOUT_S = 30.0
CLOSE = 1.10  # a lead under 10% is within the noise of one run on a shared machine
READY = re.compile(r"^serving (\w+) on (\S+):(\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class Row:
    """One model loaded at one K."""

    model: str
    load: LoadResult


@contextmanager
def running(model: str, log_dir: Path) -> Iterator[tuple[str, int]]:
    """A model's server in a process of its own on a free port: yields (host, port)."""
    log = log_dir / f"{model}_server.log"
    argv = [sys.executable, "-m", MODELS[model], "--host", HOST, "--port", "0"]
    found: re.Match[str] | None = None

    def listening() -> bool:
        nonlocal found
        found = READY.search(log.read_text(errors="replace"))
        return found is not None

    server = procs.start_ready(argv, log, listening, f"the {model} server", START_TIMEOUT_S)
    try:
        assert found is not None
        yield found[2], int(found[3])
    finally:
        procs.stop(server)


def compare(
    models: Sequence[str] = tuple(MODELS),
    connections: Sequence[int] = CONNECTIONS,
    messages: int | None = None,
    on_row: Callable[[Row], None] = lambda row: None,
    log_dir: Path | None = None,
    requests: int = REQUESTS_PER_RUN,
) -> list[Row]:
    """Every model at every K; `messages` per connection, by default `requests` split."""
    for model in models:
        if model not in MODELS:
            raise BadInput(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}")
    for k in connections:
        check(k, messages_for(k, messages, requests))
    rows: list[Row] = []
    with procs.scratch("ladder-servers-") as scratch:
        folder = log_dir or Path(scratch)
        for model in models:
            with running(model, folder) as (host, port):
                for k in connections:
                    load = load_or_fail(host, port, k, messages_for(k, messages, requests))
                    row = Row(model, load)
                    rows.append(row)
                    on_row(row)
    return rows


def load_or_fail(host: str, port: int, connections: int, messages: int) -> LoadResult:
    """run_load, with a server that stopped answering kept as a row of errors."""
    try:
        return run_load(host, port, connections, messages)
    except RunFailed as error:
        return LoadResult(
            host, port, connections, messages, 0.0, 0, 0, connections, None, str(error)
        )


def best_at_each_k(rows: Sequence[Row]) -> dict[int, Row | None]:
    """At each K, the model with the most requests/s among those with no error and no wrong
    reply; None where every model failed."""
    best: dict[int, Row | None] = {}
    for row in rows:
        k = row.load.connections
        best.setdefault(k, None)
        current = best[k]
        if row.load.ok and (
            current is None or row.load.requests_per_s > current.load.requests_per_s
        ):
            best[k] = row
    return best


def findings(rows: Sequence[Row]) -> list[str]:
    """Sentences computed from the rows: who held up best at each K, and who failed where."""
    parts = []
    for k, winner in best_at_each_k(rows).items():
        if winner is None:
            parts.append(f"at K = {k}, none (every model had errors)")
            continue
        others = [r for r in rows if r.load.connections == k and r.load.ok and r is not winner]
        runner_up = max(others, key=lambda r: r.load.requests_per_s, default=None)
        figures = f"{winner.load.requests_per_s:,.0f} requests/s"
        if winner.load.latency_ms:
            figures += f", p99 {winner.load.latency_ms['p99']:.1f} ms"
        if runner_up is not None and runner_up.load.requests_per_s > 0:
            ratio = winner.load.requests_per_s / runner_up.load.requests_per_s
            figures += f", {ratio:.2f}x {runner_up.model}"
            if ratio < CLOSE:
                figures += ": too close to call on one run"
        parts.append(f"at K = {k}, {winner.model} ({figures})")
    sentences = [f"Held up best (most requests/s, no errors): {'; '.join(parts)}."] if parts else []
    for row in rows:
        if not row.load.ok:
            sentences.append(
                f"{row.model} at K = {row.load.connections}: {row.load.errors} errors, "
                f"{row.load.wrong} wrong replies, {row.load.replies:,} of "
                f"{row.load.requests:,} answered ({row.load.problem})."
            )
    return sentences


def table(rows: Sequence[Row]) -> Table:
    """One row per model and K, grouped by K."""
    result = Table(title="Four servers, side by side", title_justify="left")
    columns = ("K", "model", "messages each", "requests/s", "p50 ms", "p99 ms", "wrong", "errors")
    for name in columns:
        result.add_column(name, justify="left" if name == "model" else "right")
    by_k = sorted(rows, key=lambda r: r.load.connections)  # stable: model order kept
    best = best_at_each_k(rows)
    for i, row in enumerate(by_k):
        load = row.load
        k = load.connections
        first_of_k = i == 0 or by_k[i - 1].load.connections != k
        last_of_k = i + 1 < len(by_k) and by_k[i + 1].load.connections != k
        result.add_row(
            f"{k:,}" if first_of_k else "",
            f"[bold]{row.model}[/bold]" if best[k] is row else row.model,
            *figures(load),
            end_section=last_of_k,
        )
    return result


def load_table(results: Sequence[LoadResult]) -> Table:
    """`ladder load` against one server: one row per K."""
    result = Table(title=f"Load on {results[0].host}:{results[0].port}", title_justify="left")
    columns = ("K", "messages each", "requests/s", "p50 ms", "p99 ms", "wrong", "errors")
    for name in columns:
        result.add_column(name, justify="right")
    for load in results:
        result.add_row(f"{load.connections:,}", *figures(load))
    return result


def figures(load: LoadResult) -> list[str]:
    """messages each, requests/s, p50, p99, wrong, errors: a problem in red."""
    latency = load.latency_ms or {"p50": float("nan"), "p99": float("nan")}
    return [
        f"{load.messages:,}",
        f"{load.requests_per_s:,.0f}",
        f"{latency['p50']:.2f}",
        f"{latency['p99']:.2f}",
        f"[red]{load.wrong:,}[/red]" if load.wrong else "0",
        f"[red]{load.errors:,}[/red]" if load.errors else "0",
    ]


def progress_line(row: Row) -> str:
    """A row as it is measured, for stderr."""
    load = row.load
    mark = "ok" if load.ok else f"FAILED: {load.problem}"
    rate = f"{load.requests_per_s:>9,.0f} requests/s"
    return f"  {row.model:<8} K = {load.connections:<5,} {rate}  {mark}"
