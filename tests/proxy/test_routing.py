"""Unit tests of the routing decision (docs/design.md §3) and the configured routing view.

:func:`sipha.proxy.routing.decide` is called directly with a
:class:`ConfiguredView` and hand-built requests; the end-to-end tests at the
bottom go through the proxy core on the :class:`proxy_support.Harness`.
"""

from __future__ import annotations

import pytest

from sipha.ha import Member
from sipha.proxy.routing import RETRY_AFTER_SECONDS, Answer, Forward, Locate, decide, uri_address
from sipha.proxy.view import ConfiguredView, PairSpec
from sipha.sip import Request, SipUri, parse_uri
from sipha.sip.address import Address
from tests.proxy.support import (
    ALICE,
    BACKUP,
    PRIMARY,
    Harness,
    as_request,
    harness,
    invite,
    make_view,
    only,
    requests,
    responses,
    statuses,
)

EDGE = Address("UDP", "192.0.2.50", 5060)  # an endpoint or gateway, not a member


def req(method: str = "INVITE", uri: str = "sip:service@127.0.0.1:5060", *routes: str) -> Request:
    """A request as routing sees it: after validation and §16.4 preprocessing."""
    headers = [
        ("Via", "SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bK-r"),
        ("Max-Forwards", "70"),
        *[("Route", route) for route in routes],
        ("From", "<sip:a@example.com>;tag=1"),
        ("To", "<sip:b@example.com>"),
        ("Call-ID", "route-test"),
        ("CSeq", f"1 {method}"),
    ]
    return Request.build(method, uri, headers)


@pytest.fixture
def view() -> ConfiguredView:
    return make_view()


@pytest.fixture
def h() -> Harness:
    return harness()


def backup_of(view: ConfiguredView) -> Member:
    return view.members("demo")[1]


# ====================================================================== rule 1: keepalive OPTIONS


@pytest.mark.parametrize(
    "uri",
    [
        "sip:127.0.0.1:5060",
        "sip:127.0.0.1",  # default port 5060
        "sip:proxy.example.com",
        "sip:PROXY.example.com:5099",  # the record-route host, any port
        "sip:127.0.0.1:5060;transport=udp",
    ],
)
def test_rule1_keepalive_options_answered_200(view: ConfiguredView, uri: str) -> None:
    assert decide(req("OPTIONS", uri), EDGE, view) == Answer(200, "OK")


def test_rule1_keepalive_from_a_member_answered_too(view: ConfiguredView) -> None:
    assert decide(req("OPTIONS", "sip:127.0.0.1:5060"), PRIMARY, view) == Answer(200, "OK")


def test_rule1_options_with_a_user_part_goes_to_the_pair(view: ConfiguredView) -> None:
    assert decide(req("OPTIONS", "sip:service@127.0.0.1:5060"), EDGE, view) == Forward(PRIMARY, "demo")


def test_rule1_options_with_a_route_is_not_a_keepalive(view: ConfiguredView) -> None:
    decision = decide(req("OPTIONS", "sip:127.0.0.1:5060", "<sip:127.0.0.1:5070;lr>"), EDGE, view)
    assert decision == Forward(PRIMARY, "demo")


def test_rule1_options_to_another_port_of_our_ip_is_not_a_keepalive(view: ConfiguredView) -> None:
    assert decide(req("OPTIONS", "sip:127.0.0.1:5099"), EDGE, view) == Forward(PRIMARY, "demo")


def test_rule1_other_methods_to_the_proxy_go_to_the_pair(view: ConfiguredView) -> None:
    assert decide(req("INVITE", "sip:127.0.0.1:5060"), EDGE, view) == Forward(PRIMARY, "demo")


def test_rule1_options_with_tel_uri_goes_to_the_pair(view: ConfiguredView) -> None:
    assert decide(req("OPTIONS", "tel:+15551234"), EDGE, view) == Forward(PRIMARY, "demo")


def test_rule1_keepalive_gets_503_when_no_pair_has_an_active_member(view: ConfiguredView) -> None:
    view.active["demo"] = None
    decision = decide(req("OPTIONS", "sip:127.0.0.1:5060"), EDGE, view)
    assert isinstance(decision, Answer)
    assert decision.status == 503


# ====================================================================== rule 2: members → active member


