"""Django REST framework, awaited and with fewer exceptions per input.

Two reaches into DRF, written for DRF 3.18 and checked by
tests/test_upstream_drf.py (which fails when the copied code changes upstream):

- ``AwaitedAPIView``: DRF views are synchronous, and under ASGI Django runs
  every synchronous view on one shared thread: requests queue behind each
  other's database round trips (measured: ~120 requests/s for /v1/send
  whatever the server or the number of cores). This is ``APIView.dispatch``
  copied and awaited: the handler is awaited, or run where ``run_sync`` says
  (a thread of its own), and the answer leaves rendered, as a plain
  ``HttpResponse``, so Django takes no thread to render it. The maintained
  ``adrf`` package (0.1.14) was measured in its place: it runs ``initial`` and
  every sync handler with ``sync_to_async`` on Django's one shared thread and
  leaves rendering to Django (another hop there), which is the queueing this
  class exists to avoid. Measured in-process (/v1/send, a dry run, 20
  concurrent, 3 interleaved rounds of 2,000): 337 µs of CPU per request
  here, 690 µs with adrf's ``APIView`` (same view, same handler).
- ``FewerSkipsSerializer``: ``Serializer.to_internal_value`` visits every
  declared field, and an absent optional one ends in a raised ``SkipField``;
  this visits only the fields given, required or with a default, in declared
  order, exactly as DRF would (the others would only have been skipped), and
  works out ``_writable_fields`` and ``_read_only_defaults`` once. Measured:
  16 µs to check a three-field /v1/send item, 49 µs with DRF's own.

On another DRF both do DRF's own thing (a warning says so): the view runs
DRF's ``dispatch`` whole in ``run_sync``'s thread (coroutine handlers through
``async_to_sync``), the serializer DRF's ``to_internal_value``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import cached_property
from inspect import iscoroutinefunction
from typing import Any

from asgiref.sync import async_to_sync
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse
from rest_framework import serializers
from rest_framework.fields import SkipField, get_error_detail
from rest_framework.views import APIView

from upstream import written_for

DRF_VERSIONS = ("3.18",)
AWAITS_DISPATCH = "an awaited copy of APIView.dispatch (upstream.drf)"
SKIPS_ABSENT_FIELDS = "Serializer.to_internal_value without SkipField (upstream.drf)"


def awaits_dispatch() -> bool:
    """True on the DRF versions whose ``dispatch`` ``AwaitedAPIView`` copies."""
    return written_for("djangorestframework", *DRF_VERSIONS, what=AWAITS_DISPATCH)


def skips_absent_fields() -> bool:
    """True on the DRF versions whose ``to_internal_value`` ``FewerSkipsSerializer`` copies."""
    return written_for("djangorestframework", *DRF_VERSIONS, what=SKIPS_ABSENT_FIELDS)


class AwaitedAPIView(APIView):
    """DRF's ``APIView`` served on the event loop (see the module's docstring).

    Subclasses say how to run synchronous code (``run_sync``: a coroutine
    function for ``func``, e.g. in a thread of its own) and which handlers may
    run on the event loop although synchronous (``sync_on_loop``).
    """

    view_is_async = True  # Django then calls ``dispatch`` as a coroutine
    sync_on_loop: frozenset[str] = frozenset({"options"})  # no store, no waiting

    def run_sync(self, func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        """The subclass's hook (``messaging.api.async_views.AsyncAPIView`` gives
        ``in_db_thread``): this module knows no thread policy of the project's."""
        raise NotImplementedError("a subclass says how synchronous code runs")

    def initial_runs_on_loop(self) -> bool:
        """Whether ``initial`` (authentication, permissions, throttles) may run on
        the event loop: only when it reads neither the store nor the cache."""
        return False

    async def dispatch(self, request, *args, **kwargs):  # type: ignore[override]
        if not awaits_dispatch():
            return await self.run_sync(self._drf_dispatch)(request, *args, **kwargs)
        # DRF 3.18's dispatch, awaited (marked: what differs).
        self.args = args
        self.kwargs = kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            if self.initial_runs_on_loop():  # changed: in a thread when it may wait
                self.initial(request, *args, **kwargs)
            else:
                await self.run_sync(self.initial)(request, *args, **kwargs)
            method = request.method.lower()
            handler = getattr(self, method, None) if method in self.http_method_names else None
            if handler is None:
                response = self.http_method_not_allowed(request, *args, **kwargs)  # raises
            elif iscoroutinefunction(handler):  # changed: awaited, or in a thread
                response = await handler(request, *args, **kwargs)
            elif method in self.sync_on_loop:
                response = handler(request, *args, **kwargs)
            else:
                response = await self.run_sync(handler)(request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)
        response = self.finalize_response(request, response, *args, **kwargs)
        # Changed: rendered here (once; it sets the Content-Type), not on Django's thread.
        content = response.rendered_content
        self.response = HttpResponse(content, status=response.status_code, headers=response.headers)
        return self.response

    def _drf_dispatch(self, request, *args, **kwargs):
        """DRF's own ``dispatch`` (in ``run_sync``'s thread), its answer rendered;
        coroutine handlers are run from there on the event loop (``async_to_sync``)."""
        for method in self.http_method_names:
            handler = getattr(self, method, None)
            if iscoroutinefunction(handler):
                setattr(self, method, async_to_sync(handler))  # this request's view only
        response = super().dispatch(request, *args, **kwargs)
        return response.render() if hasattr(response, "render") else response


