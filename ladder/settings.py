"""Configuration, built once from the command line and the environment, then passed down.

This is the one module that reads os.environ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# What a worker started from a plain shell, with no URL in its environment, serves: the
# local Redis (rather than Celery's own default, an AMQP broker).
FALLBACK_BROKER_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Settings:
    """Where the broker is. None means: start a private one (the embedded stack)."""

    broker_url: str | None = None
    result_backend: str | None = None
    visibility_timeout_s: float = 30.0

    @classmethod
    def load(cls, broker: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """--broker wins over CELERY_BROKER_URL; the backend defaults to the broker."""
        env = os.environ if environ is None else environ
        broker_url = broker or env.get("CELERY_BROKER_URL") or None
        backend = env.get("CELERY_RESULT_BACKEND") or broker_url
        visibility = env.get("LADDER_VISIBILITY_TIMEOUT_S")
        return cls(
            broker_url=broker_url,
            result_backend=backend,
            visibility_timeout_s=float(visibility) if visibility else cls.visibility_timeout_s,
        )
