"""Which SMSC connector a message goes through: the routing rules (issue 24).

Plain data and functions, no database: the rules are read from the store and
handed here, so the API (refuse what no route accepts), the worker (fail over
to the next connector) and the admin's "which connector would this take"
check all decide with the same code.

A ``RoutingTable`` is an ordered list of ``Route``; the first route whose
conditions all hold takes the message (a route with no condition is the
default route, and belongs last). A route names its connectors in order of
preference: the first usable one is chosen and the rest are its failover
list; with ``weights``, the first choice is drawn by weight instead, from the
message's own key, so that the same message always draws the same connector
and a run of messages splits as the weights say.

Kannel's ``allowed-smsc-id``/``preferred-smsc-id`` and Jasmin's MT routes by
destination prefix, source and user map onto these fields (docs/routing.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import re2

MAX_WEIGHT = 1_000_000


class Pattern(Protocol):
    """A compiled destination pattern (RE2's, see ``compile_pattern``)."""

    def fullmatch(self, text: str) -> object | None: ...


# The environment's SMPP_* settings are the default connector: stored as "" (every
# row written before connectors existed says so), called "default" wherever a
# person reads or writes its name.
DEFAULT_CONNECTOR = ""
DEFAULT_CONNECTOR_LABEL = "default"


def public_name(stored: str) -> str:
    """The name a person reads ("default" for the SMPP_* settings' connector)."""
    return stored or DEFAULT_CONNECTOR_LABEL


def stored_name(public: str) -> str:
    """The name the store keeps (see ``public_name``)."""
    return DEFAULT_CONNECTOR if public == DEFAULT_CONNECTOR_LABEL else public


@dataclass(frozen=True)
class MessageFacts:
    """What routes look at: the destination (as given, with or without '+'),
    the source, and the API key that sent it (None: none); and, for failover, the
    encoding its parts were made in ("": not made yet)."""

    dst: str
    src: str = ""
    api_key_id: int | None = None
    encoding: str = ""


@dataclass(frozen=True)
class Route:
    """One rule: when every condition given holds, its connectors carry the message.

    ``dst_prefixes``: any of them starts the destination (digits; a leading '+'
    is ignored on both sides); ``dst_pattern``: a regular expression the whole
    destination matches; ``sources``: the source is one of them;
    ``api_key_ids``: the message came with one of these keys. An empty
    condition holds for every message.
    """

    name: str
    connectors: tuple[str, ...]
    weights: tuple[int, ...] = ()
    dst_prefixes: tuple[str, ...] = ()
    dst_pattern: str = ""
    sources: tuple[str, ...] = ()
    api_key_ids: frozenset[int] = frozenset()
    _pattern: Pattern | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = route_problems(self)
        if problems:
            raise ValueError(f"route {self.name!r}: {'; '.join(problems)}")
        object.__setattr__(self, "_pattern", compile_pattern(self.dst_pattern))

    @property
    def is_default(self) -> bool:
        return not (self.dst_prefixes or self.dst_pattern or self.sources or self.api_key_ids)

    def matches(self, facts: MessageFacts) -> bool:
        dst = facts.dst.removeprefix("+")
        if self.dst_prefixes and not any(
            dst.startswith(p.removeprefix("+")) for p in self.dst_prefixes
        ):
            return False
        if self._pattern is not None and self._pattern.fullmatch(facts.dst) is None:
            return False
        if self.sources and facts.src not in self.sources:
            return False
        return not self.api_key_ids or facts.api_key_id in self.api_key_ids

    def preference(self, key: int | str) -> tuple[str, ...]:
        """The connectors to try, best first: in the route's order, or, with weights,
        the one ``key`` draws first and the others in the route's order."""
        if not self.weights:
            return self.connectors
        first = self.connectors[weighted_pick(self.weights, key)]
        return (first, *(c for c in self.connectors if c != first))


def route_problems(route: Route) -> list[str]:
    """What makes ``route`` unusable (for the admin's and the API's 400s); [] when none."""
    problems = []
    if not route.name.strip():
        problems.append("a name is needed")
    if not route.connectors:
        problems.append("at least one connector is needed")
    if len(set(route.connectors)) != len(route.connectors):
        problems.append("a connector is named twice")
    if route.weights:
        if len(route.weights) != len(route.connectors):
            problems.append("one weight per connector is needed")
        elif any(not 0 <= w <= MAX_WEIGHT for w in route.weights) or not any(route.weights):
            problems.append(f"weights are whole numbers from 0 to {MAX_WEIGHT}, not all 0")
    if any(not p.removeprefix("+").isdigit() for p in route.dst_prefixes):
        problems.append("a destination prefix is digits, with an optional leading '+'")
    if route.dst_pattern:
        try:
            compile_pattern(route.dst_pattern)
        except re2.error as exc:
            reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
            problems.append(
                f"the destination pattern is not a regular expression RE2 takes ({reason}); "
                "no backreferences or lookaround"
            )
    return problems


def compile_pattern(pattern: str) -> Pattern | None:
    """A route's destination pattern, compiled by RE2: whoever writes the routes, a
    pattern matches in time linear in the destination (Python's ``re`` can take
    seconds on a nested quantifier such as ``(4+)+5``). Raises ``re2.error``."""
    if not pattern:
        return None
    return re2.compile(pattern, options=_RE2_OPTIONS)


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is the caller's 400, not a line on stderr


def weighted_pick(weights: tuple[int, ...], key: int | str) -> int:
    """The position ``key`` draws, each with the chance its weight gives it; the same
    key always draws the same position (a retried message keeps its connector)."""
    digest = hashlib.blake2b(str(key).encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") % sum(weights)
    for position, weight in enumerate(weights):
        if point < weight:
            return position
        point -= weight
    raise AssertionError("unreachable: point < sum(weights)")


@dataclass(frozen=True)
class RouteChoice:
    """The route a message takes, the connector chosen and those left to fail over to."""

    route: str
    connector: str
    failover: tuple[str, ...]


class RoutingTable:
    """The routes in the order they are tried."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names):
            raise ValueError("two routes have the same name")

    def route_for(self, facts: MessageFacts) -> Route | None:
        """The first route whose conditions hold; None: no route takes the message."""
        return next((r for r in self.routes if r.matches(facts)), None)

    def choose(
        self,
        facts: MessageFacts,
        key: int | str,
        usable: Callable[[str], bool] = lambda connector: True,
    ) -> RouteChoice | None:
        """The route and connector for the message ``key`` (its id, or anything stable
        for it): the first usable connector of its route's preference. None when no
        route takes it, or none of its route's connectors is usable."""
        route = self.route_for(facts)
        if route is None:
            return None
        candidates = [c for c in route.preference(key) if usable(c)]
        if not candidates:
            return None
        return RouteChoice(route.name, candidates[0], tuple(candidates[1:]))
