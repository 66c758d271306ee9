"""How a long command shows that it moves, on stderr.

On a terminal, a live bar, and a line per finished case above it. Anywhere else (CI,
`docker compose logs`, a pipe) a bar would be nothing or noise: one line per finished
case, so that a log says the command is alive and how far it got. With --json on a
terminal, nothing: the JSON is what was asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar

from core.results import RunResult
from core.rung import Progress as Advance
from ladder.report import fmt_rate


class Progress:
    def __init__(self, err: Console, as_json: bool) -> None:
        self.err = err
        self.live = err.is_terminal and not as_json
        self.lines = self.live or not err.is_terminal

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[Advance]:
        """A live bar of `total` steps on a terminal: advance(n) moves it n steps."""
        if not self.live:
            yield lambda n: None
            return
        bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.err,
            transient=True,
        )
        with bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)

    def say(self, line: str) -> None:
        """A line on stderr, as a case finishes or a stage begins."""
        if self.lines:
            self.err.print(line, highlight=False, soft_wrap=True)

    def finished(self, label: str, result: RunResult) -> None:
        self.say(case_line(label, result.throughput, result.unit, result.verified, result.note))


def case_line(label: str, rate: float, unit: str, verified: bool, note: str) -> str:
    """One finished case, in the columns every long command shares."""
    mark = "ok" if verified else f"FAILED {note}"
    return f"  {label:<42} {fmt_rate(rate):>12} {unit:<10} {mark}"
