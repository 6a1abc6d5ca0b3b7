"""Validation of API input, in the order and with the words the old server used."""

from __future__ import annotations

import math
import re
import threading
from datetime import datetime

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from messaging.api.send_times import InvalidTime, schedule_time, validity_time, window
from messaging.models import Message, MessagePart, Receipt, StateTransition
from messaging.outbound import split_for_smsc
from messaging.routing import public_name
from messaging.store import NewMessage
from messaging.webhooks.targets import InvalidCallbackURL, clean_callback_url
from sms.addresses import InvalidAddress, check_characters, clean_address
from sms.encoding import ENCODINGS, UnencodableCharacter
from sms.splitting import SplitResult, TooManyParts
from upstream.drf import FewerSkipsSerializer

REGISTER_CHOICES = ("final", "failure")
CALLBACK_URL_MAX_LENGTH = 500  # Message.callback_url


def is_decimal(text: str, max_digits: int = 3) -> bool:
    """ASCII digits only, at most ``max_digits`` of them: str.isdigit() also accepts
    "¹", which int() refuses, and int() refuses more than 4,300 digits."""
    return len(text) <= max_digits and text.isascii() and text.isdigit()


def shown(value: str, limit: int = 40) -> str:
    """A client's value as an error message quotes it: cut short, as it may be huge,
    and a lone surrogate (which no UTF-8 answer can carry) written as its escape."""
    value = value if len(value) <= limit else value[:limit] + "..."
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _missing(name: str, what: str) -> dict:
    text = f'missing parameter "{name}": {what}'
    return {"required": text, "blank": text, "null": text}


class ByteField(serializers.CharField):
    """A 0..255 number (TON, NPI), with the old server's error text."""

    def __init__(self, name: str, **kwargs):
        self.param_name = name
        super().__init__(required=False, allow_blank=True, **kwargs)

    def run_validation(self, data=serializers.empty):
        # CharField answers a blank value without calling to_internal_value.
        value = super().run_validation(data)
        return 0 if value == "" else value

    def to_internal_value(self, data):
        raw = super().to_internal_value(data)
        if raw == "":
            return 0
        if not is_decimal(raw) or int(raw) > 255:
            raise serializers.ValidationError(
                f'invalid parameter "{self.param_name}"="{shown(raw)}": '
                "must be a number from 0 to 255"
            )
        return int(raw)


class _SurrogateCheck(ProhibitSurrogateCharactersValidator):
    """DRF's check of every text field, the same error, with the search in C: DRF
    loops over the characters in Python, which py-spy put at 7 % of a batch's CPU."""

    _surrogate = re.compile("[\ud800-\udfff]")

    def __call__(self, value: object) -> None:
        found = self._surrogate.search(str(value))
        if found is not None:
            message = self.message.format(code_point=ord(found.group()))
            raise serializers.ValidationError(message, code=self.code)


_NO_SURROGATES = _SurrogateCheck()