def test_rule2_request_uri_naming_the_primary_goes_to_the_primary(view: ConfiguredView) -> None:
    assert decide(req("BYE", "sip:srv@127.0.0.1:5070"), EDGE, view) == Forward(PRIMARY, "demo")


def test_rule2_request_uri_naming_the_backup_goes_to_the_active_member(view: ConfiguredView) -> None:
    assert decide(req("BYE", "sip:x@127.0.0.1:5080"), EDGE, view) == Forward(PRIMARY, "demo")


def test_rule2_after_switch_requests_naming_the_primary_go_to_the_backup(view: ConfiguredView) -> None:
    view.active["demo"] = backup_of(view)
    assert decide(req("BYE", "sip:srv@127.0.0.1:5070"), EDGE, view) == Forward(BACKUP, "demo")
    assert decide(req("BYE", "sip:x@127.0.0.1:5080"), EDGE, view) == Forward(BACKUP, "demo")


def test_rule2_route_naming_a_member_goes_to_the_active_member(view: ConfiguredView) -> None:
    decision = decide(req("BYE", "sip:bob@example.com", "<sip:127.0.0.1:5080;lr>"), EDGE, view)
    assert decision == Forward(PRIMARY, "demo")


def test_rule2_pair_without_active_member_gets_503_with_retry_after(view: ConfiguredView) -> None:
    view.active["demo"] = None
    expected = Answer(503, "Service Unavailable", retry_after=RETRY_AFTER_SECONDS, pair="demo")
    assert decide(req("BYE", "sip:srv@127.0.0.1:5070"), EDGE, view) == expected
    assert decide(req("INVITE"), EDGE, view) == expected  # rule 4 too


def test_rule2_member_named_with_default_port() -> None:
    view = ConfiguredView.build(
        [("127.0.0.1", 5060)],
        [PairSpec("p", Address("UDP", "10.0.0.1", 5060), Address("UDP", "10.0.0.2", 5060))],
    )
    decision = decide(req("BYE", "sip:x@10.0.0.2"), EDGE, view)
    assert decision == Forward(Address("UDP", "10.0.0.1", 5060), "p")


def test_rule2_ipv6_member() -> None:
    view = ConfiguredView.build(
        [("::1", 5060)],
        [PairSpec("v6", Address("UDP", "2001:db8::1", 5070), Address("UDP", "2001:db8::2", 5070))],
    )
    decision = decide(req("BYE", "sip:x@[2001:DB8::2]:5070"), EDGE, view)
    assert decision == Forward(Address("UDP", "2001:db8::1", 5070), "v6")
    assert view.is_own("[::1]", None)


def test_rule2_sips_uri_without_port_names_a_tls_member_on_5061() -> None:
    tls_pair = PairSpec("tls", Address("TLS", "10.0.0.1", 5061), Address("TLS", "10.0.0.2", 5061))
    other = PairSpec(
        "other", Address("UDP", "10.1.0.1", 5060), Address("UDP", "10.1.0.2", 5060), serving=True
    )
    view = ConfiguredView.build([("127.0.0.1", 5060)], [tls_pair, other])
    decision = decide(req("BYE", "sips:x@10.0.0.2"), EDGE, view)
    assert decision == Forward(Address("TLS", "10.0.0.1", 5061), "tls")


# ====================================================================== rule 3: from a member


def test_rule3_request_from_a_member_follows_its_request_uri(view: ConfiguredView) -> None:
    decision = decide(req("INVITE", "sip:alice@127.0.0.1:5061"), PRIMARY, view)
    assert decision == Forward(ALICE)


def test_rule3_request_from_the_backup_too(view: ConfiguredView) -> None:
    decision = decide(req("INVITE", "sip:alice@127.0.0.1:5061"), BACKUP, view)
    assert decision == Forward(ALICE)


def test_rule3_request_from_a_member_follows_its_route(view: ConfiguredView) -> None:
    decision = decide(
        req("INVITE", "sip:alice@example.com", "<sip:edge.example.net:5070;transport=tcp;lr>"), PRIMARY, view
    )
    assert decision == Forward(
        Address("TCP", "edge.example.net", 5070), locate=Locate("edge.example.net", 5070, "tcp", secure=False)
    )


