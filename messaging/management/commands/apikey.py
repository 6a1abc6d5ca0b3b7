"""manage.py apikey create|list|revoke: API keys from the command line.

``create --manage-connectors`` makes a key that may manage the SMSC connectors
and routes (docs/routing.md).

``create`` prints the key once (only its hash is stored) and the webhook
secret; ``list`` shows prefixes, never keys; ``revoke`` takes the prefix.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from messaging import api_keys
from messaging.models import ApiKey
from messaging.webhooks.targets import InvalidCallbackURL, clean_callback_url


class Command(BaseCommand):
    help = "Create, list and revoke API keys (see SMSAPI_AUTH)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="make a key and print it (once)")
        create.add_argument("name", help="who or what the key is for")
        create.add_argument(
            "--rate-limit", type=int, default=0, help="requests a minute; 0: no limit"
        )
        create.add_argument("--callback-url", default="", help="default receipt webhook URL")
        create.add_argument(
            "--no-incoming",
            action="store_true",
            help="do not show incoming (mobile-originated) messages to this key",
        )
        create.add_argument(
            "--manage-connectors",
            action="store_true",
            help="may manage the SMSC connectors and routes (/v1/connectors, /v1/routes)",
        )
        actions.add_parser("list", help="the keys, by prefix")
        revoke = actions.add_parser("revoke", help="revoke a key for good")
        revoke.add_argument("prefix", help="the key's prefix (or the whole key)")

    def handle(self, *args, action: str, **options) -> None:
        getattr(self, f"handle_{action}")(**options)

    def handle_create(
        self,
        name: str,
        rate_limit: int,
        callback_url: str,
        no_incoming: bool,
        manage_connectors: bool = False,
        **options,
    ) -> None:
        if rate_limit < 0:
            raise CommandError("--rate-limit must be 0 (no limit) or more")
        try:
            callback_url = clean_callback_url(callback_url)
        except InvalidCallbackURL as exc:
            raise CommandError(f"--callback-url: {exc}") from exc
        issued = api_keys.create_key(
            name,
            rate_limit=rate_limit,
            callback_url=callback_url,
            receive_incoming=not no_incoming,
            manage_connectors=manage_connectors,
        )
        key = issued.api_key
        self.stdout.write(f"API key {key.prefix} ({key.name}) created. The key, shown only now:")
        self.stdout.write(issued.key)
        self.stdout.write(f"webhook secret: {key.webhook_secret}")
        self.stdout.write(f'use it as: curl -H "Authorization: Bearer {issued.key}" ...')
        if not api_keys.auth_required():
            # This process reads its own environment, not the running server's: say only
            # what is known here (the server may well have been started with keys required).
            self.stdout.write(
                "note: SMSAPI_AUTH is not 'required' in this shell's environment; the key is"
            )
            self.stdout.write(
                "stored either way, and a server asks for keys only if it was started with"
            )
            self.stdout.write("SMSAPI_AUTH=required")

    def handle_list(self, **options) -> None:
        keys = list(ApiKey.objects.order_by("created_at", "id"))
        if not keys:
            self.stdout.write("no API keys")
            return
        self.stdout.write(
            f"{'prefix':<10} {'state':<8} {'rate/min':>8}  {'incoming':<8} created  name"
        )
        for key in keys:
            state = "revoked" if key.revoked_at else "active"
            rate = str(key.rate_limit) if key.rate_limit else "-"
            incoming = "yes" if key.receive_incoming else "no"
            created = key.created_at.strftime("%Y-%m-%d %H:%M")
            self.stdout.write(
                f"{key.prefix:<10} {state:<8} {rate:>8}  {incoming:<8} {created}  {key.name}"
            )

    def handle_revoke(self, prefix: str, **options) -> None:
        try:
            key = api_keys.revoke_key(prefix)
        except ApiKey.DoesNotExist:
            raise CommandError(f'no API key with prefix "{prefix}"') from None
        self.stdout.write(
            f"API key {key.prefix} ({key.name}) revoked at {key.revoked_at:%Y-%m-%d %H:%M:%S}"
        )
