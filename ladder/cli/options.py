"""What every command shares: its context object, its option types and its options.

A command is a LadderCommand: once its options are parsed, the settings are built from
--broker and the environment, in the one place that does it, and the CELERY_* variables
leave the environment before any command can import Celery.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from core.commandline import Whole
from core.errors import BadInput
from core.settings import Settings, forget_celery_variables
from ladder.registry import INFO, info
from servers import MODELS

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    """The context object: where tables go, and the settings once the command's are read."""

    out: Console
    settings: Settings = field(default_factory=Settings)


class LadderCommand(click.Command):
    """A command whose settings are loaded once its own options, --broker among them, are."""

    def invoke(self, ctx: click.Context) -> Any:
        state = ctx.find_object(State)
        assert state is not None, "main() gives every command its State"
        state.settings = Settings.load(broker=ctx.params.pop("broker", None))
        forget_celery_variables()
        return super().invoke(ctx)


pass_state = click.make_pass_decorator(State)


class Group(click.Group):
    """Commands listed in the order they were added, a missing or unknown one refused in
    argparse's words, which scripts and tests read; its commands are LadderCommands."""

    command_class = LadderCommand

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args:
            raise click.UsageError("the following arguments are required: COMMAND", ctx)
        if not args[0].startswith("-") and args[0] not in self.commands:
            choices = ", ".join(self.commands)
            raise click.UsageError(
                f"argument COMMAND: invalid choice: {args[0]!r} (choose from {choices})", ctx
            )
        return super().parse_args(ctx, args)


def command(name: str, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Command]:
    return click.command(name, cls=LadderCommand, **kwargs)


class RungName(click.ParamType[str]):
    name = "RUNG"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return info(value).name
        except BadInput as error:
            self.fail(str(error), param, ctx)


class NameList(click.ParamType[list[str]]):
    """Comma-separated names, each one of `choices`: at least one."""

    def __init__(self, what: str, choices: Callable[[], list[str]]) -> None:
        self.what, self.choices = what, choices
        self.name = f"{what.upper()}S"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[str]:
        if isinstance(value, list):
            return value
        names = [name.strip() for name in value.split(",") if name.strip()]
        allowed = self.choices()
        if not names:
            self.fail(f"must name at least one {self.what} of: {', '.join(allowed)}", param, ctx)
        for name in names:
            if name not in allowed:
                choose = ", ".join(allowed)
                self.fail(f"unknown {self.what} {name!r}; choose one of: {choose}", param, ctx)
        return names


class Counts(click.ParamType[list[int]]):
    """Comma-separated whole numbers: 1,50,500."""

    name = "K[,K...]"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[int]:
        if isinstance(value, list):
            return value
        return [Whole().convert(part, param, ctx) for part in value.split(",") if part.strip()]


RUNG = RungName()
RUNG_LIST = NameList("rung", lambda: list(INFO))
MODEL_LIST = NameList("model", lambda: list(MODELS))
COUNTS = Counts()


def json_option(what: str = "one JSON object") -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=f"print {what}, nothing else")


def broker_option(f: F) -> F:
    # Not click's envvar: CELERY_BROKER_URL comes with CELERY_RESULT_BACKEND, and
    # Settings.load reads both, names the variable in its errors, and lets --broker win.
    return click.option(
        "--broker",
        metavar="URL|@FILE",
        help="broker URL, or @FILE holding it (default: $CELERY_BROKER_URL, else a private Redis)",
    )(f)


def out_option(what: str) -> Callable[[F], F]:
    return click.option(
        "--out",
        type=click.Path(path_type=Path, file_okay=False),
        default=Path("results"),
        show_default=True,
        help=f"folder for {what}",
    )


def quick_option(what: str) -> Callable[[F], F]:
    return click.option("--quick", is_flag=True, help=what)


def repeat_option(default: str) -> Callable[[F], F]:
    return click.option("--repeat", type=Whole(), default=None, help=f"rounds ({default})")


def rounds(repeat: int | None, default: int) -> int:
    if repeat is None:
        return default
    if repeat < 1:
        raise BadInput(f"--repeat must be at least 1 (got {repeat})")
    return repeat


def writable_folder(folder: Path) -> Path:
    """Check before the runs, not after, that results can be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInput(f"--out cannot be created: {folder} ({error.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise BadInput(f"--out is not writable: {folder}")
    return folder
