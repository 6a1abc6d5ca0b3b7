"""Per-key rate limits: ``ApiKey.rate_limit`` requests a minute (0: none).

Counted in Django's cache, one counter per key and second over a sliding
minute, so that several server processes share one limit when the cache is
shared (Redis when REDIS_URL is set; local memory, per process, otherwise).
``incr`` is atomic on both backends. A refused request does not count: a
client that keeps knocking gets in again once its minute has passed.
"""

from __future__ import annotations

import math
import time

from django.core.cache import cache
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from messaging.models import ApiKey

WINDOW_SECONDS = 60


def rate_limit_text(api_key: ApiKey) -> str:
    return f"rate limit of {api_key.rate_limit} requests a minute exceeded"


def _bucket_key(api_key: ApiKey, second: int) -> str:
    # The prefix, not the id: ids come back after a database reset, prefixes do not.
    return f"smsapi:rate:{api_key.prefix}:{second}"


def check_rate(api_key: ApiKey | None, now: float | None = None) -> int | None:
    """Count one request of ``api_key``; None when it may go on, else the seconds
    to wait (for ``Retry-After``) before the next one would be let through."""
    if api_key is None or not api_key.rate_limit:
        return None
    now = time.time() if now is None else now
    second = int(now)
    current = _bucket_key(api_key, second)
    cache.add(current, 0, timeout=WINDOW_SECONDS + 5)
    try:
        count = cache.incr(current)
    except ValueError:  # evicted between add and incr
        cache.set(current, 1, timeout=WINDOW_SECONDS + 5)
        count = 1
    seconds = range(second - WINDOW_SECONDS + 1, second)  # the rest of the minute, oldest first
    earlier = cache.get_many([_bucket_key(api_key, s) for s in seconds])
    counts = [earlier.get(_bucket_key(api_key, s), 0) for s in seconds]
    total = count + sum(counts)
    if total <= api_key.rate_limit:
        return None
    cache.decr(current)  # refused: it does not use up the allowance
    # Wait until enough of the oldest requests have left the minute.
    excess = total - api_key.rate_limit
    for age, bucket in enumerate(counts):
        excess -= bucket
        if excess <= 0:
            return max(1, math.ceil(second - WINDOW_SECONDS + 1 + age + WINDOW_SECONDS - now))
    return max(1, math.ceil(second + WINDOW_SECONDS - now))


class ApiKeyRateThrottle(BaseThrottle):
    """DRF throttle keyed by the request's API key (``request.auth``)."""

    def allow_request(self, request: Request, view) -> bool:
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        wait = check_rate(api_key)
        if wait is not None:
            refused = Throttled(detail=rate_limit_text(api_key))  # without DRF's "Expected ..."
            refused.wait = wait  # becomes Retry-After
            raise refused
        return True
