"""The SMSC connectors and routes the store holds, read as plain values (issue 24).

The worker binds what ``wanted_connectors`` lists; the API routes each new
message with a ``RoutingState`` (``routing_cache``), and the worker's upkeep
moves queued messages off a connector that is gone or down
(``messaging.store.rerouting``) with the same state, so that both decide alike.

Names: the environment's ``SMPP_*`` settings are the default connector, stored
as "" and called "default" (``messaging.routing.public_name``). It exists
unless ``SMPP_DEFAULT_CONNECTOR=off``.

With no route stored, every message takes the default connector, as before
connectors existed. Rows read back are not trusted: a route or connector row
that fails its checks is left out and logged, never raised into a request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError

from messaging import routing
from messaging.health import bound_connectors
from messaging.models import Connector
from messaging.models import Route as RouteRow
from messaging.orm_thread import in_db_thread
from messaging.routing import DEFAULT_CONNECTOR, public_name, stored_name
from sms.encoding import alphabet_carries

logger = logging.getLogger(__name__)


def default_connector_enabled() -> bool:
    return bool(getattr(settings, "SMPP_DEFAULT_CONNECTOR", True))


def gateway_alphabet() -> str:
    """What data_coding 0 means on a connector that does not say (the default one's)."""
    return settings.SMPP_DEFAULT_ALPHABET


def split_list(text: str) -> tuple[str, ...]:
    """A comma-separated list as the Route row keeps it: items stripped, blanks dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


@dataclass(frozen=True)
class ConnectorSpec:
    """What a worker needs to bind one stored connector (a ``Connector`` row's values)."""

    name: str
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    tls: bool = False
    tls_insecure: bool = False
    tls_ca: str = ""
    bind_mode: str = Connector.BindMode.TRANSCEIVER
    binds: int = 1
    window: int = 100
    max_rate: float = 0.0
    enquire_link_interval: float = 10.0
    response_timeout: float = 10.0
    link_timeout: float = 30.0
    source_ton: int | None = None
    source_npi: int | None = None
    dest_ton: int | None = None
    dest_npi: int | None = None
    failover_after: float = 30.0
    smsc_id_style: str = "auto"
    default_alphabet: str = ""  # what data_coding 0 means there; "": SMPP_DEFAULT_ALPHABET
    password_variable: str = ""  # set: the password is read from the worker's environment

    @classmethod
    def from_row(cls, row: Connector) -> ConnectorSpec:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})


def bind_password(spec: ConnectorSpec) -> tuple[str, str]:
    """(the password ``spec`` binds with, why it cannot bind or ""): the stored one,
    or its ``password_variable`` read from this process's environment and held to
    the stored password's own checks (SMPP carries 8 printable ASCII at most)."""
    name = spec.password_variable
    if not name:
        return spec.password, ""
    value = os.environ.get(name)
    if value is None:
        return "", f"password variable {name} is not set in the worker's environment"
    try:
        Connector._meta.get_field("password").run_validators(value)
    except ValidationError:
        return "", f"password variable {name} is not an SMPP password (8 printable ASCII at most)"
    return value, ""


def _checked_connectors(rows: Iterable[Connector]) -> list[Connector]:
    """The rows that pass the model's checks; the others logged and left out."""
    good = []
    for row in rows:
        try:
            row.full_clean(validate_unique=False)
        except ValidationError as exc:
            logger.error("connector %r is not usable as stored, left out: %s", row.name, exc)
            continue
        good.append(row)
    return good


def wanted_connectors() -> dict[str, ConnectorSpec | None]:
    """Every enabled connector by stored name: its spec, or None for the default
    connector (the worker builds that one from the settings)."""
    wanted: dict[str, ConnectorSpec | None] = {}
    if default_connector_enabled():
        wanted[DEFAULT_CONNECTOR] = None
    for row in _checked_connectors(Connector.objects.filter(enabled=True)):
        wanted[row.name] = ConnectorSpec.from_row(row)
    return wanted


