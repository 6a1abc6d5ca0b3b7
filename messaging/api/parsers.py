"""The API's request parsers: DRF's, reading bodies the way a hostile client cannot abuse.

DRF's parsers (and Django's, under them) read what they are given:

- JSON recurses once per level of nesting: a body of 100,000 ``[`` raised
  ``RecursionError`` and answered 500.
- Forms and query strings are decoded with ``errors="replace"`` (and a form body
  that is not UTF-8 at all is read as Latin-1): bytes the client never meant as
  text became U+FFFD or "Ã¿" and were sent to a handset.
- A JSON or form body is read whole, whatever its size.

These subclasses (set in ``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]``) read at
most ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes (413 past it), decode strictly (400
for bytes that are not text in the request's charset) and bound JSON's depth
(``messaging.api.json_input``, 400). ``check_query_string`` does the same for the
query string. Every refusal is an ``APIException``: the API's exception handler
answers it as ``{"error": ...}``.
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, QueryDict
from rest_framework import parsers, status
from rest_framework.exceptions import APIException, ParseError

from messaging.api.json_input import JsonInputError, loads

REPLACEMENT_CHARACTER = "\ufffd"
_REPLACEMENT_BYTES = REPLACEMENT_CHARACTER.encode("utf-8")


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request body too large"
    default_code = "payload_too_large"


def body_limit() -> int | None:
    """The most bytes a body parsed by the API may have (Django's setting; None: no bound)."""
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def read_body(stream: Any, parser_context: dict | None) -> bytes:
    """The whole body, or ``PayloadTooLarge`` once it is past ``body_limit()``.

    The declared Content-Length is checked first; the read is bounded as well,
    in case the body is longer than it said.
    """
    limit = body_limit()
    if limit is None:
        return stream.read()
    request = (parser_context or {}).get("request")
    if request is not None:
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            raise _too_large(limit)
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise _too_large(limit)
    return raw


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body too large: at most {limit} bytes (DATA_UPLOAD_MAX_MEMORY_SIZE)"
    )


def decode_body(raw: bytes, encoding: str) -> str:
    """``raw`` as text, strictly: ``ParseError`` for bytes that are not ``encoding``."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"the request body is not valid {encoding.upper()}: byte 0x{raw[exc.start]:02x} "
            f"at position {exc.start}"
        ) from None


def strict_query_dict(text: str, encoding: str, what: str) -> QueryDict:
    """A URL-encoded string as Django's ``QueryDict``, except that a percent-escape
    which is not ``encoding`` is a ``ParseError`` instead of U+FFFD."""
    data = QueryDict(mutable=True, encoding=encoding)
    try:
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            encoding=encoding,
            errors="strict",
            max_num_fields=settings.DATA_UPLOAD_MAX_NUMBER_FIELDS,
        )
    except UnicodeDecodeError:
        raise ParseError(
            f"the {what} is not valid {encoding.upper()} once percent-decoded"
        ) from None
    except ValueError:  # parse_qsl's way to say max_num_fields was exceeded
        raise ParseError(f"too many fields in the {what}") from None
    for key, value in pairs:
        data.appendlist(key, value)
    return data


class JSONParser(parsers.JSONParser):
    """JSON of a bounded size and depth, strictly UTF-8 (or the declared charset)."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = parsers.get_encoding(parser_context or {})
        text = decode_body(read_body(stream, parser_context), encoding)
        try:
            return loads(text)
        except JsonInputError as exc:
            raise ParseError(str(exc)) from None


class FormParser(parsers.FormParser):
    """``application/x-www-form-urlencoded``, strictly decoded, of a bounded size."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = parsers.get_encoding(parser_context or {})
        text = decode_body(read_body(stream, parser_context), encoding)
        return strict_query_dict(text, encoding, "request body")


class MultiPartParser(parsers.MultiPartParser):
    """``multipart/form-data`` (``curl -F``), of a bounded size, without replaced bytes.

    Django decodes each field with ``errors="replace"`` and offers no strict
    mode. A field that holds U+FFFD after decoding is checked against the raw
    body: more U+FFFD in the fields than the body carried as UTF-8 bytes means
    Django made some of them up from bytes that were not text: a 400. The check
    costs nothing for fields without U+FFFD. The whole body is bounded like the
    others (the API takes no file uploads).
    """

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = parsers.get_encoding(parser_context or {})
        raw = read_body(stream, parser_context)
        try:
            parsed = super().parse(io.BytesIO(raw), media_type, parser_context)
        except RequestDataTooBig:
            raise _too_large(body_limit() or 0) from None
        except (TooManyFieldsSent, TooManyFilesSent):
            raise ParseError("too many fields in the request body") from None
        replaced = sum(
            key.count(REPLACEMENT_CHARACTER)
            + sum(value.count(REPLACEMENT_CHARACTER) for value in values)
            for key, values in parsed.data.lists()
        )
        if replaced and replaced > raw.count(_REPLACEMENT_BYTES):
            raise ParseError(f"a field of the request body is not valid {encoding.upper()}")
        return parsed


def _raw_query_string(request: HttpRequest) -> bytes:
    """The query string's bytes as the client sent them.

    ASGI hands them over as bytes (Django decodes them as UTF-8, strictly: a
    request with others never gets here); under WSGI (the test client) they are
    PEP 3333's Latin-1 string of the same bytes.
    """
    scope = getattr(request, "scope", None)
    if scope is not None:
        raw = scope.get("query_string", b"")
        return raw if isinstance(raw, bytes) else raw.encode("utf-8")
    return request.META.get("QUERY_STRING", "").encode("latin-1")


def check_query_string(request: HttpRequest) -> None:
    """``ParseError`` when the query string is not UTF-8, raw or percent-decoded.

    Django's ``QueryDict`` would read such bytes as U+FFFD (or as Latin-1).
    A query string of plain ASCII without ``%`` (most of them) is not looked at again.
    """
    text = request.META.get("QUERY_STRING", "")
    if not text or (text.isascii() and "%" not in text):
        return
    raw = _raw_query_string(request)
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("the query string is not valid UTF-8") from None
    if "%" in decoded:
        strict_query_dict(decoded, "utf-8", "query string")
