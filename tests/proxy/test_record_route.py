"""Record-Route per transport: RFC 3261 §16.6 step 4 and §16.4 with RFC 5658 double Record-Route.

A request that comes in on one transport and goes out on another is Record-Routed
twice: the value of the side it came in on first (bottom), the value of the side it
goes out on on top, so that each end of the dialog reaches us on its own transport
(a UAS takes the route set in order, a UAC in reverse, RFC 3261 §12.1.1, §12.1.2).
Later requests of the dialog carry both values as Routes: both are removed (§16.4).
The core runs on the fake clock; the derivation of the URIs is checked through
:func:`sipha.assembly.build_settings` and :func:`sipha.proxy.rules.derive_record_routes`.
"""

from __future__ import annotations

import dataclasses
from itertools import count

import pytest

from sipha.assembly import build_settings, build_view
from sipha.config import load_config_text
from sipha.proxy.core import ProxyCore, ProxySettings
from sipha.proxy.rules import RecordRoutes, derive_record_routes, is_record_route, record_route_uri
from sipha.proxy.view import ConfiguredView, PairSpec
from sipha.sip import Request, Response
from sipha.sip.address import Address
from sipha.txn import SendMessage
from tests.proxy.support import (
    ALICE,
    BACKUP,
    PRIMARY,
    Harness,
    as_request,
    ha_harness,
    invite,
    only,
    requests,
    response_to,
    responses,
)

POOL = "sip:proxy.example.com;lr"
"""The pool's FQDN without a port: found through DNS per transport (RFC 3263)."""
IP_RR = "sip:127.0.0.1:5060;lr"
"""A Record-Route URI with a port: the other transports' values carry our ports."""
VIA = {"UDP": ("127.0.0.1", 5060), "TCP": ("127.0.0.1", 5070), "TLS": ("127.0.0.1", 5061)}
ALICE_TCP = Address("TCP", "127.0.0.1", 40000)
ALICE_TLS = Address("TLS", "127.0.0.1", 40001)
EDGE = Address("UDP", "192.0.2.80", 5060)
"""Where RFC 3263 finds edge.example.net, the next hop the tests name (answered by Harness.locate)."""
EDGE_TLS = Address("TLS", "192.0.2.80", 5061)
PRIMARY_TCP = Address("TCP", "127.0.0.1", 41000)
"""The primary on a connection of its own (recognised by its Via port, docs/design.md §2)."""


def core_harness(record_route: str = IP_RR, via: dict[str, tuple[str, int]] | None = None) -> Harness:
    """A core listening on UDP 5060, TCP 5070 and TLS 5061 (unless ``via`` says otherwise)."""
    tokens = count(1)
    view = ConfiguredView.build(
        [("127.0.0.1", 5060), ("127.0.0.1", 5070), ("127.0.0.1", 5061), ("proxy.example.com", None)],
        [PairSpec("demo", PRIMARY, BACKUP, serving=True)],
    )
    settings = ProxySettings(record_route=record_route, via=dict(VIA if via is None else via))
    return Harness(ProxyCore(settings, view, token=lambda: f"t{next(tokens)}"))


def feed_stream(h: Harness, data: bytes, source: Address) -> list[SendMessage]:
    """One message from a connection (TCP or TLS): its top Via names that transport."""
    data = data.replace(b"SIP/2.0/UDP", f"SIP/2.0/{source.transport}".encode(), 1)
    h.core.receive(data, source, h.now, stream=True)
    return h._collect()


def only_request(items: list[Request]) -> Request:
    assert len(items) == 1, items
    return items[0]


def record_routes(message: Request | Response) -> list[str]:
    """The Record-Route URIs of ``message``, topmost first."""
    return [value.uri_text for value in message.record_routes]


def forwarded_from(h: Harness, source: Address, data: bytes | None = None) -> Request:
    data = invite(via_host=f"127.0.0.1:{source.port}") if data is None else data
    sent = h.feed(data, source) if source.transport == "UDP" else feed_stream(h, data, source)
    return as_request(only(sent, PRIMARY))


# ====================================================================== §16.6 step 4: which values


def test_udp_in_udp_out_one_value_as_configured() -> None:
    """Same transport on both sides: the one configured value, as before."""
    h = core_harness()
    assert record_routes(forwarded_from(h, ALICE)) == [IP_RR]


def test_tcp_in_udp_out_two_values_outbound_on_top() -> None:
    """RFC 5658: the received-on side (TCP, our TCP port) at the bottom, the sent-on side (UDP) on top."""
    h = core_harness()
    forwarded = forwarded_from(h, ALICE_TCP)
    assert record_routes(forwarded) == ["sip:127.0.0.1:5060;lr", "sip:127.0.0.1:5070;transport=tcp;lr"]