@pytest.mark.parametrize(
    ("uri", "routes", "locate"),
    [
        # §16.6 step 7, RFC 3263 §4.1: no port and no transport: NAPTR and SRV choose them.
        ("sip:bob@carrier.example.net", (), Locate("carrier.example.net", None, None, secure=False)),
        ("sip:bob@carrier.example.net:5070", (), Locate("carrier.example.net", 5070, None, secure=False)),
        ("sips:bob@carrier.example.net", (), Locate("carrier.example.net", None, None, secure=True)),
        # RFC 3263 §4: "If the URI contains an maddr parameter, TARGET is the maddr".
        ("sip:bob@10.0.0.9;maddr=edge.example.net", (), Locate("edge.example.net", None, None, secure=False)),
        # §16.6 step 7: a SIPS Request-URI is located as SIPS, whatever the Route's scheme.
        (
            "sips:bob@carrier.example.net",
            ("<sip:edge.example.net;lr>",),
            Locate("edge.example.net", None, None, secure=True),
        ),
    ],
)
def test_rule3_a_next_hop_named_by_a_host_name_is_located(
    view: ConfiguredView, uri: str, routes: tuple[str, ...], locate: Locate
) -> None:
    decision = decide(req("INVITE", uri, *routes), PRIMARY, view)
    assert isinstance(decision, Forward)
    assert decision.locate == locate
    assert decision.pair is None


@pytest.mark.parametrize(
    "uri", ["sip:bob@192.0.2.9", "sip:bob@[2001:db8::9]:5070", "sip:bob@x;maddr=192.0.2.9"]
)
def test_rule3_an_ip_next_hop_needs_no_lookup(view: ConfiguredView, uri: str) -> None:
    decision = decide(req("INVITE", uri), PRIMARY, view)
    assert isinstance(decision, Forward)
    assert decision.locate is None


def test_rule3_a_sips_request_to_a_host_name_over_udp_is_refused(view: ConfiguredView) -> None:
    """§26.2.2: SIPS needs TLS on every hop; a next hop that asks for UDP cannot be located as SIPS."""
    decision = decide(req("INVITE", "sips:bob@carrier.example.net;transport=udp"), PRIMARY, view)
    assert isinstance(decision, Answer)
    assert decision.status == 416


def test_rule3_source_port_must_match_the_member(view: ConfiguredView) -> None:
    """§2: same IP, other port: not the member; an endpoint's R-URI is not followed."""
    decision = decide(req("INVITE", "sip:alice@127.0.0.1:5061"), Address("UDP", "127.0.0.1", 5071), view)
    assert decision == Forward(PRIMARY, "demo")


def test_rule3_member_request_to_the_proxy_goes_to_the_pair(view: ConfiguredView) -> None:
    assert decide(req("INVITE", "sip:service@proxy.example.com"), PRIMARY, view) == Forward(PRIMARY, "demo")


# ====================================================================== rule 4 and relaying


def test_rule4_endpoint_request_goes_to_the_serving_pair(view: ConfiguredView) -> None:
    assert decide(req("INVITE", "sip:bob@example.com"), EDGE, view) == Forward(PRIMARY, "demo")


def test_route_to_third_party_from_endpoint_gets_403(view: ConfiguredView) -> None:
    decision = decide(req("INVITE", "sip:bob@example.com", "<sip:evil.example.net;lr>"), EDGE, view)
    assert isinstance(decision, Answer)
    assert decision.status == 403


def test_route_with_non_sip_uri_gets_416(view: ConfiguredView) -> None:
    decision = decide(req("INVITE", "sip:bob@example.com", "<tel:+15551234>"), EDGE, view)
    assert isinstance(decision, Answer)
    assert decision.status == 416


def two_pairs(*, serving: bool) -> ConfiguredView:
    return ConfiguredView.build(
        [("127.0.0.1", 5060)],
        [
            PairSpec(
                "a",
                Address("UDP", "10.0.1.10", 5060),
                Address("UDP", "10.0.1.11", 5060),
                domains=frozenset({"a.example.com"}),
            ),
            PairSpec(
                "b", Address("UDP", "10.0.2.10", 5060), Address("UDP", "10.0.2.11", 5060), serving=serving
            ),
        ],
    )


def test_rule4_match_domain_chooses_the_pair() -> None:
    view = two_pairs(serving=True)
    assert decide(req("INVITE", "sip:bob@a.example.com"), EDGE, view) == Forward(
        Address("UDP", "10.0.1.10", 5060), "a"
    )
    assert decide(req("INVITE", "sip:bob@A.Example.COM"), EDGE, view) == Forward(
        Address("UDP", "10.0.1.10", 5060), "a"
    )
    assert decide(req("INVITE", "sip:bob@b.example.com"), EDGE, view) == Forward(
        Address("UDP", "10.0.2.10", 5060), "b"
    )


