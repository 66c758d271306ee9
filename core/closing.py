"""The one shape of ladder's context managers: open() on entering, close() on leaving."""

from __future__ import annotations

from typing import Self


class Closing:
    """A context manager written as two methods. Leaving the block closes it, however
    the block ends; an open() that fails half way closes it too, before its error goes
    on, so close() stops whatever open() got as far as starting, and nothing more."""

    def open(self) -> None:
        """Start what the object holds; nothing to start here."""

    def close(self) -> None:
        """Stop what open() started; nothing to stop here."""

    def __enter__(self) -> Self:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
