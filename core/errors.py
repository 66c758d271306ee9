"""The errors queue-ladder raises on purpose, under one base."""


class LadderError(Exception):
    """Base of every error raised on purpose; its message is one line for a user."""


class BadInput(LadderError):
    """A parameter, URL or name outside what is allowed (exit code 2)."""


class RunFailed(LadderError):
    """A run could not finish: a worker died, the broker went away, time ran out (exit code 1)."""