def test_rule4_no_match_and_no_serving_pair_gets_404() -> None:
    view = two_pairs(serving=False)
    decision = decide(req("INVITE", "sip:bob@other.example.com"), EDGE, view)
    assert isinstance(decision, Answer)
    assert decision.status == 404
    decision = decide(req("INVITE", "tel:+15551234"), EDGE, view)
    assert isinstance(decision, Answer)
    assert decision.status == 404


def test_rule4_tel_uri_goes_to_the_serving_pair(view: ConfiguredView) -> None:
    assert decide(req("INVITE", "tel:+15551234"), EDGE, view) == Forward(PRIMARY, "demo")


# ====================================================================== uri_address (RFC 3263 §4 without DNS)


@pytest.mark.parametrize(
    ("uri", "address"),
    [
        ("sip:bob@example.com", Address("UDP", "example.com", 5060)),
        ("sip:bob@example.com:5070", Address("UDP", "example.com", 5070)),
        ("sips:bob@example.com", Address("TLS", "example.com", 5061)),
        ("sips:bob@example.com:5071", Address("TLS", "example.com", 5071)),
        ("sip:bob@example.com;transport=tcp", Address("TCP", "example.com", 5060)),
        ("sip:bob@example.com;transport=TLS", Address("TLS", "example.com", 5061)),
        ("sip:bob@example.com;transport=tls", Address("TLS", "example.com", 5061)),
        ("sip:bob@example.com;maddr=192.0.2.7", Address("UDP", "192.0.2.7", 5060)),
        ("sip:bob@[2001:db8::1]", Address("UDP", "2001:db8::1", 5060)),
        ("sip:bob@[2001:db8::1]:5080;transport=tcp", Address("TCP", "2001:db8::1", 5080)),
        ("sip:10.0.0.1;maddr=[2001:db8::9]", Address("UDP", "2001:db8::9", 5060)),
    ],
)
def test_uri_address(uri: str, address: Address) -> None:
    parsed = parse_uri(uri)
    assert isinstance(parsed, SipUri)
    assert uri_address(parsed) == address


# ====================================================================== the configured view


def test_view_build_makes_primaries_active(view: ConfiguredView) -> None:
    primary, backup = view.members("demo")
    assert (primary.role, primary.address) == ("primary", PRIMARY)
    assert (backup.role, backup.address) == ("backup", BACKUP)
    assert view.active_member("demo") == primary
    assert view.active_member("unknown") is None


def test_view_is_own(view: ConfiguredView) -> None:
    assert view.is_own("127.0.0.1", 5060)
    assert view.is_own("127.0.0.1", None)
    assert not view.is_own("127.0.0.1", 5070)
    assert view.is_own("Proxy.Example.Com", 1234)
    assert not view.is_own("example.com", None)


def test_view_member_at(view: ConfiguredView) -> None:
    assert view.member_at("127.0.0.1", 5080) == backup_of(view)
    assert view.member_at("127.0.0.1", 5090) is None
    assert view.member_at("127.0.0.1", None) is None


# ====================================================================== end to end, through the core


def test_e2e_keepalive_answered_locally(h: Harness) -> None:
    for uri in ("sip:127.0.0.1:5060", "sip:proxy.example.com"):
        sent = h.feed(invite(method="OPTIONS", uri=uri, branch=f"z9hG4bK-{uri}", body=b""))
        assert statuses(sent) == [200]
        assert requests(sent) == []


def test_e2e_keepalive_with_a_route_to_us_answered_locally(h: Harness) -> None:
    """Our Route entry is removed first (§16.4): no Route is left, so it is a keepalive."""
    data = invite(
        method="OPTIONS", uri="sip:proxy.example.com", extra="Route: <sip:127.0.0.1;lr>\r\n", body=b""
    )
    assert statuses(h.feed(data)) == [200]


def test_e2e_options_with_user_part_goes_to_the_pair(h: Harness) -> None:
    sent = h.feed(invite(method="OPTIONS", uri="sip:service@127.0.0.1:5060", body=b""))
    assert statuses(sent) == []
    assert as_request(only(sent, PRIMARY)).method == "OPTIONS"


