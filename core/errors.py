"""The errors queue-ladder raises on purpose, under one base, and the exit codes they become."""


class LadderError(Exception):
    """Base of every error raised on purpose; its message is one line for a user."""


class BadInput(LadderError):
    """A parameter, URL or name outside what is allowed (exit code 2)."""


class RunFailed(LadderError):
    """A run could not finish: a worker died, the broker went away, time ran out (exit code 1)."""


# What `ladder` and the servers exit with: 0 every run verified, 1 a run failed or could
# not verify, 2 bad input; stopped by a signal, 128 + the signal, as a shell says it.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # SIGINT, SIGTERM


def exit_code(verified: bool) -> int:
    """The exit code of a command whose runs all verified, or not."""
    return EXIT_OK if verified else EXIT_FAILED
