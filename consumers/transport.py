"""kombu's Redis transport, refusing a malformed message instead of dying on it.

kombu decodes what BRPOP returns (JSON, then the envelope) with no handler around it:
one LPUSH of garbage by hand would end a Celery worker or a kombu consumer. Here such a
message is logged in one line and dropped: it is off the list already, and was never
held unacknowledged.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

# What decoding a popped item raises (JSONDecodeError, binascii.Error and
# UnicodeDecodeError are ValueErrors); never what a lost connection raises.
MALFORMED = (ValueError, TypeError, AttributeError, KeyError, RecursionError)


class Channel(kombu_redis.Channel):
    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))
        except MALFORMED as error:
            log.error(
                "discarded a malformed message, not a kombu message: %s: %.200s",
                type(error).__name__,
                error,
            )
            return True


class Transport(kombu_redis.Transport):
    Channel = Channel