def test_tls_in_udp_out_two_values() -> None:
    h = core_harness()
    forwarded = forwarded_from(h, ALICE_TLS)
    assert record_routes(forwarded) == ["sip:127.0.0.1:5060;lr", "sip:127.0.0.1:5061;transport=tls;lr"]


def test_udp_in_tcp_out_two_values() -> None:
    """A member's request to a TCP target (rule 3): UDP at the bottom, TCP on top."""
    h = core_harness()
    sent = h.feed(invite(uri="sip:alice@127.0.0.1:40000;transport=tcp", via_host="127.0.0.1:5070"), PRIMARY)
    forwarded = as_request(only(sent, ALICE_TCP))
    assert record_routes(forwarded) == ["sip:127.0.0.1:5070;transport=tcp;lr", "sip:127.0.0.1:5060;lr"]


def test_tcp_in_tcp_out_one_value_of_tcp() -> None:
    h = core_harness()
    sent = feed_stream(
        h, invite(uri="sip:alice@127.0.0.1:40000;transport=tcp", via_host="127.0.0.1:5070"), PRIMARY_TCP
    )
    forwarded = as_request(only(sent, ALICE_TCP))
    assert record_routes(forwarded) == ["sip:127.0.0.1:5070;transport=tcp;lr"]


def test_fqdn_without_port_keeps_no_port() -> None:
    """No port in the configured URI: none in the others either (DNS/SRV per transport, RFC 3263)."""
    h = core_harness(POOL)
    assert record_routes(forwarded_from(h, ALICE)) == [POOL]
    assert record_routes(forwarded_from(h, ALICE_TCP, invite(call_id="c2", via_host="127.0.0.1:40000"))) == [
        "sip:proxy.example.com;lr",
        "sip:proxy.example.com;transport=tcp;lr",
    ]
    assert record_routes(forwarded_from(h, ALICE_TLS, invite(call_id="c3", via_host="127.0.0.1:40001"))) == [
        "sip:proxy.example.com;lr",
        "sip:proxy.example.com;transport=tls;lr",
    ]


def test_existing_record_routes_stay_below_ours() -> None:
    h = core_harness()
    data = invite(via_host="127.0.0.1:40000", extra="Record-Route: <sip:edge.example.net;lr>\r\n")
    assert record_routes(forwarded_from(h, ALICE_TCP, data)) == [
        "sip:127.0.0.1:5060;lr",
        "sip:127.0.0.1:5070;transport=tcp;lr",
        "sip:edge.example.net;lr",
    ]


@pytest.mark.parametrize(
    ("record_route", "sips"), [(IP_RR, "sips:127.0.0.1:5061;lr"), (POOL, "sips:proxy.example.com;lr")]
)
def test_sips_request_uri_gets_a_sips_value(record_route: str, sips: str) -> None:
    """§16.6 step 4: a SIPS Request-URI makes the Record-Route a SIPS URI (our TLS port, no transport)."""
    h = core_harness(record_route)
    sent = h.feed(invite(uri="sips:alice@127.0.0.1:5091", via_host="127.0.0.1:5070"), PRIMARY)
    forwarded = as_request(only(sent, Address("TLS", "127.0.0.1", 5091)))
    assert record_routes(forwarded) == [sips]


def test_sips_top_route_gets_a_sips_value() -> None:
    """§16.6 step 4: "or the topmost Route header field value (after the post processing ...)"."""
    h = core_harness()
    data = invite(
        uri="sip:alice@example.com",
        via_host="127.0.0.1:5070",
        extra="Route: <sip:127.0.0.1:5060;lr>, <sips:edge.example.net;lr>\r\n",
    )
    h.feed(data, PRIMARY)
    (lookup,) = h.core.lookups
    assert (lookup.host, lookup.secure) == ("edge.example.net", True)  # sips: TLS targets only
    forwarded = as_request(only(h.locate(EDGE_TLS), EDGE_TLS))
    assert [value.uri_text for value in forwarded.routes] == ["sips:edge.example.net;lr"]  # ours removed
    assert record_routes(forwarded) == ["sips:127.0.0.1:5061;lr"]


