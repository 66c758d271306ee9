"""The one way a command line is read and ends, for `ladder` and for a server run alone.

Bad input is one line on stderr and exit code 2; a failure is one line and exit 1; never
a traceback. click's own usage error is several lines (Usage, Try, Error): here it is one,
in argparse's words (`argument --n: ...`), which scripts and tests read. A --help
that standard output could not take is one line and exit 1, not a silent exit 0.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from core.errors import EXIT_BAD_INPUT, EXIT_FAILED, BadInput, LadderError
from core.output import unwritten


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    print(f"ladder: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def invoke(command: click.Command, argv: Sequence[str], prog: str, obj: Any = None) -> int:
    """Parse argv, run command, and return what it returns, an exit code. Bad input,
    a failure and output that could not be written each end here in one line."""
    try:
        with command.make_context(prog, list(argv), obj=obj) as ctx:
            code = int(command.invoke(ctx) or 0)
    except click.exceptions.Exit as done:  # --help, once shown
        code = done.exit_code
    except click.UsageError as error:
        fail(usage_message(error))
    except click.ClickException as error:
        fail(one_line(error.format_message()), error.exit_code)
    except BadInput as error:
        fail(str(error))
    except LadderError as error:
        fail(str(error), EXIT_FAILED)
    if lost := unwritten():
        fail(f"cannot write the output: {lost}", EXIT_FAILED)
    return code


def usage_message(error: click.UsageError) -> str:
    """A usage error in one line, naming the option as it is spelt."""
    if isinstance(error, click.MissingParameter) and error.param is not None:
        return f"the following arguments are required: {spelling(error.param)}"
    if isinstance(error, click.BadParameter) and error.param is not None:
        return f"argument {spelling(error.param)}: {one_line(error.message)}"
    if isinstance(error, click.NoSuchOption):
        where = error.ctx.command_path if error.ctx else "this command"
        near = f" (did you mean {' or '.join(error.possibilities)}?)" if error.possibilities else ""
        return f"{where} takes no option {error.option_name}{near}"
    return one_line(error.format_message())


def spelling(param: click.Parameter) -> str:
    if isinstance(param, click.Option):
        return "/".join(param.opts)
    return param.human_readable_name


def one_line(text: str) -> str:
    return " ".join(text.split())


class Whole(click.ParamType[int]):
    """A whole number, `_` allowed between digits (20_000_000), within bounds if given."""

    name = "N"

    def __init__(self, low: int | None = None, high: int | None = None) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            number = int(str(value).replace("_", ""))
        except ValueError:
            self.fail(f"must be a whole number (got {value!r})", param, ctx)
        if self.low is not None and self.high is not None:
            if not self.low <= number <= self.high:
                self.fail(f"must be between {self.low} and {self.high} (got {number})", param, ctx)
        elif self.low is not None and number < self.low:
            self.fail(f"must be at least {self.low} (got {number})", param, ctx)
        return number


class Number(click.ParamType[float]):
    """A finite number: nan and inf are refused where they are given."""

    name = "X"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            number = float(value)
        except ValueError:
            self.fail(f"must be a number (got {value!r})", param, ctx)
        if not math.isfinite(number):
            self.fail(f"must be a finite number (got {value!r})", param, ctx)
        return number


class OneOf(click.Choice[str]):
    """click's Choice, refusing in one line as every list of names here does."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value not in self.choices:
            choices = ", ".join(map(str, self.choices))
            self.fail(f"invalid choice {value!r}; choose one of: {choices}", param, ctx)
        return value


PORT_NUMBER = Whole(0, 65535)
AT_LEAST_ONE = Whole(1)
