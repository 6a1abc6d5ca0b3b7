"""Settings for the servers the live tests start: the project's, plus the stream knobs
from the environment, so a test can shorten the keep-alive or turn polling (almost) off."""

import os

from smsapi.settings import *  # noqa: F403

SSE_KEEPALIVE = float(os.environ.get("SSE_KEEPALIVE", "15"))
EVENTS_ACK_TIMEOUT = float(os.environ.get("EVENTS_ACK_TIMEOUT", "30"))
EVENTS_POLL_INTERVAL = float(os.environ.get("EVENTS_POLL_INTERVAL", "1"))