def route_from_row(row: RouteRow, api_key_ids: Iterable[int] = ()) -> routing.Route:
    """The routing rule a ``Route`` row describes (connectors by stored name);
    ValueError when it is unusable (``routing.route_problems``)."""
    weights = split_list(row.weights)
    if any(not w.isdigit() for w in weights):
        raise ValueError(f"route {row.name!r}: weights are whole numbers, comma-separated")
    return routing.Route(
        name=row.name,
        connectors=tuple(stored_name(c) for c in split_list(row.connectors)),
        weights=tuple(int(w) for w in weights),
        dst_prefixes=split_list(row.dst_prefixes),
        dst_pattern=row.dst_pattern,
        sources=split_list(row.sources),
        api_key_ids=frozenset(api_key_ids),
    )


def stored_routes() -> list[routing.Route]:
    """The enabled routes in the order they are tried; bad rows logged and left out."""
    rows = list(RouteRow.objects.filter(enabled=True).prefetch_related("api_keys"))
    routes = []
    for row in rows:
        try:
            routes.append(route_from_row(row, (key.pk for key in row.api_keys.all())))
        except ValueError as exc:
            logger.error("route %r is not usable as stored, left out: %s", row.name, exc)
    return routes


IMPLICIT_DEFAULT_ROUTE = routing.Route(name="(no route stored)", connectors=(DEFAULT_CONNECTOR,))


class Unroutable(Exception):
    """No route takes a message, or its route has no enabled connector: why."""


@dataclass(frozen=True)
class RoutingState:
    """The routes and which connectors can take messages, as read at one moment.

    ``enabled``: connectors that exist and are enabled (by stored name), with the
    seconds after which a down one is failed over (``failover_after``).
    ``usable``: enabled, and bound or down for less than its failover time.
    ``alphabets``: what data_coding 0 means on each enabled connector's SMSC
    (``SMPP_DEFAULT_ALPHABET`` for one not listed).
    """

    table: routing.RoutingTable
    enabled: dict[str, float]
    usable: frozenset[str]
    alphabets: dict[str, str] = field(default_factory=dict)

    def alphabet_of(self, connector: str) -> str:
        return self.alphabets.get(connector) or gateway_alphabet()

    def choose(self, facts: routing.MessageFacts, key: int | str) -> routing.RouteChoice:
        """The connector for a new message: the first usable one of its route's
        preference; when none is usable, the first enabled one (it waits in the
        queue). Raises ``Unroutable``."""
        route = self.table.route_for(facts)
        if route is None:
            raise Unroutable("no route takes this message")
        choice = self.table.choose(facts, key, self.usable.__contains__)
        if choice is None:
            choice = self.table.choose(facts, key, self.enabled.__contains__)
        if choice is None:
            names = ", ".join(public_name(c) for c in route.connectors)
            raise Unroutable(f'route "{route.name}" has no enabled connector ({names})')
        return choice

    def reroute(
        self, facts: routing.MessageFacts, key: int | str, current: str
    ) -> routing.RouteChoice | None:
        """Where a queued message on the unusable connector ``current`` goes now: a
        usable connector its route allows whose SMSC can carry its encoding (its
        parts are made), or None (it stays where it is)."""

        def takes(connector: str) -> bool:
            return connector in self.usable and (
                not facts.encoding or alphabet_carries(self.alphabet_of(connector), facts.encoding)
            )

        choice = self.table.choose(facts, key, takes)
        if choice is None or choice.connector == current:
            return None
        return choice


