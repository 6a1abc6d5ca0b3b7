"""Log formats: one JSON object a line for machines, plain text for people.

Which one is used is decided in settings (``LOG_FORMAT``: ``json`` or ``text``;
by default JSON unless stderr is a terminal). Both show the context a log call
passes with ``extra=`` (``message_id``, ``event_id``, ...): JSON as keys of the
object, text as ``key=value`` after the message. So a log call that concerns a
message says which one with ``extra={"message_id": message.pk}`` and every
line about that message can be found with one filter.

Our own formatter rather than python-json-logger: it is this one class, and it
keeps the field names and the handling of ``extra`` under our control.

Both take API keys out of every line they write (``messaging.url_secrets``):
a URL with ``?api_key=`` reaches the logs through many loggers (Django's
request records carry the request, an exception's text may quote a URL),
so the redaction is here, where every logger's line passes.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from messaging.url_secrets import redact_url

# The attributes every LogRecord has: anything else came from ``extra=``.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def record_context(record: logging.LogRecord) -> dict:
    """What the log call passed with ``extra=``, in the order it gave it."""
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD}


def _redacted_text(value: object) -> str:
    return redact_url(str(value))


def _redacted(value: object, depth: int = 0) -> object:
    """``value`` with ``api_key`` taken out of every string in it."""
    if isinstance(value, str):
        return redact_url(value)
    if depth < 4 and isinstance(value, dict):
        return {key: _redacted(item, depth + 1) for key, item in value.items()}
    if depth < 4 and isinstance(value, list | tuple):
        return [_redacted(item, depth + 1) for item in value]
    return value


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", <extra keys>, "exception"}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **record_context(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # Redacted field by field, before JSON escapes quotes into the values.
        return json.dumps(_redacted(line), ensure_ascii=False, default=_redacted_text)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...`` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        text = super().formatMessage(record)
        context = " ".join(f"{key}={value}" for key, value in record_context(record).items())
        return f"{text} [{context}]" if context else text

    def format(self, record: logging.LogRecord) -> str:
        return redact_url(super().format(record))  # the exception's text too


def default_format(stream=None) -> str:
    """``text`` on a terminal, ``json`` otherwise (a file, a pipe, a container's log)."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"
