"""The configuration of `celery -A tasks worker` and `celery -A tasks flower`, read from
their environment when they start (Celery's own "celeryconfig" pattern).

Celery imports this module when the app in tasks/celery_app.py is first configured: in a
worker or Flower, never in the ladder process, which makes apps of its own with the URLs
it resolved (make_app). A setting that is not allowed stops the worker at once, in one
line.
"""

from __future__ import annotations

import sys

from core.broker import transport_options
from core.errors import BadInput
from core.settings import FALLBACK_BROKER_URL, Settings

try:
    _settings = Settings.load()
except BadInput as error:
    print(f"ladder: error: {error}", file=sys.stderr)
    raise SystemExit(2) from None

broker_url = _settings.broker_url or FALLBACK_BROKER_URL
result_backend = _settings.result_backend or broker_url
broker_transport_options = transport_options(_settings.visibility_timeout_s)