def test_sips_without_a_tls_listen_falls_back_to_the_configured_uri() -> None:
    """No TLS listen address: no SIPS value to give; the values of the transports we have."""
    h = core_harness(via={"UDP": ("127.0.0.1", 5060), "TCP": ("127.0.0.1", 5070)})
    sent = h.feed(invite(uri="sips:alice@127.0.0.1:5091", via_host="127.0.0.1:5070"), PRIMARY)
    forwarded = as_request(only(sent, Address("TLS", "127.0.0.1", 5091)))
    assert record_routes(forwarded) == [IP_RR]


def test_the_configured_sips_uri_is_used_as_is() -> None:
    routes = RecordRoutes.build("sips:proxy.example.com;lr", {}, VIA)
    assert routes.sips == "<sips:proxy.example.com;lr>"
    assert routes.values["TLS"] == "<sips:proxy.example.com;lr>"
    assert routes.values["UDP"] == "<sip:proxy.example.com;lr>"


def test_explicit_record_routes_of_the_settings_are_used() -> None:
    h = core_harness()
    settings = dataclasses.replace(
        h.core.settings,
        record_routes={"UDP": "sip:a.example.com;lr", "TCP": "sip:b.example.com;transport=tcp;lr"},
    )
    h.core.reconfigure(settings, h.core.view, None, h.now)
    assert record_routes(forwarded_from(h, ALICE_TCP)) == [
        "sip:a.example.com;lr",
        "sip:b.example.com;transport=tcp;lr",
    ]


def test_reconfigure_derives_the_values_anew() -> None:
    h = core_harness()
    settings = dataclasses.replace(
        h.core.settings,
        record_route="sip:127.0.0.2:5062;lr",
        via={"UDP": ("127.0.0.2", 5062), "TCP": ("127.0.0.2", 5072)},
    )
    h.core.reconfigure(settings, h.core.view, None, h.now)
    assert record_routes(forwarded_from(h, ALICE_TCP)) == [
        "sip:127.0.0.2:5062;lr",
        "sip:127.0.0.2:5072;transport=tcp;lr",
    ]


# ====================================================================== the dialog: responses and §16.4


def test_the_2xx_carries_both_values_back_to_the_caller() -> None:
    """The UAC builds its route set from the response, in reverse: TCP value first (its side)."""
    h = core_harness()
    forwarded = forwarded_from(h, ALICE_TCP)
    sent = h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    relayed = responses(sent, ALICE_TCP)
    assert [r.status for r in relayed] == [200]
    assert record_routes(relayed[0])[::-1] == ["sip:127.0.0.1:5070;transport=tcp;lr", "sip:127.0.0.1:5060;lr"]


def test_in_dialog_request_from_the_callee_has_both_routes_removed() -> None:
    """§16.4 with RFC 5658: the first Route names us, the next is our other value: both go."""
    h = core_harness()
    routes = "Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5070;transport=tcp;lr>\r\n"
    bye = invite(
        method="BYE",
        uri="sip:alice@127.0.0.1:40000;transport=tcp",
        to_tag="srv1",
        via_host="127.0.0.1:5070",
        extra=routes,
        body=b"",
    )
    sent = h.feed(bye, PRIMARY)
    forwarded = only_request(requests(sent, ALICE_TCP))
    assert forwarded.method == "BYE"
    assert forwarded.get("route") is None
    assert forwarded.record_routes == []  # in-dialog: not Record-Routed


def test_in_dialog_request_from_the_caller_has_both_routes_removed() -> None:
    """The caller's route set is the reverse: our TCP value first, then our UDP value."""
    h = core_harness()
    routes = "Route: <sip:127.0.0.1:5070;transport=tcp;lr>, <sip:127.0.0.1:5060;lr>\r\n"
    bye = invite(
        method="BYE",
        uri="sip:srv@127.0.0.1:5070",
        to_tag="srv1",
        via_host="127.0.0.1:40000",
        extra=routes,
        body=b"",
    )
    sent = feed_stream(h, bye, ALICE_TCP)
    forwarded = only_request(requests(sent, PRIMARY))
    assert forwarded.get("route") is None


def test_the_ack_of_a_2xx_has_both_routes_removed() -> None:
    h = core_harness(POOL)
    routes = "Route: <sip:proxy.example.com;transport=tls;lr>, <sip:proxy.example.com;lr>\r\n"
    ack = invite(
        method="ACK",
        uri="sip:srv@127.0.0.1:5070",
        to_tag="srv1",
        via_host="127.0.0.1:40001",
        extra=routes,
        body=b"",
    )
    sent = feed_stream(h, ack, ALICE_TLS)
    forwarded = only_request(requests(sent, PRIMARY))
    assert forwarded.method == "ACK"
    assert forwarded.get("route") is None