class ConnectorAvailability:
    """When each connector was last seen bound, to tell "down for longer than its
    failover time". A connector not seen before counts as seen now (it gets its
    failover time to bind)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._last_up: dict[str, float] = {}

    def usable(self, enabled: dict[str, float], bound: set[str]) -> frozenset[str]:
        now = self.clock()
        last_up = {}
        for name in enabled:
            seen = now if name in bound else self._last_up.get(name, now)
            last_up[name] = seen
        self._last_up = last_up
        return frozenset(name for name, after in enabled.items() if now - last_up[name] <= after)


def current_routes() -> list[routing.Route]:
    """The routes messages take now: the stored ones, or, with none stored, the
    implicit route to the default connector (when it exists)."""
    routes = stored_routes()
    if routes or RouteRow.objects.exists() or not default_connector_enabled():
        return routes
    return [IMPLICIT_DEFAULT_ROUTE]


def unserved_routes(bound: set[str]) -> list[str]:
    """The routes none of whose connectors has a bound link (readiness names them)."""
    return [r.name for r in current_routes() if not any(c in bound for c in r.connectors)]


def read_routing_state(availability: ConnectorAvailability) -> RoutingState:
    """The routing state as the store has it now (three reads)."""
    enabled: dict[str, float] = {}
    alphabets: dict[str, str] = {}
    if default_connector_enabled():
        enabled[DEFAULT_CONNECTOR] = float(getattr(settings, "SMPP_FAILOVER_AFTER", 30.0))
    for row in _checked_connectors(Connector.objects.filter(enabled=True)):
        enabled[row.name] = row.failover_after
        if row.default_alphabet:
            alphabets[row.name] = row.default_alphabet
    return RoutingState(
        routing.RoutingTable(current_routes()),
        enabled,
        availability.usable(enabled, bound_connectors()),
        alphabets,
    )


class RoutingCache:
    """This process's ``RoutingState``, read again when older than ``max_age``.

    A request never waits for more than one read at a time: concurrent callers of
    a stale cache share the read; when the store cannot be read, the last state
    is used (and the error logged) until it can.
    """

    def __init__(self, max_age: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self.clock = clock
        self.availability = ConnectorAvailability(clock)
        self._state: RoutingState | None = None
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def fresh(self) -> RoutingState | None:
        """The state if it is recent enough, else None (read it: ``get``/``aget``)."""
        if self.clock() - self._read_at <= self.max_age:
            return self._state
        return None

    def get(self) -> RoutingState:
        """The state, read again if stale (synchronous: not on the event loop)."""
        state = self.fresh()
        if state is not None:
            return state
        with self._lock:
            state = self.fresh()
            if state is not None:
                return state
            try:
                self._state = read_routing_state(self.availability)
            except Exception:
                if self._state is None:
                    raise
                logger.warning("routing not reread; using the last one", exc_info=True)
            self._read_at = self.clock()
            return self._state

    async def aget(self) -> RoutingState:
        state = self.fresh()
        return state if state is not None else await in_db_thread(self.get)()

    def forget(self) -> None:
        """Read again at the next use (after this process changed a connector or route)."""
        self._read_at = float("-inf")


routing_cache = RoutingCache()


# --- managing them: the checks the admin, /v1/connectors and the command share -------------


def known_connector_names() -> set[str]:
    """Connectors a route may name (stored names; disabled ones included)."""
    names = set(Connector.objects.values_list("name", flat=True))
    if default_connector_enabled():
        names.add(DEFAULT_CONNECTOR)
    return names


def check_route(row: RouteRow, api_key_ids: Iterable[int] = ()) -> None:
    """Raise ``ValidationError`` (by field where it can) when ``row`` is not a
    usable route: the model's own checks, the routing rule's, known connectors."""
    row.full_clean(exclude=["api_keys"], validate_unique=True)
    try:
        route = route_from_row(row, api_key_ids)
    except ValueError as exc:
        raise ValidationError(str(exc).split(": ", 1)[-1]) from None
    unknown = [c for c in route.connectors if c not in known_connector_names()]
    if unknown:
        raise ValidationError(
            {"connectors": f"no such connector: {', '.join(public_name(c) for c in unknown)}"}
        )


def routes_naming(connector: str) -> list[str]:
    """The routes that name ``connector`` (it cannot be removed while they do)."""
    return [
        row.name
        for row in RouteRow.objects.all()
        if connector in (stored_name(c) for c in split_list(row.connectors))
    ]


def removal_problem(connector: Connector) -> str | None:
    """Why ``connector`` cannot be removed now, or None."""
    routes = routes_naming(connector.name)
    if routes:
        return (
            f'connector "{connector.name}" is named by route(s) {", ".join(routes)}: '
            "take it out of them first (its queued messages then fail over)"
        )
    return None


def explain_route(dst: str, src: str = "", api_key_id: int | None = None) -> dict:
    """Which route and connector a message would take now: the admin's, the API's
    and the command's "which connector would this take" (reads the store at most
    once a second). For a weighted route it names one draw and says so."""
    state = routing_cache.get()
    facts = routing.MessageFacts(dst, src, api_key_id)
    route = state.table.route_for(facts)
    answer: dict = {"dst": dst, "src": src, "route": None if route is None else route.name}
    try:
        choice = state.choose(facts, "check")
    except Unroutable as exc:
        answer.update(connector=None, failover=[], refused=str(exc))
        return answer
    answer.update(
        connector=public_name(choice.connector),
        failover=[public_name(c) for c in choice.failover],
        weighted=bool(route is not None and route.weights),
    )
    return answer
