"""The routing rules (``messaging.routing``, issue 24): which connector a message takes."""

from __future__ import annotations

import collections

import pytest

from messaging.routing import MessageFacts, Route, RouteChoice, RoutingTable, weighted_pick

TABLE = RoutingTable(
    [
        Route("vip key", ("premium",), api_key_ids=frozenset({7})),
        Route("brazil", ("br-cheap", "br-backup"), dst_prefixes=("+55",)),
        Route("alerts", ("eu",), sources=("ALERTS", "OPS")),
        Route("us numbers", ("us",), dst_pattern=r"\+?1\d{10}"),
        Route("default", ("eu", "us")),
    ]
)


@pytest.mark.parametrize(
    ("facts", "route"),
    [
        (MessageFacts(dst="5511999990000", api_key_id=7), "vip key"),  # the key comes first
        (MessageFacts(dst="5511999990000", api_key_id=8), "brazil"),
        (MessageFacts(dst="+5511999990000"), "brazil"),  # '+' or not, the same number
        (MessageFacts(dst="4915550001", src="ALERTS"), "alerts"),
        (MessageFacts(dst="4915550001", src="alerts"), "default"),  # sources are exact
        (MessageFacts(dst="+12025550123"), "us numbers"),
        (MessageFacts(dst="120255501234"), "default"),  # one digit too many for the pattern
        (MessageFacts(dst="4915550001"), "default"),
    ],
)
def test_the_first_route_whose_conditions_all_hold_takes_the_message(facts, route):
    assert TABLE.route_for(facts).name == route


def test_a_route_with_several_conditions_needs_them_all():
    route = Route("de alerts", ("eu",), dst_prefixes=("49",), sources=("ALERTS",))
    assert route.matches(MessageFacts(dst="4915550001", src="ALERTS"))
    assert not route.matches(MessageFacts(dst="4915550001", src="OPS"))
    assert not route.matches(MessageFacts(dst="3315550001", src="ALERTS"))
    assert not route.is_default and Route("any", ("eu",)).is_default


def test_no_route_no_choice():
    table = RoutingTable([Route("brazil", ("br",), dst_prefixes=("55",))])
    assert table.route_for(MessageFacts(dst="4915550001")) is None
    assert table.choose(MessageFacts(dst="4915550001"), key=1) is None


def test_the_first_usable_connector_is_chosen_and_the_rest_are_the_failover():
    brazil = MessageFacts(dst="5511999990000")
    assert TABLE.choose(brazil, key=1) == RouteChoice("brazil", "br-cheap", ("br-backup",))
    down = {"br-cheap"}
    assert TABLE.choose(brazil, key=1, usable=lambda c: c not in down) == RouteChoice(
        "brazil", "br-backup", ()
    )
    down.add("br-backup")
    assert TABLE.choose(brazil, key=1, usable=lambda c: c not in down) is None


def test_a_weighted_split_keeps_to_its_weights_over_ten_thousand_messages():
    route = Route("split", ("a", "b", "c"), weights=(50, 30, 20))
    firsts = collections.Counter(route.preference(key)[0] for key in range(1, 10_001))
    for connector, share in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        assert abs(firsts[connector] / 10_000 - share) < 0.02, firsts
    # The same message always draws the same connector; the others follow as failover.
    assert route.preference(1234) == route.preference(1234)
    assert sorted(route.preference(1234)) == ["a", "b", "c"]
    # A weight of 0 is never drawn first, but stays in the failover list.
    standby = Route("standby", ("main", "spare"), weights=(1, 0))
    assert {standby.preference(k) for k in range(200)} == {("main", "spare")}


def test_weighted_pick_covers_every_position_by_its_weight():
    picks = collections.Counter(weighted_pick((1, 3), key) for key in range(4000))
    assert abs(picks[1] / 4000 - 0.75) < 0.03


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (dict(name=" ", connectors=("a",)), "a name is needed"),
        (dict(name="r", connectors=()), "at least one connector"),
        (dict(name="r", connectors=("a", "a")), "named twice"),
        (dict(name="r", connectors=("a", "b"), weights=(1,)), "one weight per connector"),
        (dict(name="r", connectors=("a", "b"), weights=(0, 0)), "not all 0"),
        (dict(name="r", connectors=("a",), weights=(-1,)), "whole numbers"),
        (dict(name="r", connectors=("a",), dst_prefixes=("49x",)), "digits"),
        (dict(name="r", connectors=("a",), dst_pattern="(49"), "not a regular expression"),
    ],
)
def test_an_unusable_route_is_refused_saying_why(fields, problem):
    with pytest.raises(ValueError, match=problem):
        Route(**fields)


def test_two_routes_of_one_name_are_refused():
    with pytest.raises(ValueError, match="same name"):
        RoutingTable([Route("r", ("a",)), Route("r", ("b",))])


def test_a_destination_pattern_matches_in_linear_time_and_backreferences_are_refused():
    # Python's re backtracks for hours on this (2^40 ways to split the 4s); RE2 answers
    # at once. Should it come back, the suite's timeout (120 s) fails this test.
    evil = Route("evil", ("a",), dst_pattern=r"(4+)+5")
    assert not evil.matches(MessageFacts(dst="4" * 40))
    assert evil.matches(MessageFacts(dst="4445"))
    with pytest.raises(ValueError, match="no backreferences or lookaround"):
        Route("r", ("a",), dst_pattern=r"(4)\1")