def test_the_route_after_our_two_goes_on() -> None:
    """Only our values are removed: the next hop's Route stays and the request goes there."""
    h = core_harness()
    routes = (
        "Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5070;transport=tcp;lr>, <sip:edge.example.net;lr>\r\n"
    )
    bye = invite(
        method="BYE",
        uri="sip:bob@example.com",
        to_tag="srv1",
        via_host="127.0.0.1:5070",
        extra=routes,
        body=b"",
    )
    h.feed(bye, PRIMARY)
    forwarded = only_request(requests(h.locate(EDGE), EDGE))
    assert [value.uri_text for value in forwarded.routes] == ["sip:edge.example.net;lr"]


def test_a_second_route_that_is_not_ours_is_kept() -> None:
    h = core_harness()
    routes = "Route: <sip:127.0.0.1:5060;lr>, <sip:edge.example.net;lr>\r\n"
    bye = invite(
        method="BYE",
        uri="sip:bob@example.com",
        to_tag="srv1",
        via_host="127.0.0.1:5070",
        extra=routes,
        body=b"",
    )
    h.feed(bye, PRIMARY)
    forwarded = only_request(requests(h.locate(EDGE), EDGE))
    assert [value.uri_text for value in forwarded.routes] == ["sip:edge.example.net;lr"]


@pytest.mark.parametrize(
    "request_uri",
    ["sip:127.0.0.1:5070;transport=tcp;lr", "sip:127.0.0.1:5061;transport=tls;lr", "sips:127.0.0.1:5061;lr"],
)
def test_16_4_strict_routing_recognises_every_variant(request_uri: str) -> None:
    """§16.4: a Request-URI that is any value we Record-Routed with is replaced by the last Route."""
    h = core_harness()
    bye = invite(
        method="BYE",
        uri=request_uri,
        to_tag="srv1",
        via_host="127.0.0.1:5061",
        extra="Route: <sip:srv@127.0.0.1:5070>\r\n",
        body=b"",
    )
    sent = h.feed(bye, ALICE)
    forwarded = only_request(requests(sent, PRIMARY))
    assert forwarded.uri == "sip:srv@127.0.0.1:5070"
    assert forwarded.get("route") is None


def test_16_4_strict_routing_with_a_pool_variant_without_port() -> None:
    """``sip:pool;transport=tls;lr`` means port 5061 (§19.1.2): still ours."""
    h = core_harness(POOL)
    bye = invite(
        method="BYE",
        uri="sip:proxy.example.com;transport=tls;lr",
        to_tag="srv1",
        via_host="127.0.0.1:5061",
        extra="Route: <sip:srv@127.0.0.1:5070>\r\n",
        body=b"",
    )
    sent = h.feed(bye, ALICE)
    assert only_request(requests(sent, PRIMARY)).uri == "sip:srv@127.0.0.1:5070"


def test_is_record_route_needs_no_user_part_and_our_address() -> None:
    routes = RecordRoutes.build(POOL, {}, VIA)
    assert is_record_route(record_route_uri("sip:proxy.example.com;transport=tls;lr"), routes)
    assert is_record_route(record_route_uri("sips:proxy.example.com;lr"), routes)
    assert is_record_route(record_route_uri("sip:proxy.example.com:5060;transport=tcp;lr"), routes)
    assert not is_record_route(record_route_uri("sip:service@proxy.example.com;lr"), routes)
    assert not is_record_route(record_route_uri("sip:proxy.example.com:5999;lr"), routes)
    assert not is_record_route(record_route_uri("sip:edge.example.net;lr"), routes)


# ====================================================================== deriving the URIs


@pytest.mark.parametrize(
    ("record_route", "expected"),
    [
        (
            "sip:127.0.0.1:5060;lr",
            {
                "UDP": "sip:127.0.0.1:5060;lr",
                "TCP": "sip:127.0.0.1:5070;transport=tcp;lr",
                "TLS": "sip:127.0.0.1:5061;transport=tls;lr",
            },
        ),
        (
            "sip:proxy.example.com;lr",
            {
                "UDP": "sip:proxy.example.com;lr",
                "TCP": "sip:proxy.example.com;transport=tcp;lr",
                "TLS": "sip:proxy.example.com;transport=tls;lr",
            },
        ),
        (
            # Its own transport is TCP: used as is there; the others lose its other parameters.
            "sip:pool.example.com:5070;transport=tcp;lr;x=1",
            {
                "TCP": "sip:pool.example.com:5070;transport=tcp;lr;x=1",
                "UDP": "sip:pool.example.com:5060;lr",
                "TLS": "sip:pool.example.com:5061;transport=tls;lr",
            },
        ),
        (
            "sips:pool.example.com;lr",
            {
                "TLS": "sips:pool.example.com;lr",
                "UDP": "sip:pool.example.com;lr",
                "TCP": "sip:pool.example.com;transport=tcp;lr",
            },
        ),
        (
            "sip:[2001:db8::1]:5060;lr",
            {
                "UDP": "sip:[2001:db8::1]:5060;lr",
                "TCP": "sip:[2001:db8::1]:5070;transport=tcp;lr",
                "TLS": "sip:[2001:db8::1]:5061;transport=tls;lr",
            },
        ),
    ],
)
def test_derive_record_routes(record_route: str, expected: dict[str, str]) -> None:
    assert derive_record_routes(record_route, VIA) == expected