class SendSerializer(FewerSkipsSerializer):
    """``/v1/send`` input. Fields are declared in the seed's validation order:
    the first error in this order is the one reported. Most requests give 3 of
    these 17 fields: ``FewerSkipsSerializer`` (``upstream.drf``) visits only those
    that matter, as DRF would."""

    # Addresses: their length and characters are checked by sms.addresses. Not
    # trimmed by DRF (which strips "\n" and "\t" too): only spaces are, a control
    # character is refused wherever it is.
    src = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    dst = serializers.CharField(
        error_messages=_missing("dst", "number of recipient"), trim_whitespace=False
    )
    text = serializers.CharField(
        error_messages=_missing("text", "text message"), trim_whitespace=False
    )
    enc = serializers.CharField(required=False, allow_blank=True)
    register = serializers.CharField(required=False, allow_blank=True)
    src_ton = ByteField("src_ton")
    src_npi = ByteField("src_npi")
    dst_ton = ByteField("dst_ton")
    dst_npi = ByteField("dst_npi")
    priority = serializers.CharField(required=False, allow_blank=True)
    validity = serializers.CharField(required=False, allow_blank=True)
    schedule = serializers.CharField(required=False, allow_blank=True)
    reference = serializers.CharField(required=False, allow_blank=True, max_length=128)
    callback_url = serializers.URLField(
        required=False, allow_blank=True, max_length=CALLBACK_URL_MAX_LENGTH
    )
    wait = serializers.CharField(required=False, allow_blank=True, default="")
    dry_run = serializers.CharField(required=False, allow_blank=True)

    def get_fields(self) -> dict:
        """The declared fields, with DRF's surrogate check swapped for ours."""
        fields = super().get_fields()
        for field in fields.values():
            field.validators = [
                _NO_SURROGATES if type(v) is ProhibitSurrogateCharactersValidator else v
                for v in field.validators
            ]
        return fields

    def validate_src(self, value: str) -> str:
        return _address_characters(value, "src")

    def validate_dst(self, value: str) -> str:
        value = _address_characters(value, "dst")
        if not value:
            raise serializers.ValidationError(_missing("dst", "number of recipient")["blank"])
        return value

    def validate_enc(self, value: str) -> str:
        if value and value not in ENCODINGS:
            raise serializers.ValidationError(
                f'invalid parameter "enc"="{shown(value)}"; supported: {", ".join(ENCODINGS)}'
            )
        return value or "auto"

    def validate_register(self, value: str) -> str:
        if value and value not in REGISTER_CHOICES:
            raise serializers.ValidationError(
                f'invalid parameter "register"="{shown(value)}"; supported: final, failure'
            )
        return value or settings.SMS_DEFAULT_REGISTER

    def validate_priority(self, value: str) -> int:
        if value in ("", None):
            return 0
        if not is_decimal(value) or int(value) > 3:
            raise serializers.ValidationError(
                f'invalid parameter "priority"="{shown(value)}": must be 0, 1, 2 or 3'
            )
        return int(value)

    def validate_validity(self, value: str) -> datetime | None:
        if not value:
            return None
        try:
            return validity_time(value, timezone.now(), window(settings.SMS_MAX_VALIDITY))
        except InvalidTime as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_schedule(self, value: str) -> datetime | None:
        if not value:
            return None
        try:
            return schedule_time(value, timezone.now(), window(settings.SMS_MAX_SCHEDULE_AHEAD))
        except InvalidTime as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_callback_url(self, value: str) -> str:
        """Only http and https, stored without any API key in it (webhook_targets)."""
        try:
            cleaned = clean_callback_url(value)
        except InvalidCallbackURL as exc:
            raise serializers.ValidationError(f'invalid parameter "callback_url": {exc}') from None
        if len(cleaned) > CALLBACK_URL_MAX_LENGTH:
            raise serializers.ValidationError(
                f'invalid parameter "callback_url": at most {CALLBACK_URL_MAX_LENGTH} characters'
            )
        return cleaned

    def validate_wait(self, value: str) -> float:
        """On by default, bounded by SMS_SEND_WAIT; 0/false turns it off."""
        limit = settings.SMS_SEND_WAIT
        lowered = (value or "").strip().lower()
        if lowered in ("", "1", "true", "yes", "on"):
            return limit
        if lowered in ("0", "false", "no", "off"):
            return 0.0
        try:
            seconds = float(lowered) if len(lowered) <= 32 else math.nan
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds):
            raise serializers.ValidationError(
                f'invalid parameter "wait"="{shown(value)}": true, false or seconds expected'
            )
        return max(0.0, min(seconds, limit))

    def validate_dry_run(self, value: str) -> bool:
        return (value or "").strip().lower() in ("1", "true", "yes", "on")

    def validate(self, attrs: dict) -> dict:
        """Addresses must fit their TON/NPI, validity must come after the schedule,
        the text must fit the encoding and the part limit; nothing is replaced."""
        for name in ("src", "dst"):
            if name in attrs:
                try:
                    attrs[name] = clean_address(
                        attrs[name],
                        attrs.get(f"{name}_ton", 0),
                        attrs.get(f"{name}_npi", 0),
                        name,
                        characters_checked=True,  # by validate_src / validate_dst
                    )
                except InvalidAddress as exc:
                    raise serializers.ValidationError({name: str(exc)}) from None
        validity, schedule = attrs.get("validity"), attrs.get("schedule")
        if validity is not None and schedule is not None and validity <= schedule:
            raise serializers.ValidationError(
                {"validity": 'invalid parameter "validity": not after "schedule"'}
            )
        attrs["split"] = checked_split(attrs["text"], attrs.get("enc") or "auto")
        return attrs

    def new_message(
        self,
        idempotency_key: str | None = None,
        request_hash: str = "",
        api_key_id: int | None = None,
        data: dict | None = None,
    ) -> NewMessage:
        """The store's input from validated data (this serializer's, or ``data``
        from ``run_validation`` when one serializer checks many items)."""
        data = self.validated_data if data is None else data
        return NewMessage(
            dst=data["dst"],
            text=data["text"],
            split=data["split"],
            src=data.get("src", ""),
            src_ton=data.get("src_ton", 0),
            src_npi=data.get("src_npi", 0),
            dst_ton=data.get("dst_ton", 0),
            dst_npi=data.get("dst_npi", 0),
            requested_encoding=data.get("enc") or "auto",
            register=data.get("register", settings.SMS_DEFAULT_REGISTER),
            priority=data.get("priority", 0),
            schedule_at=data.get("schedule"),
            validity_until=data.get("validity"),
            reference=data.get("reference", ""),
            callback_url=data.get("callback_url", ""),
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            api_key_id=api_key_id,
        )


