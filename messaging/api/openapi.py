"""The OpenAPI description of the HTTP API (drf-spectacular), kept apart from the views.

The views stay thin: each carries one decorator from here. The serializers in
this module only describe answers that ``messaging.api.sending`` builds as plain
dicts; they validate nothing. The request of ``/v1/send`` is described by a
subclass of the real ``SendSerializer``, so a field added there shows up here.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers

from messaging.api.serializers import (
    REGISTER_CHOICES,
    MessageDetailSerializer,
    MessageSerializer,
    SendSerializer,
    TransitionSerializer,
)
from messaging.states import State
from sms.encoding import ENCODINGS

# --- answers ----------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="One sentence saying what is wrong.")


class ConflictSerializer(ErrorSerializer):
    id = serializers.CharField(required=False, help_text="Our id of the earlier message.")


class SendAnswerSerializer(serializers.Serializer):
    message_id = serializers.CharField(
        allow_null=True, help_text="The SMSC's id of the first part; null until it answered."
    )
    id = serializers.CharField(help_text="Our id of the message (for /v1/query?id=).")
    status = serializers.ChoiceField(choices=State.values)
    parts = serializers.IntegerField()
    encoding = serializers.CharField()
    message_ids = serializers.ListField(
        child=serializers.CharField(allow_null=True), help_text="The SMSC's id of each part."
    )
    connector = serializers.CharField(
        help_text='The SMSC connector its route chose ("default": the SMPP_* settings\').'
    )
    ucs2_forced_by = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="The characters that made an automatic encoding choose UCS-2.",
    )


class SendFailedSerializer(SendAnswerSerializer):
    error = serializers.CharField(help_text="What the SMSC's command_status means.")
    command_status = serializers.IntegerField()
    command_status_name = serializers.CharField(help_text="e.g. ESME_RINVDSTADR")


class DryRunSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    encoding = serializers.CharField()
    data_coding = serializers.IntegerField()
    parts = serializers.IntegerField()
    units = serializers.IntegerField(help_text="Length of the whole text in unit_name.")
    unit_name = serializers.CharField()
    ucs2_forced_by = serializers.ListField(child=serializers.CharField())
    connector = serializers.CharField(
        help_text="The connector its route would take now (the text is counted for it)."
    )


class BatchResultSerializer(serializers.Serializer):
    http_status = serializers.IntegerField(help_text="The status /v1/send would have answered.")
    id = serializers.CharField(required=False)
    message_id = serializers.CharField(required=False, allow_null=True)
    status = serializers.CharField(required=False)
    parts = serializers.IntegerField(required=False)
    encoding = serializers.CharField(required=False)
    error = serializers.CharField(required=False)


class BatchAnswerSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    rejected = serializers.IntegerField()
    results = BatchResultSerializer(many=True, help_text="One per item, in order.")


class QueryAnswerSerializer(serializers.Serializer):
    message_state = serializers.CharField(help_text="SMPP message_state name, e.g. DELIVERED.")
    final_date = serializers.CharField(help_text="ISO 8601, empty while not final.")
    error_code = serializers.IntegerField()
    id = serializers.CharField()
    status = serializers.ChoiceField(choices=State.values)
    parts = serializers.IntegerField()
    message_ids = serializers.ListField(child=serializers.CharField(allow_null=True))
    history = TransitionSerializer(many=True)


class HealthSerializer(serializers.Serializer):
    status = serializers.CharField()


class ReadinessSerializer(serializers.Serializer):
    status = serializers.CharField(help_text='"ok" or "unavailable".')
    checks = serializers.DictField(
        child=serializers.CharField(), help_text='e.g. {"database": "ok", "smpp": "failed"}'
    )
    bound_workers = serializers.ListField(child=serializers.CharField(), required=False)
    error = serializers.CharField(required=False, help_text="Which check failed, and why.")


class LinkHealthSerializer(serializers.Serializer):
    throttled = serializers.IntegerField()
    queue_full = serializers.IntegerField()
    refused = serializers.IntegerField()
    rate = serializers.FloatField()
    sent = serializers.FloatField()
    refusing_for = serializers.FloatField()
    bells_dropped = serializers.IntegerField()


class StatusLinkSerializer(serializers.Serializer):
    state = serializers.CharField(
        help_text="connecting, bound, disconnected, stalled, failed or stopped."
    )
    worker_id = serializers.CharField(required=False, help_text="Only with details (see below).")
    connector = serializers.CharField(
        required=False, help_text='The connector of the bind ("default": the SMPP_* settings\').'
    )
    bind = serializers.IntegerField(required=False, help_text="Which of its binds (from 0).")
    detail = serializers.CharField(required=False)
    smsc = serializers.CharField(required=False, help_text="host:port the worker binds to.")
    changed_at = serializers.DateTimeField(required=False)
    heartbeat_at = serializers.DateTimeField(required=False)
    health = LinkHealthSerializer(required=False, allow_null=True)


class StatusSerializer(serializers.Serializer):
    link = StatusLinkSerializer(
        many=True,
        help_text="One entry per bind (link); a cleanly stopped one is left out once another "
        "has reported, or after HEALTH_HEARTBEAT_MAX_AGE seconds.",
    )
    counts = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Messages per state (a key's own); {} without a key when keys are required.",
    )
    last_event_id = serializers.IntegerField()


# --- requests ---------------------------------------------------------------------------


class SendRequestSerializer(SendSerializer):
    """The parameters of /v1/send, with their allowed values spelled out."""

    enc = serializers.ChoiceField(
        choices=ENCODINGS, required=False, help_text="Text encoding; auto picks the smallest."
    )
    register = serializers.ChoiceField(
        choices=REGISTER_CHOICES,
        required=False,
        help_text="Delivery receipt wanted: on the final outcome, or on failure only.",
    )
    priority = serializers.CharField(required=False, help_text="0 to 3.")
    src = serializers.CharField(
        required=False,
        help_text=(
            "Sender: printable ASCII, at most 20 characters; digits only (a leading + "
            "dropped) with src_ton 1 or 2 and src_npi 1; at most 11 GSM characters with src_ton 5."
        ),
    )
    dst = serializers.CharField(help_text="Recipient: the same rules as src, with dst_ton/dst_npi.")
    validity = serializers.CharField(
        required=False,
        help_text=(
            "Seconds from now, ISO 8601 or an SMPP time; after now and at most "
            "SMS_MAX_VALIDITY (a year) ahead."
        ),
    )
    schedule = serializers.CharField(
        required=False,
        help_text=(
            "Seconds from now, ISO 8601 or an SMPP time; at most SMS_MAX_SCHEDULE_AHEAD "
            "(a year) ahead; a time already past means now."
        ),
    )
    callback_url = serializers.URLField(
        required=False, help_text="http or https; an api_key in it is stored redacted."
    )
    wait = serializers.CharField(
        required=False,
        help_text="Seconds to wait for the SMSC (bounded by SMS_SEND_WAIT); 0 or false: none.",
    )
    dry_run = serializers.CharField(
        required=False, help_text="true: only say how the text would be encoded and split."
    )


# --- the operations ---------------------------------------------------------------------

_ERROR = OpenApiResponse(ErrorSerializer)
# Every API operation may answer these when SMSAPI_AUTH=required.
_KEY_ERRORS = {
    401: OpenApiResponse(ErrorSerializer, description="Missing, invalid or revoked API key"),
    429: OpenApiResponse(
        ErrorSerializer, description="The key's rate limit is exceeded; see Retry-After"
    ),
}
_FORMATS = ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")
_IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description=(
        "Sending again with the same key answers as the first time; never sends twice. "
        "At most 128 printable ASCII characters (a longer one, or a control character: 400)."
    ),
)

_send = extend_schema(
    tags=["messages"],
    summary="Send a message",
    description="Parameters may come in the query string or the body (form, multipart or JSON).",
    request={media: SendRequestSerializer for media in _FORMATS},
    parameters=[_IDEMPOTENCY_KEY],
    responses={
        200: PolymorphicProxySerializer(
            component_name="SendOrDryRun",
            serializers=[SendAnswerSerializer, DryRunSerializer],
            resource_type_field_name=None,
        ),
        202: OpenApiResponse(SendAnswerSerializer, description="Stored; the SMSC has not answered"),
        400: _ERROR,
        409: OpenApiResponse(ConflictSerializer, description="Idempotency-Key reused"),
        502: OpenApiResponse(SendFailedSerializer, description="The SMSC refused the message"),
        503: OpenApiResponse(ErrorSerializer, description="The message store is unavailable"),
        **_KEY_ERRORS,
    },
)

# POST and PUT are one function in the view: one description serves both (the
# operation ids are derived: v1_send_create, v1_send_update).
send_schema = extend_schema_view(post=_send)

send_batch_schema = extend_schema_view(
    post=extend_schema(
        operation_id="send_batch",
        tags=["messages"],
        summary="Send many messages",
        description="A JSON array of /v1/send objects; each is answered in order.",
        request={"application/json": SendRequestSerializer(many=True)},
        parameters=[_IDEMPOTENCY_KEY],
        responses={
            200: BatchAnswerSerializer,
            400: _ERROR,
            409: OpenApiResponse(ConflictSerializer, description="Idempotency-Key reused"),
            503: OpenApiResponse(ErrorSerializer, description="The message store is unavailable"),
            **_KEY_ERRORS,
        },
    )
)

query_schema = extend_schema_view(
    get=extend_schema(
        operation_id="query",
        tags=["messages"],
        summary="Delivery state of a message",
        parameters=[
            OpenApiParameter("message_id", OpenApiTypes.STR, description="The SMSC's id."),
            OpenApiParameter("id", OpenApiTypes.STR, description="Our id."),
            OpenApiParameter("src", OpenApiTypes.STR, description="Accepted and ignored."),
        ],
        responses={200: QueryAnswerSerializer, 400: _ERROR, 404: _ERROR, **_KEY_ERRORS},
    )
)

message_list_schema = extend_schema_view(
    get=extend_schema(
        operation_id="messages_list",
        tags=["messages"],
        summary="The message log, newest first",
        parameters=[
            OpenApiParameter(
                "status",
                OpenApiTypes.STR,
                description=f"Comma-separated states: {', '.join(State.values)}.",
            ),
            OpenApiParameter("dst", OpenApiTypes.STR),
            OpenApiParameter("reference", OpenApiTypes.STR),
            OpenApiParameter("since", OpenApiTypes.STR, description="ISO 8601 date or time."),
            OpenApiParameter("until", OpenApiTypes.STR, description="ISO 8601 date or time."),
        ],
        responses={200: MessageSerializer(many=True), 400: _ERROR, **_KEY_ERRORS},
    )
)

message_detail_schema = extend_schema_view(
    get=extend_schema(
        operation_id="messages_retrieve",
        tags=["messages"],
        summary="One message: parts, SMSC ids, receipts and its timeline",
        responses={200: MessageDetailSerializer, 404: _ERROR, **_KEY_ERRORS},
    )
)

status_schema = extend_schema_view(
    get=extend_schema(
        operation_id="status",
        tags=["operations"],
        summary="The SMPP link of each worker and the message counts (the dashboard's header)",
        description=(
            "With SMSAPI_AUTH=required: without a key, each link says only its state (all its "
            "details to a logged-in staff user of the admin) and counts is {}; with a key, "
            "the details and the counts of that key's messages."
        ),
        parameters=[
            OpenApiParameter("api_key", OpenApiTypes.STR, description="A key, for browsers.")
        ],
        responses={200: StatusSerializer, 401: _KEY_ERRORS[401]},
    )
)

health_schema = extend_schema_view(
    get=extend_schema(
        operation_id="healthz",
        tags=["operations"],
        summary="Liveness (readiness with ?ready=1)",
        parameters=[
            OpenApiParameter("ready", OpenApiTypes.STR, description="1: check readiness instead.")
        ],
        responses={
            200: PolymorphicProxySerializer(
                component_name="HealthOrReadiness",
                serializers=[HealthSerializer, ReadinessSerializer],
                resource_type_field_name=None,
            ),
            503: ReadinessSerializer,
        },
    )
)

readiness_schema = extend_schema_view(
    get=extend_schema(
        operation_id="readyz",
        tags=["operations"],
        summary="Readiness: the store answers and a worker is bound to the SMSC",
        responses={200: ReadinessSerializer, 503: ReadinessSerializer},
    )
)

metrics_schema = extend_schema_view(
    get=extend_schema(
        operation_id="metrics",
        tags=["operations"],
        summary="Prometheus metrics (see docs/operations.md)",
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR),
            (200, "application/openmetrics-text"): OpenApiResponse(OpenApiTypes.STR),
        },
    )
)