def test_derive_only_for_the_transports_we_listen_on() -> None:
    assert derive_record_routes("sip:127.0.0.1:5060;lr", {"UDP": ("127.0.0.1", 5060)}) == {
        "UDP": "sip:127.0.0.1:5060;lr"
    }


def test_build_settings_derives_the_record_route_of_each_transport() -> None:
    """assembly.build_settings: the port of the first listen address of each transport."""
    config = load_config_text(
        '[proxy]\nlisten = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5070"]\n'
        'record-route = "sip:127.0.0.1:5060;lr"\n'
    )
    listen = [
        Address("UDP", "127.0.0.1", 5060),
        Address("TCP", "127.0.0.1", 5070),
        Address("TCP", "127.0.0.1", 5080),  # not the first TCP one
        Address("TLS", "127.0.0.1", 5061),  # given directly: tls: listens are checked by the config
    ]
    settings = build_settings(config, listen)
    assert settings.record_route == "sip:127.0.0.1:5060;lr"
    assert settings.record_routes == {
        "UDP": "sip:127.0.0.1:5060;lr",
        "TCP": "sip:127.0.0.1:5070;transport=tcp;lr",
        "TLS": "sip:127.0.0.1:5061;transport=tls;lr",
    }


def test_build_settings_with_the_default_configuration() -> None:
    """The embedded default: ``sip:127.0.0.1;lr`` on UDP and TCP 5060."""
    config = load_config_text("")
    listen = [Address("UDP", "127.0.0.1", 5060), Address("TCP", "127.0.0.1", 5060)]
    assert build_settings(config, listen).record_routes == {
        "UDP": "sip:127.0.0.1;lr",
        "TCP": "sip:127.0.0.1;transport=tcp;lr",
    }


def test_build_view_names_us_on_every_variant() -> None:
    """view.is_own is true for the host and port of every Record-Route value (§16.4, routing)."""
    config = load_config_text(
        '[proxy]\nlisten = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5070"]\nsip-address = "192.0.2.1"\n'
        'record-route = "sip:pool.example.com:5060;lr"\n'
    )
    listen = [
        Address("UDP", "0.0.0.0", 5060),
        Address("TCP", "0.0.0.0", 5070),
        Address("TLS", "0.0.0.0", 5061),
    ]
    view = build_view(config, listen)
    routes = RecordRoutes.build(config.proxy.record_route, build_settings(config, listen).record_routes, {})
    for host, port in routes.addresses:
        assert view.is_own(host, port), (host, port)
    assert not view.is_own("pool.example.com", 5999)


def test_build_view_pool_without_port_is_ours_on_any_port() -> None:
    config = load_config_text('[proxy]\nrecord-route = "sip:pool.example.com;lr"\n')
    view = build_view(config, [Address("UDP", "127.0.0.1", 5060)])
    assert view.is_own("pool.example.com", 5061)  # ;transport=tls without a port


def test_a_request_moved_to_the_backup_keeps_the_values_of_its_transports() -> None:
    """A held request forwarded later (docs/design.md §2) still knows the transport it came in on."""
    h = ha_harness(oos_check=1.0, oos_force=1.0, takeover=6.0, primary_active=True)
    first = only_request(requests(feed_stream(h, invite(via_host="127.0.0.1:40000"), ALICE_TCP), PRIMARY))
    h.transport_error(PRIMARY)  # the primary is gone: the INVITE is held for the member that answers
    moved = [r for r in requests(h.answer_probes(BACKUP), BACKUP) if r.method == "INVITE"]
    expected = ["sip:proxy.example.com;lr", "sip:proxy.example.com;transport=tcp;lr"]
    assert record_routes(first) == expected
    assert record_routes(only_request(moved)) == expected
