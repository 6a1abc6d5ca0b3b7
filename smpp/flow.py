"""Send-rate control: a token bucket whose rate backs off when the SMSC throttles,
and the watch on an SMSC that refuses submits.

The SMSC's account has a rate it enforces (ESME_RTHROTTLED past it). We stay
under the configured ``max_rate`` and, when throttled anyway, halve the rate we
were sending at and then win it back step by step: additive increase,
multiplicative decrease, as TCP does for the same problem. "The rate we were
sending at" is the bucket's rate when one is set, else the rate measured over
the last second (``RateMeter``): an average over an earlier interval is about 0
after an idle spell, and halving it stopped sending nearly altogether.

``SubmitRefusals`` counts what the SMSC refuses for now (throttled, queue full,
system error, no answer): for a summary in the log, the link's health figures,
and to tell a session that refuses everything (stalled) from one that is busy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``rate=None`` is unlimited.

    The one token bucket of the project: the worker's send rate (``AdaptiveRate``),
    the client session's limit on the SMSC's requests, and the simulator's
    ``max_rate``. ``set_rate`` settles the tokens earned at the old rate first;
    assigning ``rate`` and ``burst`` directly applies them from the last refill
    (the simulator's reading of a rate changed at run time).
    """

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


class RateMeter:
    """Events a second over the last ``span`` seconds, in O(1) time and memory.

    Two fixed windows, the previous one weighted by how much of it still lies
    within the span (the usual sliding-window estimate): ``add`` is called once
    per batch of submits, never per part.
    """

    def __init__(self, span: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.span = span
        self._clock = clock
        self._start = clock()
        self._current = 0
        self._previous = 0

    def _roll(self, now: float) -> None:
        elapsed = now - self._start
        if elapsed >= self.span:
            # The window just ended becomes the previous one, unless a whole span passed.
            self._previous = self._current if elapsed < 2 * self.span else 0
            self._current = 0
            self._start = now - elapsed % self.span

    def add(self, count: int = 1) -> None:
        self._roll(self._clock())
        self._current += count

    def rate(self) -> float:
        """Events a second, over the last ``span`` seconds."""
        now = self._clock()
        self._roll(now)
        left_of_previous = max(0.0, 1.0 - (now - self._start) / self.span)
        return (self._previous * left_of_previous + self._current) / self.span

    def recent_peak(self) -> float:
        """The higher of ``rate()`` and the whole previous window's rate: what was sent
        up to two spans ago still counts (an answer can come a second or more late)."""
        rate = self.rate()
        return max(rate, self._previous / self.span)


class AdaptiveRate:
    """The rate we send at: ``max_rate`` until throttled, then AIMD.

    ``sent`` measures what we actually send (the feed adds each batch), so an
    unlimited configuration has a number to halve: the rate of the last second,
    which after an idle spell is the burst that overshot, not the idle average.
    """

    MIN_RATE = 1.0
    RECOVERY_INTERVAL = 1.0  # seconds without throttling between increases

    def __init__(self, max_rate: float | None, clock: Callable[[], float] = time.monotonic):
        self.max_rate = max_rate
        self._clock = clock
        self.bucket = TokenBucket(max_rate, clock=clock)
        self.sent = RateMeter(clock=clock)
        self.throttled_count = 0
        self._last_change = clock()

    @property
    def rate(self) -> float | None:
        return self.bucket.rate

    def in_use(self) -> float:
        """The rate we are sending at: the bucket's when it has one, else the measured one."""
        return self.bucket.rate if self.bucket.rate is not None else self.sent.recent_peak()

    def throttled(self) -> None:
        """The SMSC said ESME_RTHROTTLED: halve the rate in use (at most once a recovery
        interval: the answers to what was sent before the cut say the same again)."""
        self.throttled_count += 1
        now = self._clock()
        if self.bucket.rate is not None and now - self._last_change < self.RECOVERY_INTERVAL:
            return
        self.bucket.set_rate(max(self.MIN_RATE, self.in_use() / 2))
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


@dataclass
class RefusalSummary:
    """Refusals of one summary interval: how many of each status, over how long."""

    counts: dict[int | None, int]  # command_status (None: no answer in time) -> count
    seconds: float


class SubmitRefusals:
    """What the SMSC refuses for now (throttled, queue full, system error, no answer).

    Counted per status since the worker started (the link's figures) and since
    the last summary (the log), and timed: a session is *stalled* when its
    refusals span ``stall_after`` seconds with nothing accepted in between (a
    refusal at each end: an idle spell alone proves nothing, and parts refused
    with 0x14 come back only 10 s or more later). Each call is O(1);
    ``accepted`` is only called while a spell of refusals is open.
    """

    def __init__(self, stall_after: float, clock: Callable[[], float] = time.monotonic):
        self.stall_after = stall_after
        self._clock = clock
        self.totals: dict[int | None, int] = {}
        self._interval: dict[int | None, int] = {}
        self._interval_start = clock()
        self._last_summary = float("-inf")
        self.refusing_since: float | None = None
        self.last_status: int | None = None  # of the last refusal
        self._last_refused = float("-inf")

    def accepted(self) -> None:
        """A submit went through: the spell of refusals, if any, is over."""
        self.refusing_since = None

    def new_session(self) -> None:
        """A new bind gets its own chance: a spell of refusals starts again from 0."""
        self.refusing_since = None

    def refused(self, status: int | None) -> None:
        now = self._clock()
        self.totals[status] = self.totals.get(status, 0) + 1
        if not self._interval:
            self._interval_start = now
        self._interval[status] = self._interval.get(status, 0) + 1
        self.last_status = status
        if self.refusing_since is None:
            self.refusing_since = now
        self._last_refused = now

    def total(self, *statuses: int | None) -> int:
        return sum(self.totals.get(status, 0) for status in statuses)

    def refusing_for(self) -> float:
        """Seconds since the first refusal with nothing accepted since (0: none)."""
        if self.refusing_since is None:
            return 0.0
        return self._clock() - self.refusing_since

    def stalled(self) -> bool:
        """Every submit refused, from a first refusal to one ``stall_after`` s later."""
        return (
            self.stall_after > 0
            and self.refusing_since is not None
            and self._last_refused - self.refusing_since >= self.stall_after
        )

    def take_summary(self, every: float) -> RefusalSummary | None:
        """The refusals since the last summary, at most once ``every`` seconds (the
        first of a spell at once); None when there is nothing to say yet."""
        now = self._clock()
        if not self._interval or now - self._last_summary < every:
            return None
        summary = RefusalSummary(dict(self._interval), max(0.0, now - self._interval_start))
        self._interval.clear()
        self._last_summary = now
        return summary
