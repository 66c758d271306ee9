"""Standard output that cannot fail in the middle of a command.

A closed stdout, a full disk or a reader that went away (`| head`) would otherwise raise
wherever the next line is printed, as a traceback, and cut the command short: the demo
would not write its results files. Here the first failure is kept and every later write
goes nowhere; the command finishes, and ladder then says, in one line, that its output
could not be written.
"""

from __future__ import annotations

import io
import os
import sys
from typing import TextIO


class GuardedOutput(io.TextIOBase):
    """A text stream over another that records the first error instead of raising it."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.error: str | None = None if stream is not None else "standard output is closed"

    def write(self, text: str) -> int:
        if self.error is None and self.stream is not None:
            try:
                self.stream.write(text)
                if "\n" in text:
                    self.stream.flush()
            except (OSError, ValueError) as error:
                self.failed(error)
        return len(text)

    def flush(self) -> None:
        if self.error is None and self.stream is not None:
            try:
                self.stream.flush()
            except (OSError, ValueError) as error:
                self.failed(error)

    def failed(self, error: BaseException) -> None:
        self.error = getattr(error, "strerror", None) or str(error) or type(error).__name__
        # What could not be written stays in the stream's buffer, and Python would try
        # again at exit, with a traceback: it goes to /dev/null instead.
        try:
            fd = self.stream.fileno() if self.stream is not None else -1
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass

    def isatty(self) -> bool:
        try:
            return self.stream is not None and self.error is None and self.stream.isatty()
        except (OSError, ValueError):
            return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", None) or "utf-8"

    def fileno(self) -> int:
        if self.stream is None:
            raise io.UnsupportedOperation("standard output is closed")
        return self.stream.fileno()


def guard_stdout() -> GuardedOutput:
    """Put a GuardedOutput in place of sys.stdout; the guard, to ask for its error."""
    guarded = GuardedOutput(sys.stdout)
    sys.stdout = guarded
    return guarded


def unwritten() -> str | None:
    """Why the guarded standard output lost some of what was written to it, once flushed;
    None if it lost nothing, or is not guarded."""
    stream = sys.stdout
    if not isinstance(stream, GuardedOutput):
        return None
    stream.flush()
    return stream.error
