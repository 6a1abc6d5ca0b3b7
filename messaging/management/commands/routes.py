"""manage.py routes list|add|set|remove|check: the routing rules (docs/routing.md).

Lists are comma-separated: ``--connectors uk-a,uk-b`` (failover order),
``--weights 3,1`` (a split), ``--dst-prefix 44,33``, ``--sources ACME``,
``--api-keys sk_ab12cd34`` (key prefixes). ``check`` says which route and
connector a message would take now. Every API process takes a change up within
a second.
"""

from __future__ import annotations

import argparse
import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from messaging.connectors import check_route, explain_route
from messaging.management.commands.connectors import describe
from messaging.models import ApiKey, Route

TEXT_OPTIONS = ["connectors", "weights", "dst_prefixes", "dst_pattern", "sources"]


def route_view(route: Route) -> dict:
    view = {"name": route.name, "position": route.position, "enabled": route.enabled}
    view.update((name, getattr(route, name)) for name in TEXT_OPTIONS)
    view["api_keys"] = [key.prefix for key in route.api_keys.all()]
    return view


class Command(BaseCommand):
    help = "Manage the routes that choose a message's SMSC connector (docs/routing.md)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("list", help="the routes in the order they are tried")
        actions.add_parser("remove", help="remove a route").add_argument("name")
        for name in ("add", "set"):
            sub = actions.add_parser(name, help=f"{name} a route")
            sub.add_argument("name")
            sub.add_argument("--position", type=int, help="order tried (lowest first)")
            for option in TEXT_OPTIONS:
                sub.add_argument(f"--{option.replace('_', '-')}", dest=option)
            sub.add_argument("--api-keys", help="key prefixes, comma-separated")
            sub.add_argument("--enabled", action=argparse.BooleanOptionalAction, default=None)
        check = actions.add_parser("check", help="which connector would this message take")
        check.add_argument("--dst", required=True)
        check.add_argument("--src", default="")
        check.add_argument("--api-key", default="", help="the sending key's prefix")

    def handle(self, *args, action: str, **options) -> None:
        getattr(self, f"handle_{action}")(**options)

    def handle_list(self, **options) -> None:
        for route in Route.objects.prefetch_related("api_keys"):
            self.stdout.write(json.dumps(route_view(route)))

    def handle_add(self, name: str, **options) -> None:
        if Route.objects.filter(name=name).exists():
            raise CommandError(f'route "{name}" exists; change it with "set"')
        self._save(Route(name=name), options)
        self.stdout.write(f'route "{name}" added')

    def handle_set(self, name: str, **options) -> None:
        self._save(self._get(name), options)
        self.stdout.write(f'route "{name}" changed')

    def handle_remove(self, name: str, **options) -> None:
        self._get(name).delete()
        self.stdout.write(f'route "{name}" removed')

    def handle_check(self, dst: str, src: str, api_key: str, **options) -> None:
        key_id = self._keys(api_key)[0].pk if api_key else None
        self.stdout.write(json.dumps(explain_route(dst, src, key_id)))

    def _get(self, name: str) -> Route:
        try:
            return Route.objects.get(name=name)
        except Route.DoesNotExist:
            raise CommandError(f'no route "{name}"') from None

    @staticmethod
    def _keys(prefixes: str) -> list[ApiKey]:
        wanted = [p.strip() for p in prefixes.split(",") if p.strip()]
        keys = list(ApiKey.objects.filter(prefix__in=wanted))
        missing = set(wanted) - {k.prefix for k in keys}
        if missing:
            raise CommandError(f"no API key with prefix {', '.join(sorted(missing))}")
        return keys

    def _save(self, route: Route, options: dict) -> None:
        for option in TEXT_OPTIONS:
            if options.get(option) is not None:
                setattr(route, option, options[option])
        if options.get("position") is not None:
            route.position = options["position"]
        if options.get("enabled") is not None:
            route.enabled = options["enabled"]
        keys = None if options.get("api_keys") is None else self._keys(options["api_keys"])
        key_ids = (
            [k.pk for k in keys]
            if keys is not None
            else ([k.pk for k in route.api_keys.all()] if route.pk else [])
        )
        try:
            check_route(route, key_ids)
        except ValidationError as exc:
            raise CommandError(describe(exc)) from None
        with transaction.atomic():
            route.save()
            if keys is not None:
                route.api_keys.set(keys)
