"""The one way a command's findings leave it: JSON for programs or tables and lines for
people, then the exit code: 0 when every run verified, 1 when one did not or a file
could not be written, the first such problem named in one line."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType

from core.commandline import fail
from core.errors import EXIT_FAILED, exit_code


@dataclass
class Outcome:
    """What a command found."""

    # What --json prints, on one line; None: nothing (the files hold it).
    data: Any
    # What a person reads: tables, and lines such as the findings.
    shown: Sequence[RenderableType]
    verified: bool
    # Files that could not be written, each said in one line.
    problems: list[str] = field(default_factory=list)


def show(outcome: Outcome, as_json: bool, out: Console) -> None:
    if as_json:
        if outcome.data is not None:
            print(json.dumps(outcome.data))
        return
    for item in outcome.shown:
        out.print(item)


def exit_code_of(*outcomes: Outcome) -> int:
    for outcome in outcomes:
        if outcome.problems:
            fail(outcome.problems[0], EXIT_FAILED)
    return exit_code(all(outcome.verified for outcome in outcomes))


def finish(outcome: Outcome, as_json: bool, out: Console) -> int:
    show(outcome, as_json, out)
    return exit_code_of(outcome)


def save(
    write: Callable[[], Sequence[Path]], problems: list[str], what: str = "the results"
) -> list[Path]:
    """The files write() wrote; a failure to write (a full disk, say) is kept in problems
    in one line, and what was written before it stays."""
    try:
        return list(write())
    except OSError as error:
        where = error.filename or what
        problems.append(f"cannot write {where}: {error.strerror or error}")
        return []


def written(paths: Sequence[Path]) -> str:
    return "written: " + (", ".join(str(p) for p in paths) or "nothing")