def test_e2e_request_from_member_forwarded_to_its_request_uri(h: Harness) -> None:
    data = invite(uri="sip:alice@127.0.0.1:5061", via_host="127.0.0.1:5070")
    sent = h.feed(data, PRIMARY)
    assert statuses(sent, PRIMARY) == [100]
    forwarded = as_request(only(sent, ALICE))
    assert forwarded.uri == "sip:alice@127.0.0.1:5061"
    assert forwarded.max_forwards == 69


def test_e2e_request_naming_the_backup_goes_to_the_active_member(h: Harness) -> None:
    sent = h.feed(invite(uri="sip:x@127.0.0.1:5080"))
    forwarded = as_request(only(sent, PRIMARY))
    assert forwarded.uri == "sip:x@127.0.0.1:5080"  # R-URI untouched: the VIP replacement is the next hop


def test_e2e_after_switch_requests_naming_the_primary_go_to_the_backup(h: Harness) -> None:
    view = h.core.view
    assert isinstance(view, ConfiguredView)
    view.active["demo"] = backup_of(view)
    sent = h.feed(
        invite(uri="sip:srv@127.0.0.1:5070", to_tag="srv1", extra="Route: <sip:proxy.example.com;lr>\r\n")
    )
    assert as_request(only(sent, BACKUP)).uri == "sip:srv@127.0.0.1:5070"


def test_e2e_no_active_member_gets_503_retry_after(h: Harness) -> None:
    view = h.core.view
    assert isinstance(view, ConfiguredView)
    view.active["demo"] = None
    sent = h.feed(invite(method="MESSAGE", body=b""))
    [refusal] = responses(sent)
    assert refusal.status == 503
    assert refusal.get("retry-after") == str(RETRY_AFTER_SECONDS)
    assert requests(sent) == []


def test_e2e_route_to_third_party_gets_403(h: Harness) -> None:
    sent = h.feed(invite(uri="sip:bob@example.com", extra="Route: <sip:evil.example.net;lr>\r\n"))
    assert statuses(sent) == [100, 403]
    assert requests(sent) == []


def test_e2e_no_pair_gets_404() -> None:
    h = harness()
    h.core.view = two_pairs(serving=False)
    sent = h.feed(invite(uri="sip:bob@other.example.com"))
    assert statuses(sent) == [100, 404]


def test_e2e_match_domain_chooses_the_pair() -> None:
    h = harness()
    h.core.view = two_pairs(serving=True)
    sent = h.feed(invite(uri="sip:bob@a.example.com"))
    assert as_request(only(sent, Address("UDP", "10.0.1.10", 5060))).uri == "sip:bob@a.example.com"


# ====================================================================== RFC 3261 §26.2.2: SIPS on every hop


def test_a_sips_request_is_never_forwarded_over_a_cleartext_hop(view: ConfiguredView) -> None:
    """The demo pair's members are UDP: a SIPS request for it is refused with 416 (§8.1.3.5)."""
    decision = decide(req("INVITE", "sips:bob@example.com"), EDGE, view)
    assert isinstance(decision, Answer)
    assert decision.status == 416


def test_a_sips_request_from_a_member_to_a_cleartext_route_is_refused(view: ConfiguredView) -> None:
    request = req("INVITE", "sips:alice@127.0.0.1:5061", "<sip:10.9.9.9;transport=tcp;lr>")
    decision = decide(request, PRIMARY, view)
    assert isinstance(decision, Answer)
    assert decision.status == 416


def test_a_sips_request_goes_to_a_tls_member() -> None:
    tls_pair = PairSpec(
        "tls", Address("TLS", "10.0.0.1", 5061), Address("TLS", "10.0.0.2", 5061), serving=True
    )
    view = ConfiguredView.build([("127.0.0.1", 5060)], [tls_pair])
    decision = decide(req("INVITE", "sips:bob@example.com"), EDGE, view)
    assert decision == Forward(Address("TLS", "10.0.0.1", 5061), "tls")


def test_a_sips_uri_with_transport_tcp_still_means_tls() -> None:
    parsed = parse_uri("sips:bob@example.com;transport=tcp")
    assert isinstance(parsed, SipUri)
    assert uri_address(parsed) == Address("TLS", "example.com", 5061)
