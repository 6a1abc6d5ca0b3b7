"""JSON from clients, read with a bound on nesting.

Python's ``json`` recurses once per level: a body of 100,000 ``[`` raises
``RecursionError`` (a 500, or a WebSocket closed with 1011), and a few
thousand levels still cost a deep walk to everything that reads the result.
Nothing this API accepts is nested more than three levels deep, so anything
past ``JSON_MAX_DEPTH`` is refused as the client's error.

Used by the HTTP parser (``messaging.api.parsers``) and by the WebSocket consumers,
so both refuse the same input with the same words.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

DEFAULT_MAX_DEPTH = 32


class JsonInputError(ValueError):
    """The client sent JSON we do not read: malformed or nested too deep."""


def max_depth() -> int:
    return getattr(settings, "JSON_MAX_DEPTH", DEFAULT_MAX_DEPTH)


def _depth(value: Any) -> int:
    """Nesting depth of a parsed value, walked without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _refuse_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (RFC 8259): refused."""
    raise JsonInputError(f"malformed JSON: {name} is not a JSON value")


def loads(raw: str | bytes | bytearray, limit: int | None = None) -> Any:
    """``json.loads`` that refuses nesting deeper than ``limit`` with ``JsonInputError``.

    Bytes must be UTF-8 (RFC 8259; ``json.loads`` would also guess UTF-16 or 32
    and let encoded surrogates through). ``NaN`` and ``Infinity`` are refused.
    A body with no more brackets than the limit cannot be nested deeper than it:
    that (C-speed) count spares the walk for every ordinary request.
    """
    limit = max_depth() if limit is None else limit
    if isinstance(raw, bytes | bytearray):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonInputError(
                f"malformed JSON: not UTF-8 (byte 0x{raw[exc.start]:02x} at position {exc.start})"
            ) from None
    brackets = raw.count("[") + raw.count("{")
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except JsonInputError:
        raise
    except RecursionError:
        raise JsonInputError(f"JSON nested deeper than {limit} levels") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise JsonInputError(f"malformed JSON: {exc}") from None
    if brackets > limit and _depth(value) > limit:
        raise JsonInputError(f"JSON nested deeper than {limit} levels")
    return value
