"""Send-rate control: a token bucket whose rate backs off when the SMSC throttles.

The SMSC's account has a rate it enforces (ESME_RTHROTTLED past it). We stay
under the configured ``max_rate`` and, when throttled anyway, halve our rate
and then win it back step by step: additive increase, multiplicative
decrease, as TCP does for the same problem.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``rate=None`` is unlimited."""

    def __init__(
        self,
        rate: float | None,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._clock = clock
        self.rate = rate
        # A small burst keeps every one-second window close to ``rate``.
        self.burst = burst if burst is not None else max(1.0, (rate or 0) / 20)
        self._tokens = self.burst
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        if self.rate is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self, wanted: int) -> int:
        """Take up to ``wanted`` whole tokens now; returns how many were taken."""
        if self.rate is None:
            return wanted
        self._refill()
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return granted

    def give_back(self, count: int) -> None:
        """Return tokens taken but not used (nothing was due to send)."""
        if self.rate is not None:
            self._tokens = min(self.burst, self._tokens + count)

    def wait_time(self) -> float:
        """Seconds until one token is available."""
        if self.rate is None:
            return 0.0
        self._refill()
        missing = 1.0 - self._tokens
        return 0.0 if missing <= 0 else missing / self.rate

    def set_rate(self, rate: float | None) -> None:
        self._refill()
        self.rate = rate
        self.burst = max(1.0, (rate or 0) / 20)
        self._tokens = min(self._tokens, self.burst)


class AdaptiveRate:
    """The rate we send at: ``max_rate`` until throttled, then AIMD.

    ``observed_rate`` tells what we were actually sending at, so an unlimited
    configuration still has a number to halve.
    """

    MIN_RATE = 1.0
    RECOVERY_INTERVAL = 1.0  # seconds without throttling between increases

    def __init__(self, max_rate: float | None, clock: Callable[[], float] = time.monotonic):
        self.max_rate = max_rate
        self._clock = clock
        self.bucket = TokenBucket(max_rate, clock=clock)
        self.throttled_count = 0
        self._last_change = clock()

    @property
    def rate(self) -> float | None:
        return self.bucket.rate

    def throttled(self, observed_rate: float) -> None:
        """The SMSC said ESME_RTHROTTLED: halve the rate (at most once a recovery interval)."""
        self.throttled_count += 1
        now = self._clock()
        if self.bucket.rate is not None and now - self._last_change < self.RECOVERY_INTERVAL:
            return
        current = self.bucket.rate if self.bucket.rate is not None else observed_rate
        self.bucket.set_rate(max(self.MIN_RATE, current / 2))
        self._last_change = now

    def tick(self) -> None:
        """Called now and then: win back some rate after a quiet interval."""
        now = self._clock()
        if self.bucket.rate is None or now - self._last_change < self.RECOVERY_INTERVAL:
            return
        if self.max_rate is not None and self.bucket.rate >= self.max_rate:
            return
        step = max(self.MIN_RATE, self.bucket.rate * 0.1)
        new_rate = self.bucket.rate + step
        if self.max_rate is not None:
            new_rate = min(self.max_rate, new_rate)
        self.bucket.set_rate(new_rate)
        self._last_change = now
