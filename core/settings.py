"""Configuration, built once from the command line and the environment, then passed down.

This is the one module that reads os.environ. Every value is checked here, where it
comes in: a bad one is one line naming the variable or option, and exit code 2.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import BadInput
from core.urls import check_url, printable

# What a worker started from a plain shell, with no URL in its environment, serves: the
# local Redis (rather than Celery's own default, an AMQP broker).
FALLBACK_BROKER_URL = "redis://127.0.0.1:6379/0"
# Flower's usual port, where the embedded stack starts it unless told otherwise.
FLOWER_PORT = 5555

# Celery reads many variables of this prefix: its URLs (before its own app.conf), a
# module to configure it from, a loader, its workers' limits. Left in ladder's
# environment, any of them would change what ladder set up, in ladder or in the workers
# it starts: see forget_celery_variables.
CELERY_PREFIX = "CELERY_"
# No more of a file given as `--broker @FILE` is read: a URL is far shorter, and a file
# like /dev/zero never ends.
MAX_URL_BYTES = 64 * 1024
VISIBILITY_TIMEOUT_S = 30.0
# A consumer's unacknowledged messages come back after the visibility timeout: under a
# second, a slow item would be delivered again while it is being handled; past an hour,
# a dead consumer's items would hold up the run for that long.
VISIBILITY_RANGE_S = (1.0, 3600.0)


@dataclass(frozen=True)
class Settings:
    """Where the broker is. None means: start a private one (the embedded stack)."""

    broker_url: str | None = None
    result_backend: str | None = None
    visibility_timeout_s: float = VISIBILITY_TIMEOUT_S

    @classmethod
    def load(cls, broker: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """--broker wins over the environment, for the broker and its result backend
        alike: both are then that URL. Else CELERY_BROKER_URL, with CELERY_RESULT_BACKEND
        (default: the broker). Else a private stack, whose Redis is both.

        `--broker @FILE` reads the URL from FILE, so that no password need be on a
        command line, where every user of the machine sees it in ps.
        """
        env = os.environ if environ is None else environ
        broker_url: str | None
        backend: str | None
        if broker is not None:
            broker_url = check_url(read_url(broker), "--broker URL")
            backend = broker_url
        elif env.get("CELERY_BROKER_URL"):
            broker_url = check_url(env["CELERY_BROKER_URL"], "CELERY_BROKER_URL")
            given = env.get("CELERY_RESULT_BACKEND")
            backend = check_url(given, "CELERY_RESULT_BACKEND") if given else broker_url
        else:
            broker_url = backend = None
        return cls(
            broker_url=broker_url,
            result_backend=backend,
            visibility_timeout_s=seconds(
                "LADDER_VISIBILITY_TIMEOUT_S",
                env.get("LADDER_VISIBILITY_TIMEOUT_S"),
                VISIBILITY_TIMEOUT_S,
                VISIBILITY_RANGE_S,
            ),
        )


def read_url(given: str) -> str:
    """The URL given with --broker: as it is, or from the first line of the file named
    after an @, of which no more than MAX_URL_BYTES is read."""
    if not given.startswith("@"):
        if not given.strip():
            raise BadInput("--broker is empty: give a URL, or @FILE holding one")
        return given
    path = Path(given[1:])
    # A name with a newline in it would make the message two lines.
    where, name = f"--broker {printable(given)}", printable(str(path))
    try:
        with path.open("rb") as file:
            head = file.read(MAX_URL_BYTES + 1)
    except OSError as error:
        raise BadInput(f"{where}: cannot read {name} ({error.strerror})") from None
    line, *rest = re.split(rb"[\r\n]", head.lstrip(), maxsplit=1)
    if not rest and len(head) > MAX_URL_BYTES:
        raise BadInput(f"{where}: the first line of {name} is longer than {MAX_URL_BYTES:,} bytes")
    try:
        url = line.decode().strip()
    except UnicodeDecodeError:
        raise BadInput(f"{where}: cannot read {name} (not text)") from None
    if not url:
        raise BadInput(f"{where}: {name} is empty")
    return url


def seconds(name: str, text: str | None, default: float, bounds: tuple[float, float]) -> float:
    """A duration from the environment: a finite number of seconds within bounds."""
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"{name} must be a number of seconds (got {text!r:.40})") from None
    low, high = bounds
    if not math.isfinite(value) or not low <= value <= high:
        raise BadInput(f"{name} must be between {low:g} and {high:g} seconds (got {text:.40})")
    return value


def forget_celery_variables(environ: MutableMapping[str, str] | None = None) -> None:
    """Take every CELERY_* variable out of this process's environment, once Settings has
    read the URLs: every Celery app ladder makes is given the URLs it resolved, every
    worker it starts inherits this environment and takes the rest of its settings from
    tasks/worker_config.py, and a variable left behind would win over them."""
    env = os.environ if environ is None else environ
    for name in [name for name in env if name.startswith(CELERY_PREFIX)]:
        del env[name]


def flower_login_file() -> Path:
    """Where Flower's password is kept, for this user alone, as compose keeps its own in
    /run/ladder/flower-login: $XDG_CONFIG_HOME/queue-ladder/flower-login."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "queue-ladder" / "flower-login"