def checked_split(text: str, requested_encoding: str, default_alphabet: str = "") -> SplitResult:
    """``split_for_smsc``, its refusals as the field errors a client is answered with;
    ``default_alphabet``: the chosen connector's ("": the gateway's)."""
    try:
        return split_for_smsc(text, requested_encoding, default_alphabet=default_alphabet)
    except (UnencodableCharacter, TooManyParts) as exc:
        raise serializers.ValidationError({"text": f'invalid parameter "text": {exc}'}) from exc
    except ValueError as exc:  # e.g. an encoding the SMSC's alphabet cannot carry
        raise serializers.ValidationError({"enc": str(exc)}) from exc


def _address_characters(value: str, name: str) -> str:
    """The TON-independent part of the address rule, as a field's error; spaces
    around the address are dropped."""
    try:
        return check_characters(value.strip(" "), name)
    except InvalidAddress as exc:
        raise serializers.ValidationError(str(exc)) from None


_per_thread = threading.local()


def send_serializer() -> SendSerializer:
    """This thread's SendSerializer, to ``run_validation`` one request after another.

    Building a serializer deep-copies its declared fields, which costs more than
    checking a message (measured: a third of /v1/send's CPU). Validation keeps
    nothing on the instance, so one per thread serves every request.
    """
    serializer = getattr(_per_thread, "send_serializer", None)
    if serializer is None:
        serializer = _per_thread.send_serializer = SendSerializer()
    return serializer


# --- output --------------------------------------------------------------------------


class PartSerializer(serializers.ModelSerializer):
    message_id = serializers.CharField(source="smsc_id", allow_null=True)

    class Meta:
        model = MessagePart
        fields = [
            "index",
            "state",
            "message_id",
            "command_status",
            "error_code",
            "attempts",
            "possibly_duplicated",
            "submitted_at",
            "final_at",
        ]


class ConnectorNameField(serializers.CharField):
    """A connector as people call it ("default": the SMPP_* settings')."""

    def __init__(self, **kwargs) -> None:
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value: str) -> str:
        return public_name(value)


class ReceiptSerializer(serializers.ModelSerializer):
    message_id = serializers.CharField(source="smsc_id")
    part = serializers.IntegerField(source="part.index", allow_null=True, default=None)
    connector = ConnectorNameField()  # whose SMSC sent it

    class Meta:
        model = Receipt
        fields = [
            "message_id",
            "part",
            "stat",
            "message_state",
            "error_code",
            "submitted_date",
            "done_date",
            "raw_text",
            "received_at",
            "connector",
        ]


class TransitionSerializer(serializers.ModelSerializer):
    part = serializers.IntegerField(source="part_index", allow_null=True)

    class Meta:
        model = StateTransition
        fields = ["at", "from_state", "to_state", "part", "command_status", "detail"]


class MessageSerializer(serializers.ModelSerializer):
    id = serializers.CharField()
    status = serializers.CharField(source="state")
    parts = serializers.IntegerField(source="parts_count")
    message_ids = serializers.SerializerMethodField()
    # Stored as one string of characters; a list here, as /v1/send answers it.
    ucs2_forced_by = serializers.SerializerMethodField()
    connector = ConnectorNameField()  # the SMSC connector it goes through

    class Meta:
        model = Message
        fields = [
            "id",
            "status",
            "src",
            "dst",
            "text",
            "encoding",
            "data_coding",
            "parts",
            "message_ids",
            "reference",
            "register",
            "priority",
            "schedule_at",
            "validity_until",
            "command_status",
            "error_code",
            "possibly_duplicated",
            "ucs2_forced_by",
            "connector",
            "created_at",
            "submitted_at",
            "final_at",
        ]

    def get_message_ids(self, message: Message) -> list[str | None]:
        return [p.smsc_id for p in message.parts.all()]

    def get_ucs2_forced_by(self, message: Message) -> list[str]:
        return list(message.ucs2_forced_by or "")


class MessageDetailSerializer(MessageSerializer):
    part_details = PartSerializer(source="parts", many=True)
    receipts = ReceiptSerializer(many=True)
    history = TransitionSerializer(source="transitions", many=True)

    class Meta(MessageSerializer.Meta):
        fields = MessageSerializer.Meta.fields + ["part_details", "receipts", "history"]
