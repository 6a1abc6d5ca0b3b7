"""manage.py connectors list|show|add|set|enable|disable|remove: SMSC connectors.

The running worker(s) take a change up within ``SMPP_CONNECTOR_RELOAD`` seconds,
no restart. A password is never given on the command line (others can read it
in the process list): ``--password-env NAME`` reads it from that environment
variable, ``--password-stdin`` from the first line of standard input. It is
never printed: ``show`` says whether one is set. ``--password-variable NAME``
stores no password at all: each worker reads NAME from its own environment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from messaging.connectors import default_connector_enabled, removal_problem
from messaging.models import Connector
from messaging.routing import DEFAULT_CONNECTOR, DEFAULT_CONNECTOR_LABEL

# Options that set a field of the same name (argparse dest -> model field).
FIELD_OPTIONS = {
    "host": str,
    "port": int,
    "system_id": str,
    "system_type": str,
    "bind_mode": str,
    "binds": int,
    "window": int,
    "max_rate": float,
    "enquire_link_interval": float,
    "response_timeout": float,
    "link_timeout": float,
    "tls_ca": str,
    "source_ton": int,
    "source_npi": int,
    "dest_ton": int,
    "dest_npi": int,
    "failover_after": float,
    "smsc_id_style": str,
    "default_alphabet": str,
    "password_variable": str,
}
SHOWN_FIELDS = ["name", "enabled", *FIELD_OPTIONS, "tls", "tls_insecure"]


def connector_view(connector: Connector) -> dict:
    """What ``list`` and ``show`` print of a connector: everything but the password."""
    view = {name: getattr(connector, name) for name in SHOWN_FIELDS}
    view["password_set"] = bool(connector.password)
    return view


class Command(BaseCommand):
    help = "Manage the SMSC connectors the worker binds (docs/routing.md)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("list", help="every connector, one JSON object a line")
        for name, help_text in (
            ("show", "one connector as JSON"),
            ("enable", "bind it again"),
            ("disable", "unbind it (queued messages fail over)"),
            ("remove", "remove it (no route may name it)"),
        ):
            actions.add_parser(name, help=help_text).add_argument("name")
        for name, help_text in (("add", "a new connector"), ("set", "change a connector")):
            sub = actions.add_parser(name, help=help_text)
            sub.add_argument("name")
            for option, kind in FIELD_OPTIONS.items():
                sub.add_argument(f"--{option.replace('_', '-')}", dest=option, type=kind)
            sub.add_argument("--tls", action=argparse.BooleanOptionalAction, default=None)
            sub.add_argument("--tls-insecure", action=argparse.BooleanOptionalAction, default=None)
            sub.add_argument("--disabled", action="store_true", help="stored, not bound")
            secret = sub.add_mutually_exclusive_group()
            secret.add_argument(
                "--password-env", metavar="VARIABLE", help="store the password VARIABLE holds now"
            )
            secret.add_argument("--password-stdin", action="store_true")

    def handle(self, *args, action: str, **options) -> None:
        getattr(self, f"handle_{action}")(**options)

    def handle_list(self, **options) -> None:
        if default_connector_enabled():
            self.stdout.write(json.dumps({"name": "default", "from": "SMPP_* settings"}))
        for connector in Connector.objects.all():
            self.stdout.write(json.dumps(connector_view(connector)))

    def handle_show(self, name: str, **options) -> None:
        self.stdout.write(json.dumps(connector_view(self._get(name)), indent=2))

    def handle_add(self, name: str, **options) -> None:
        if Connector.objects.filter(name=name).exists():
            raise CommandError(f'connector "{name}" exists; change it with "set"')
        self._save(Connector(name=name), options)
        self.stdout.write(f'connector "{name}" added')

    def handle_set(self, name: str, **options) -> None:
        self._save(self._get(name), options)
        self.stdout.write(f'connector "{name}" changed')

    def handle_enable(self, name: str, **options) -> None:
        self._set_enabled(name, True)

    def handle_disable(self, name: str, **options) -> None:
        self._set_enabled(name, False)

    def handle_remove(self, name: str, **options) -> None:
        connector = self._get(name)
        with transaction.atomic():
            problem = removal_problem(connector)
            if problem:
                raise CommandError(problem)
            connector.delete()
        self.stdout.write(f'connector "{name}" removed')

    def _get(self, name: str) -> Connector:
        if name in (DEFAULT_CONNECTOR_LABEL, DEFAULT_CONNECTOR):
            raise CommandError('"default" is the SMPP_* settings\' connector: set it there')
        try:
            return Connector.objects.get(name=name)
        except Connector.DoesNotExist:
            raise CommandError(f'no connector "{name}"') from None

    def _set_enabled(self, name: str, enabled: bool) -> None:
        connector = self._get(name)
        connector.enabled = enabled
        connector.save(update_fields=["enabled", "updated_at"])
        self.stdout.write(f'connector "{name}" {"enabled" if enabled else "disabled"}')

    def _save(self, connector: Connector, options: dict) -> None:
        for field in FIELD_OPTIONS:
            if options.get(field) is not None:
                setattr(connector, field, options[field])
        for field in ("tls", "tls_insecure"):
            if options.get(field) is not None:
                setattr(connector, field, options[field])
        if options.get("disabled"):
            connector.enabled = False
        password = self._password(options)
        if password is not None:
            connector.password = password
        try:
            connector.full_clean()
        except ValidationError as exc:
            raise CommandError(describe(exc)) from None
        connector.save()

    @staticmethod
    def _password(options: dict) -> str | None:
        variable = options.get("password_env")
        if variable:
            if variable not in os.environ:
                raise CommandError(f"--password-env: ${variable} is not set")
            return os.environ[variable]
        if options.get("password_stdin"):
            return sys.stdin.readline().rstrip("\r\n")
        return None


def describe(error: ValidationError) -> str:
    """A model's ValidationError as one line per field."""
    if hasattr(error, "message_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in error.message_dict.items())
    return " ".join(error.messages)
