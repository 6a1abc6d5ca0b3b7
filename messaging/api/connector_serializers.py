"""What /v1/connectors and /v1/routes accept and show.

The checks are the store's own (``Connector.full_clean``,
``messaging.connectors.check_route``), so the admin, the API and the command
refuse the same things. A connector's password is write-only: the API says
whether one is set, never what it is.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model
from rest_framework import serializers

from messaging.connectors import check_route, split_list
from messaging.models import ApiKey, Connector, Route


def _as_drf_error(exc: DjangoValidationError) -> serializers.ValidationError:
    if hasattr(exc, "message_dict"):
        return serializers.ValidationError(exc.message_dict)
    return serializers.ValidationError(exc.messages)


def _as_saved(model: type[Model], instance: Model | None, attrs: dict) -> Model:
    """An unsaved copy of ``instance`` (or a new row) with ``attrs`` applied: what
    the store would hold, for its checks to look at before anything is written."""
    fields = model._meta.concrete_fields
    values = {f.name: getattr(instance, f.name) for f in fields} if instance is not None else {}
    candidate = model(**values)
    for name, value in attrs.items():
        setattr(candidate, name, value)
    return candidate


class ConnectorSerializer(serializers.ModelSerializer):
    password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=8, trim_whitespace=False
    )
    password_set = serializers.SerializerMethodField()

    class Meta:
        model = Connector
        exclude = ["id"]
        read_only_fields = ["created_at", "updated_at"]

    def get_password_set(self, connector: Connector) -> bool:
        return bool(connector.password)

    def get_fields(self) -> dict:
        fields = super().get_fields()
        if self.instance is not None:  # a connector keeps its name: messages carry it
            fields["name"].read_only = True
        return fields

    def validate(self, attrs: dict) -> dict:
        """The model's own checks, on the connector as it would be saved."""
        candidate = _as_saved(Connector, self.instance, attrs)
        try:
            candidate.full_clean(exclude=["created_at", "updated_at"], validate_unique=False)
        except DjangoValidationError as exc:
            raise _as_drf_error(exc) from None
        return attrs


class ListField(serializers.ListField):
    """A list the Route row keeps as comma-separated text."""

    def __init__(self, **kwargs) -> None:
        super().__init__(child=serializers.RegexField(r"\A[^,\s][^,]*\Z", max_length=100), **kwargs)

    def to_representation(self, value: str) -> list[str]:
        return list(split_list(value))

    def to_internal_value(self, data) -> str:
        return ",".join(super().to_internal_value(data))


class WeightsField(serializers.ListField):
    """Whole numbers, one per connector, kept as comma-separated text."""

    def __init__(self, **kwargs) -> None:
        super().__init__(child=serializers.IntegerField(min_value=0), **kwargs)

    def to_representation(self, value: str) -> list[int]:
        return [int(w) for w in split_list(value) if w.isdigit()]

    def to_internal_value(self, data) -> str:
        return ",".join(str(w) for w in super().to_internal_value(data))


class RouteSerializer(serializers.ModelSerializer):
    connectors = ListField(min_length=1)
    weights = WeightsField(required=False)
    dst_prefixes = ListField(required=False)
    sources = ListField(required=False)
    api_keys = serializers.SlugRelatedField(
        slug_field="prefix", queryset=ApiKey.objects.all(), many=True, required=False
    )

    class Meta:
        model = Route
        exclude = ["id"]
        read_only_fields = ["updated_at"]

    def validate(self, attrs: dict) -> dict:
        attrs = dict(attrs)
        keys = attrs.pop("api_keys", None)
        candidate = _as_saved(Route, self.instance, attrs)
        if keys is None:
            key_ids = [k.pk for k in self.instance.api_keys.all()] if self.instance else []
        else:
            key_ids = [k.pk for k in keys]
        try:
            check_route(candidate, key_ids)
        except DjangoValidationError as exc:
            raise _as_drf_error(exc) from None
        if keys is not None:
            attrs["api_keys"] = keys
        return attrs


class RouteCheckSerializer(serializers.Serializer):
    """The question of /v1/routes/check: a message's destination, source and key."""

    dst = serializers.CharField(max_length=21)
    src = serializers.CharField(max_length=21, required=False, default="")
    # The sending key's prefix ("api_key" is the query parameter that authenticates).
    key = serializers.SlugRelatedField(
        slug_field="prefix", queryset=ApiKey.objects.all(), required=False, default=None
    )