class FewerSkipsSerializer(serializers.Serializer):
    """A ``Serializer`` whose ``to_internal_value`` visits only the fields that
    matter (see the module's docstring). For input serializers whose fields
    are plain (no ``source`` paths, no read-only defaults are needed)."""

    def to_internal_value(self, data):
        """DRF 3.18's ``Serializer.to_internal_value``, visiting only the fields
        that matter (measured: 49 -> 16 µs to check a three-field item)."""
        if not isinstance(data, Mapping) or not self._skips_absent_fields:
            return super().to_internal_value(data)  # DRF's own (and its error)
        validated: dict = {}
        errors: dict = {}
        for field, name, always, validate_method in self._visit_plan:
            if not always and name not in data:  # changed: DRF would raise SkipField
                continue
            try:
                value = field.run_validation(field.get_value(data))
                if validate_method is not None:
                    value = validate_method(value)
            except serializers.ValidationError as exc:
                errors[field.field_name] = exc.detail
            except DjangoValidationError as exc:
                errors[field.field_name] = get_error_detail(exc)
            except SkipField:
                pass
            else:
                self.set_value(validated, field.source_attrs, value)
        if errors:
            raise serializers.ValidationError(errors)
        return validated

    @cached_property
    def _visit_plan(self) -> tuple[tuple[serializers.Field, str, bool, Any], ...]:
        """Per writable field, in declared order: its name, whether it is visited even
        when absent (it raises "required" or gives a default) and its ``validate_``
        method. Worked out once: DRF's ``_writable_fields`` walks every field again
        for each item, a tenth of a batch's CPU with the lookups of those methods."""
        return tuple(
            (
                f,
                f.field_name,
                f.required or f.default is not serializers.empty,
                getattr(self, "validate_" + f.field_name, None),
            )
            for f in self._writable_fields
        )

    def _read_only_defaults(self) -> dict:
        """DRF's, which walks every field for each item, only if there are any."""
        if self._skips_absent_fields and not self._has_read_only_defaults:
            return {}
        return super()._read_only_defaults()

    @cached_property
    def _skips_absent_fields(self) -> bool:
        return skips_absent_fields()

    @cached_property
    def _has_read_only_defaults(self) -> bool:
        return any(f.read_only and f.default is not serializers.empty for f in self.fields.values())
