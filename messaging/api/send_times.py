"""The times a client gives: ``schedule`` and ``validity`` of a message, and the
``since``/``until`` filters of the message list.

A time from a client is hostile: impossible dates (``2020-02-30``), SMPP times
that are not times (``991399999999000+``) and moments no store can read back
(``9999-12-31T23:59:59-14:00`` is year 10000 in UTC: psycopg cannot read it,
and every claim of the worker failed on it). Each is a ``InvalidTime`` with the
client's words, never a ``ValueError`` or ``OverflowError`` from below.

A send time must also lie within a window around now, so nothing outside what
PostgreSQL, SQLite, Python's ``datetime`` and SMPP's relative time (99 years)
can hold ever reaches the store: ``SMS_MAX_SCHEDULE_AHEAD`` and
``SMS_MAX_VALIDITY`` seconds, a year by default, never more than ``MAX_WINDOW``.

Pure functions, no Django settings: the caller passes the window.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime, timedelta

from django.utils.dateparse import parse_date, parse_datetime

# The longest window an operator's setting can open: SMPP's relative time holds
# 99 years, and now + this stays far inside Python's year 9999.
MAX_WINDOW = timedelta(days=50 * 365)
MAX_TIME_LENGTH = 64  # the longest ISO 8601 time is about 32 characters

SMPP_ABSOLUTE_TIME = re.compile(r"(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d)(\d{2})([+-])")
SMPP_RELATIVE_TIME = re.compile(r"(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})\d{3}R")
MAX_SMPP_QUARTERS = 48  # UTC offset of an absolute SMPP time: at most 12 hours

_EXPECTED = "seconds, ISO 8601 or SMPP time expected"


class InvalidTime(ValueError):
    """A time a client gave that cannot be used; ``str()`` is the client's error text."""


@functools.lru_cache(maxsize=16)  # called with a setting per request: worked out once
def window(seconds: float) -> timedelta:
    """An operator's window setting as a timedelta, within ``[0, MAX_WINDOW]``."""
    if not seconds > 0:  # also NaN
        return timedelta(0)
    return timedelta(seconds=min(seconds, MAX_WINDOW.total_seconds()))


def parse_time(value: str, name: str, now: datetime) -> datetime:
    """Seconds from now, ISO 8601, or an SMPP absolute/relative time, as an aware
    UTC datetime; ``InvalidTime`` naming ``name`` for anything else.

    A time without an offset is UTC. ``now`` must be an aware datetime.
    """
    value = value.strip()
    if len(value) > MAX_TIME_LENGTH:
        raise InvalidTime(f'invalid parameter "{name}": {_EXPECTED}')
    try:
        moment = _parse(value, now)
    except OverflowError:  # e.g. year 10000 once in UTC
        raise InvalidTime(f'invalid parameter "{name}"="{value}": out of range') from None
    except ValueError:  # well-formed but impossible: 2020-02-30, hour 25, month 13
        raise InvalidTime(f'invalid parameter "{name}"="{value}": no such date or time') from None
    if moment is None:
        raise InvalidTime(f'invalid parameter "{name}"="{value}": {_EXPECTED}')
    return moment


def _parse(value: str, now: datetime) -> datetime | None:
    if value.isascii() and value.isdigit() and len(value) < 10:
        return now + timedelta(seconds=int(value))
    if match := SMPP_RELATIVE_TIME.fullmatch(value):
        y, mo, d, h, mi, s = (int(g) for g in match.groups())
        return now + timedelta(days=y * 365 + mo * 30 + d, hours=h, minutes=mi, seconds=s)
    if match := SMPP_ABSOLUTE_TIME.fullmatch(value):
        yy, mo, d, h, mi, s, tenths, quarters, sign = match.groups()
        if int(quarters) > MAX_SMPP_QUARTERS:
            raise ValueError("UTC offset over 12 hours")
        local = datetime(2000 + int(yy), int(mo), int(d), int(h), int(mi), int(s), tzinfo=UTC)
        offset = timedelta(minutes=15 * int(quarters)) * (1 if sign == "+" else -1)
        return local - offset + timedelta(milliseconds=100 * int(tenths))
    parsed = parse_datetime(value)  # raises ValueError for well-formed impossible dates
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)  # OverflowError past year 9999 or before year 1


def schedule_time(value: str, now: datetime, ahead: timedelta) -> datetime:
    """When to send: at most ``ahead`` from now; a time already past means now
    (clients' clocks differ), but not one more than ``ahead`` ago."""
    moment = parse_time(value, "schedule", now)
    if moment > now + ahead:
        raise InvalidTime(
            f'invalid parameter "schedule": more than {_describe(ahead)} ahead '
            "(SMS_MAX_SCHEDULE_AHEAD)"
        )
    if moment < now - ahead:
        raise InvalidTime(f'invalid parameter "schedule": more than {_describe(ahead)} ago')
    return moment


def validity_time(value: str, now: datetime, ahead: timedelta) -> datetime:
    """Until when the message may be sent: after now, at most ``ahead`` from now."""
    moment = parse_time(value, "validity", now)
    if moment <= now:
        raise InvalidTime('invalid parameter "validity": that time has already passed')
    if moment > now + ahead:
        raise InvalidTime(
            f'invalid parameter "validity": more than {_describe(ahead)} ahead (SMS_MAX_VALIDITY)'
        )
    return moment


def filter_moment(value: str, name: str) -> datetime:
    """An ISO 8601 date (midnight UTC) or time for a list filter, as an aware UTC
    datetime any store can compare with; ``InvalidTime`` otherwise."""
    value = value.strip()
    moment: datetime | None = None
    if len(value) <= MAX_TIME_LENGTH:
        try:
            parsed: datetime | date | None = parse_datetime(value) or parse_date(value)
            if isinstance(parsed, datetime):
                moment = (
                    parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
                )
            elif isinstance(parsed, date):
                moment = datetime(parsed.year, parsed.month, parsed.day, tzinfo=UTC)
        except (ValueError, OverflowError):  # e.g. 2020-13-45, or year 10000 in UTC
            moment = None
    if moment is None:
        raise InvalidTime(f'invalid parameter "{name}"="{value}": ISO 8601 expected')
    return moment


def _describe(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds % 86400 == 0:
        days = seconds // 86400
        return f"{days} day{'s' if days != 1 else ''}"
    return f"{seconds} seconds"
