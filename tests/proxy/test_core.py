"""Unit tests of the RFC 3261 §16 stateful proxy core, driven on a fake clock.

Every test names the RFC 3261 section (or docs/design.md rule) it checks.  The core
is sans-IO: :class:`proxy_support.Harness` feeds it bytes and moves the clock;
what it sends is parsed back from the bytes it would put on the wire.
"""

from __future__ import annotations

import pytest

from sipha.proxy.core import MAGIC_COOKIE, ProxyCore, ProxySettings
from sipha.proxy.rules import better as _better
from sipha.proxy.rules import class_rank as _class_rank
from sipha.proxy.rules import warning as _warning
from sipha.proxy.view import ConfiguredView
from sipha.sip import Request, Response, SipParseError, make_response, parse_message, parse_via
from sipha.sip.address import Address
from sipha.sip.headers import _parse_via
from sipha.txn import TimerConfig
from tests.proxy.support import (
    ALICE,
    BACKUP,
    PRIMARY,
    RECORD_ROUTE,
    Harness,
    ack_2xx,
    as_request,
    as_response,
    cancel,
    forward_invite,
    harness,
    invite,
    make_view,
    only,
    requests,
    response_to,
    responses,
    statuses,
)

T1 = TimerConfig().t1
TIMER_B = 64 * T1  # §17.1.1.2: 64*T1 = 32 s with T1 = 0.5 s
TIMER_C = 181.0  # §16.6 step 11: "greater than 3 minutes"
SERVER = "sip:srv@127.0.0.1:5070"


@pytest.fixture
def h() -> Harness:
    return harness()


def view_of(h: Harness) -> ConfiguredView:
    assert isinstance(h.core.view, ConfiguredView)
    return h.core.view


def header_lines(data: bytes) -> list[str]:
    """The header lines of a message's wire text (start line and body left out)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    return head.split("\r\n")[1:]


def body_of(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[1]


def only_one(items: list[Request]) -> Request:
    assert len(items) == 1, items
    return items[0]


def ringing(h: Harness, forwarded: Request) -> None:
    """The server answers 180 (after which a CANCEL may be sent, §9.1)."""
    sent = h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)
    assert statuses(sent) == [180]


# ====================================================================== §16.3 request validation


def test_16_3_step2_unknown_scheme_gets_416(h: Harness) -> None:
    sent = h.feed(invite(uri="mailto:bob@example.com"))
    assert statuses(sent) == [100, 416]
    assert requests(sent) == []
    assert h.core.counters.requests_refused == 1


def test_16_3_step2_tel_scheme_is_understood(h: Harness) -> None:
    forwarded = forward_invite(h, invite(uri="tel:+15551234"))
    assert forwarded.uri == "tel:+15551234"


def test_16_3_step3_max_forwards_zero_gets_483(h: Harness) -> None:
    sent = h.feed(invite(max_forwards=0))
    assert statuses(sent) == [100, 483]
    assert as_response(sent[-1]).reason == "Too Many Hops"
    assert requests(sent) == []


def test_16_3_step3_max_forwards_zero_options_for_the_pair_gets_483(h: Harness) -> None:
    sent = h.feed(invite(method="OPTIONS", max_forwards=0, body=b""))
    assert statuses(sent) == [483]


def test_16_3_step4_loop_gets_482(h: Harness) -> None:
    """The forwarded INVITE coming back unchanged from the primary is a loop."""
    forwarded = forward_invite(h)
    sent = h.feed(forwarded.to_bytes(), PRIMARY)
    assert statuses(sent, PRIMARY) == [100, 482]
    assert requests(sent) == []
    assert h.core.counters.loops_detected == 1


def test_16_3_step4_spiral_is_forwarded(h: Harness) -> None:
    """Same request back with another Request-URI: a spiral (§16.3 step 4), forwarded."""
    forwarded = forward_invite(h)
    forwarded.set_uri("sip:alice@127.0.0.1:5061")
    sent = h.feed(forwarded.to_bytes(), PRIMARY)
    assert 482 not in statuses(sent, PRIMARY)
    again = as_request(only(sent, ALICE))  # rule 3: from a member, to its Request-URI
    assert again.uri == "sip:alice@127.0.0.1:5061"
    branches = [via.branch for via in again.vias]
    assert len(branches) == 3
    assert branches[0] != branches[1]
    assert h.core.counters.loops_detected == 0


def test_16_3_step4_single_via_is_not_a_loop(h: Harness) -> None:
    """A Via of ours alone (nothing below it to hash): not a loop."""
    sent = h.feed(invite(via_host="127.0.0.1:5060"), ALICE)
    assert statuses(sent) == [100]
    assert len(requests(sent, PRIMARY)) == 1


def test_16_3_step4_request_through_another_proxy_is_not_a_loop(h: Harness) -> None:
    """Two Vias, neither ours: nothing to compare, forwarded."""
    data = invite(extra="Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-ua;received=127.0.0.1\r\n")
    forwarded = forward_invite(h, data)
    assert len(forwarded.vias) == 3
    assert h.core.counters.loops_detected == 0


def test_16_3_step5_unknown_proxy_require_gets_420(h: Harness) -> None:
    sent = h.feed(invite(extra="Proxy-Require: foo, bar\r\n"))
    assert statuses(sent) == [100, 420]
    refusal = responses(sent)[-1]
    assert refusal.get("unsupported") == "foo, bar"
    assert requests(sent) == []


def test_16_3_step5_supported_proxy_require_is_forwarded() -> None:
    h = harness(supported=frozenset({"foo"}))
    forwarded = forward_invite(h, invite(extra="Proxy-Require: foo\r\n"))
    assert forwarded.get("proxy-require") == "foo"


def _bad_cseq() -> bytes:
    return invite().replace(b"CSeq: 1 INVITE", b"CSeq: x1 INVITE")


def _bad_via() -> bytes:
    return invite().replace(b";branch=z9hG4bK-alice-1;rport", b";;branch=z9hG4bK-alice-1;rport")


@pytest.mark.parametrize("data", [_bad_cseq(), _bad_via()], ids=["bad-cseq", "via-double-semicolon"])
def test_16_3_step1_malformed_request_gets_stateless_400_with_warning(h: Harness, data: bytes) -> None:
    sent = h.feed(data)
    reply = only(sent, ALICE)
    assert reply.key is None  # stateless: no transaction
    response = as_response(reply)
    assert response.status == 400
    warning = response.get("warning")
    assert warning is not None
    assert warning.startswith('399 sipha "')
    assert response.to.tag is not None
    assert h.core.counters.parse_errors == 1
    assert len(h.core.txn) == 0
    assert h.core.contexts == 0


def test_16_3_step1_cseq_method_mismatch_of_unknown_method_gets_501(h: Harness) -> None:
    data = invite(method="FOO", body=b"").replace(b"CSeq: 1 FOO", b"CSeq: 1 BAR")
    assert statuses(h.feed(data)) == [501]


def test_16_3_step1_malformed_response_is_dropped(h: Harness) -> None:
    forwarded = forward_invite(h)
    bad = response_to(forwarded, 180, "Ringing").replace(b"cseq: 1 INVITE", b"cseq: x INVITE")
    assert h.feed(bad, PRIMARY) == []
    assert h.core.counters.parse_errors == 1


def test_16_3_step1_malformed_ack_is_dropped(h: Harness) -> None:
    bad = ack_2xx().replace(b"CSeq: 1 ACK", b"CSeq: x ACK")
    assert h.feed(bad) == []
    assert h.core.counters.parse_errors == 1


def test_16_3_step1_parse_error_without_via_sends_nothing(h: Harness) -> None:
    data = invite().replace(b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-alice-1;rport\r\n", b"")
    assert b"Via" not in data
    assert h.feed(data) == []
    assert h.core.counters.parse_errors == 1


def test_bad_stream_answers_with_400(h: Harness) -> None:
    """A framing error on a stream: answered if addressable (§16.3 step 1), then closed."""
    data = invite().replace(b"Content-Length: 5\r\n", b"")
    with pytest.raises(SipParseError, match="Content-Length is required") as caught:
        parse_message(data, stream=True)
    tcp = Address("TCP", "127.0.0.1", 40000)
    h.core.bad_stream(caught.value, tcp, h.now)
    reply = only(h.core.drain(), tcp)
    assert as_response(reply).status == 400


def test_warning_value_is_a_quoted_string() -> None:
    """§20.43 warn-text is a quoted-string: quotes and backslashes of the detail are neutralised."""
    assert _warning(SipParseError('bad "x" \\ y')) == "399 sipha \"bad 'x'  y\""


# ====================================================================== §16.4 route preprocessing


@pytest.mark.parametrize("own", ["sip:proxy.example.com;lr", "sip:127.0.0.1:5060;lr"])
def test_16_4_top_route_naming_the_proxy_is_removed(h: Harness, own: str) -> None:
    forwarded = forward_invite(h, invite(uri="sip:bob@example.com", extra=f"Route: <{own}>\r\n"))
    assert forwarded.get("route") is None
    assert forwarded.uri == "sip:bob@example.com"


def test_16_4_only_our_route_entry_is_removed(h: Harness) -> None:
    data = invite(uri=SERVER, extra=f"Route: <{RECORD_ROUTE}>, <sip:127.0.0.1:5070;lr>\r\n")
    forwarded = forward_invite(h, data)
    assert [r.uri_text for r in forwarded.routes] == ["sip:127.0.0.1:5070;lr"]


def test_16_4_strict_route_compatibility(h: Harness) -> None:
    """R-URI = our Record-Route URI (a strict router upstream): the last Route becomes the R-URI."""
    data = invite(uri=RECORD_ROUTE, to_tag="srv1", extra=f"Route: <{SERVER}>\r\n")
    forwarded = forward_invite(h, data)
    assert forwarded.uri == SERVER
    assert forwarded.get("route") is None


def test_16_4_strict_route_keeps_the_other_routes(h: Harness) -> None:
    data = invite(uri=RECORD_ROUTE, to_tag="srv1", extra=f"Route: <sip:127.0.0.1:5070;lr>, <{SERVER}>\r\n")
    forwarded = forward_invite(h, data)
    assert forwarded.uri == SERVER
    assert [r.uri_text for r in forwarded.routes] == ["sip:127.0.0.1:5070;lr"]


def test_16_4_preloaded_route_does_not_rewrite_request_uri_naming_the_proxy(h: Harness) -> None:
    """A UA with sipha as outbound proxy calling sip:service@proxy (DESIGN §3 rule 1 → rule 4)."""
    forwarded = forward_invite(h, invite(extra=f"Route: <{RECORD_ROUTE}>\r\n"))
    assert forwarded.uri == "sip:service@127.0.0.1:5060"
    assert forwarded.get("route") is None


# ====================================================================== §16.5/§16.6 forwarding


def test_16_6_forwarded_invite_to_the_primary(h: Harness) -> None:
    sent = h.feed(invite())
    # §17.2.1 / §16.2: 100 Trying at once for an INVITE, from the proxy itself.
    assert statuses(sent) == [100]
    forwarded = as_request(only(sent, PRIMARY))
    assert forwarded.method == "INVITE"
    assert forwarded.uri == "sip:service@127.0.0.1:5060"  # §16.6 step 2: R-URI as routed
    top = forwarded.vias[0]
    assert (top.transport, top.host, top.port) == ("UDP", "127.0.0.1", 5060)  # §16.6 step 8
    assert top.branch is not None
    assert top.branch.startswith(MAGIC_COOKIE)
    assert top.rport == ""
    assert forwarded.max_forwards == 69  # step 3
    assert [r.uri_text for r in forwarded.record_routes] == [RECORD_ROUTE]  # step 4
    assert h.core.counters.requests_forwarded == 1
    assert h.core.contexts == 1


def test_16_6_step8_branch_is_unique_per_transaction(h: Harness) -> None:
    first = forward_invite(h)
    second = forward_invite(h, invite(call_id="call-2@alice", branch="z9hG4bK-alice-2"))
    third = forward_invite(h, invite(cseq=2, branch="z9hG4bK-alice-3"))
    branches = {r.top_via.branch for r in (first, second, third)}
    assert len(branches) == 3


def test_18_2_1_ua_via_gets_received_and_rport(h: Harness) -> None:
    """RFC 3581 §4: rport filled with the source port, received added (even if equal)."""
    forwarded = forward_invite(h, invite(via_host="10.9.9.9:5999"))
    ua_via = forwarded.vias[1]
    assert ua_via.host == "10.9.9.9"
    assert ua_via.received == "127.0.0.1"
    assert ua_via.rport == "5061"
    assert ua_via.branch == "z9hG4bK-alice-1"


def test_16_6_every_other_header_and_the_body_carried_byte_for_byte(h: Harness) -> None:
    extra = (
        "X-Odd:   spaced ,  value;p=1\r\n"
        "Subject:no-space\r\n"
        "s:  compact subject\r\n"
        "Allow: INVITE, ACK, CANCEL, BYE\r\n"
        "Supported: timer\r\n"
    )
    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
    data = invite(extra=extra, body=body)
    sent = h.feed(data)
    out = only(sent, PRIMARY).message.to_bytes()
    skipped = ("via:", "max-forwards:", "record-route:")

    def kept(lines: list[str]) -> list[str]:
        return [line for line in lines if not line.lower().startswith(skipped)]

    assert kept(header_lines(out)) == kept(header_lines(data))
    assert body_of(out) == body


@pytest.mark.parametrize(("given", "expected"), [(70, 69), (1, 0), (None, 70)])
def test_16_6_step3_max_forwards(h: Harness, given: int | None, expected: int) -> None:
    forwarded = forward_invite(h, invite(max_forwards=given))
    assert forwarded.max_forwards == expected
    assert len(forwarded.get_all("max-forwards")) == 1


@pytest.mark.parametrize(
    ("method", "to_tag", "record_routed"),
    [
        ("INVITE", "", True),
        ("SUBSCRIBE", "", True),
        ("REFER", "", True),
        ("NOTIFY", "", True),
        ("INVITE", "srv1", False),  # in-dialog (re-INVITE)
        ("SUBSCRIBE", "srv1", False),
        ("REGISTER", "", False),
        ("OPTIONS", "", False),
        ("MESSAGE", "", False),
        ("BYE", "srv1", False),
    ],
)
def test_16_6_step4_record_route(h: Harness, method: str, to_tag: str, record_routed: bool) -> None:
    sent = h.feed(invite(method=method, to_tag=to_tag, body=b""))
    forwarded = as_request(only(sent, PRIMARY))
    assert forwarded.method == method
    expected = [RECORD_ROUTE] if record_routed else []
    assert [r.uri_text for r in forwarded.record_routes] == expected
    # §17.2.1: only the INVITE server transaction sends 100 Trying.
    assert statuses(sent) == ([100] if method == "INVITE" else [])


def test_16_6_existing_record_route_kept_below_ours(h: Harness) -> None:
    forwarded = forward_invite(h, invite(extra="Record-Route: <sip:edge.example.net;lr>\r\n"))
    assert [r.uri_text for r in forwarded.record_routes] == [RECORD_ROUTE, "sip:edge.example.net;lr"]


def test_16_6_step8_via_transport_follows_the_destination(h: Harness) -> None:
    """To a TLS next hop: a Via for TLS (the first configured sent-by when none is for TLS)."""
    data = invite(uri="sips:alice@127.0.0.1:5061")
    sent = h.feed(data, PRIMARY)  # from a member: rule 3
    out = only(sent, Address("TLS", "127.0.0.1", 5061))
    assert as_request(out).top_via.transport == "TLS"


def test_tcp_request_from_member_is_recognised_by_its_via_port(h: Harness) -> None:
    """§2: on TCP a member is recognised by the top Via sent-by port, not the source port."""
    tcp = Address("TCP", "127.0.0.1", 40000)
    data = invite(uri="sip:alice@127.0.0.1:5061", via_host="127.0.0.1:5070")
    h.core.receive(data, tcp, h.now, stream=True)
    sent = h.core.drain()
    assert statuses(sent, tcp) == [100]
    assert as_request(only(sent, ALICE)).uri == "sip:alice@127.0.0.1:5061"


def test_tls_request_from_member_is_recognised_by_its_via_port(h: Harness) -> None:
    """§2 over TLS as over TCP: source IP and top Via sent-by port (the connection's port is ephemeral)."""
    tls = Address("TLS", "127.0.0.1", 40001)
    data = invite(uri="sip:alice@127.0.0.1:5061", via_host="127.0.0.1:5070")
    h.core.receive(data, tls, h.now, stream=True)
    sent = h.core.drain()
    assert statuses(sent, tls) == [100]
    assert as_request(only(sent, ALICE)).uri == "sip:alice@127.0.0.1:5061"


def test_udp_request_naming_a_member_port_in_via_is_not_from_the_member(h: Harness) -> None:
    """§2: on UDP only the source port counts; this endpoint's request goes to the pair."""
    data = invite(uri="sip:alice@127.0.0.1:5061", via_host="127.0.0.1:5070")
    sent = h.feed(data, Address("UDP", "127.0.0.1", 40000))
    assert len(requests(sent, PRIMARY)) == 1


def test_design_3_no_active_member_gets_503_with_retry_after(h: Harness) -> None:
    view_of(h).active["demo"] = None
    sent = h.feed(invite())
    assert statuses(sent) == [100, 503]
    assert responses(sent)[-1].get("retry-after") == "5"
    assert requests(sent) == []


def test_design_3_after_switch_requests_go_to_the_backup(h: Harness) -> None:
    view = view_of(h)
    view.active["demo"] = view.members("demo")[1]
    sent = h.feed(invite(uri=SERVER))
    assert as_request(only(sent, BACKUP)).uri == SERVER


def test_design_3_keepalive_options_answered_locally(h: Harness) -> None:
    sent = h.feed(invite(method="OPTIONS", uri="sip:proxy.example.com", body=b""))
    assert statuses(sent) == [200]
    assert requests(sent) == []
    assert h.core.counters.requests_refused == 0


def test_design_3_route_to_third_party_from_endpoint_gets_403(h: Harness) -> None:
    sent = h.feed(invite(uri="sip:bob@example.com", extra="Route: <sip:evil.example.net;lr>\r\n"))
    assert statuses(sent) == [100, 403]
    assert requests(sent) == []


# ====================================================================== §16.7 responses


def test_16_7_step5_100_from_downstream_not_forwarded(h: Harness) -> None:
    forwarded = forward_invite(h)
    assert h.feed(response_to(forwarded, 100, "Trying"), PRIMARY) == []


def test_16_7_180_forwarded_with_our_via_removed(h: Harness) -> None:
    forwarded = forward_invite(h)
    sent = h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)
    relayed = responses(sent, ALICE)
    assert [r.status for r in relayed] == [180]
    assert [v.branch for v in relayed[0].vias] == ["z9hG4bK-alice-1"]
    assert relayed[0].to.tag == "srv1"
    assert h.core.counters.responses_forwarded == 1


def test_16_7_200_forwarded(h: Harness) -> None:
    forwarded = forward_invite(h)
    ringing(h, forwarded)
    sent = h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    relayed = responses(sent, ALICE)
    assert [r.status for r in relayed] == [200]
    assert len(relayed[0].vias) == 1
    assert [r.uri_text for r in relayed[0].record_routes] == [RECORD_ROUTE]
    assert requests(sent) == []  # the ACK of a 2xx is the UAC's (§13.2.2.4)


def test_16_7_486_forwarded_and_acked_by_the_client_transaction(h: Harness) -> None:
    forwarded = forward_invite(h)
    sent = h.feed(response_to(forwarded, 486, "Busy Here"), PRIMARY)
    assert statuses(sent) == [486]
    ack = only_one(requests(sent, PRIMARY))  # §17.1.1.3: the ACK of a non-2xx, hop by hop
    assert ack.method == "ACK"
    assert ack.top_via.branch == forwarded.top_via.branch
    assert ack.uri == forwarded.uri
    # The UA's ACK for the 486 is absorbed by the server transaction (§17.2.1), not forwarded.
    ua_ack = invite(method="ACK", to_tag="srv1", body=b"")
    assert h.feed(ua_ack) == []


def test_16_7_step6_503_as_only_response_becomes_500(h: Harness) -> None:
    forwarded = forward_invite(h)
    sent = h.feed(response_to(forwarded, 503, "Service Unavailable"), PRIMARY)
    assert statuses(sent) == [500]


def test_16_7_step6_6xx_forwarded(h: Harness) -> None:
    forwarded = forward_invite(h)
    sent = h.feed(response_to(forwarded, 603, "Decline"), PRIMARY)
    assert statuses(sent) == [603]


def _response(status: int) -> Response:
    request = parse_message(invite())
    return make_response(request, status, "x")


@pytest.mark.parametrize(
    ("current", "candidate", "chosen"),
    [
        (None, 486, 486),
        (486, 603, 603),  # "choose from the 6xx class responses if any exist"
        (603, 486, 603),
        (600, 500, 600),
        (486, 302, 302),  # otherwise the lowest response class stored
        (302, 486, 302),
        (500, 404, 404),
        (404, 500, 404),
        (486, 480, 480),
    ],
)
def test_16_7_step6_best_response_selection(current: int | None, candidate: int, chosen: int) -> None:
    best = _better(None if current is None else _response(current), _response(candidate))
    assert best.status == chosen


def test_16_7_class_rank_orders_6xx_first() -> None:
    assert sorted([500, 302, 603, 404, 200], key=_class_rank) == [603, 200, 302, 404, 500]


def test_16_7_second_final_response_after_a_local_answer_is_ignored() -> None:
    """Timer C (made short here) answered 408 locally; a late 486 must not be sent too."""
    h = harness(timer_c=10.0)
    forwarded = forward_invite(h)
    sent = h.advance(10.1)
    assert statuses(sent) == [408]  # §16.8: no provisional, "as if ... 408"
    sent = h.feed(response_to(forwarded, 486, "Busy Here"), PRIMARY)
    assert statuses(sent) == []


def test_16_7_late_2xx_after_a_local_answer_is_passed_on() -> None:
    """§16.7 step 5: any 2xx to an INVITE is passed to the server transaction, even late."""
    h = harness(timer_c=10.0)
    forwarded = forward_invite(h)
    h.advance(10.1)
    h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    # The server transaction, Completed with the 408, discards it (RFC 6026 Figure 7).
    assert h.core.counters.responses_forwarded == 1


def test_16_7_stray_response_not_ours_is_dropped(h: Harness) -> None:
    stray = (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-nobody\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-x\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: stray\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert h.feed(stray, PRIMARY) == []
    assert h.core.counters.stray_responses_dropped == 1


def test_16_7_stray_response_with_only_our_via_is_dropped(h: Harness) -> None:
    stray = (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ours\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: stray\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert h.feed(stray, PRIMARY) == []
    assert h.core.counters.stray_responses_dropped == 1


def test_16_7_stray_2xx_retransmission_forwarded_by_the_next_via(h: Harness) -> None:
    """RFC 6026 §8.3: a retransmitted 2xx (client transaction gone) goes by the Via (received/rport)."""
    forwarded = forward_invite(h, invite(via_host="10.9.9.9:5999"))
    ok = response_to(forwarded, 200, "OK")
    assert statuses(h.feed(ok, PRIMARY)) == [200]
    sent = h.feed(ok, PRIMARY)
    out = only(sent)
    assert out.destination == ALICE  # received=127.0.0.1;rport=5061, not 10.9.9.9:5999
    assert out.key is None
    relayed = as_response(out)
    assert relayed.status == 200
    assert [v.branch for v in relayed.vias] == ["z9hG4bK-alice-1"]


def test_16_7_stray_2xx_without_rport_uses_received_and_sent_by_port(h: Harness) -> None:
    stray = (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-gone\r\n"
        b"Via: SIP/2.0/UDP ua.example.com:5999;branch=z9hG4bK-x;received=192.0.2.1\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: stray\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    out = only(h.feed(stray, PRIMARY))
    assert out.destination == Address("UDP", "192.0.2.1", 5999)


def test_16_7_stray_2xx_to_ipv6_sent_by_without_port(h: Harness) -> None:
    stray = (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-gone\r\n"
        b"Via: SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK-x\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: stray\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    out = only(h.feed(stray, PRIMARY))
    assert out.destination == Address("UDP", "2001:db8::1", 5060)


# ====================================================================== §16.8 timers


def test_16_8_timer_b_no_response_gives_408(h: Harness) -> None:
    forward_invite(h)
    sent = h.advance(TIMER_B - 0.1)
    assert statuses(sent) == []
    assert all(r.method == "INVITE" for r in requests(sent, PRIMARY))  # Timer A retransmissions
    assert len(requests(sent, PRIMARY)) == 6  # at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s
    sent = h.advance(0.2)
    assert statuses(sent) == [408]
    assert [v.branch for v in responses(sent)[0].vias] == ["z9hG4bK-alice-1"]


def test_16_8_timer_c_after_provisional_sends_cancel(h: Harness) -> None:
    forwarded = forward_invite(h)
    ringing(h, forwarded)
    assert h.advance(TIMER_C - 0.1) == []
    sent = h.advance(0.2)
    cancel_request = only_one(requests(sent, PRIMARY))
    assert cancel_request.method == "CANCEL"
    assert cancel_request.top_via.branch == forwarded.top_via.branch
    assert statuses(sent) == []
    # The 487 that answers it goes upstream (§16.7).
    sent = h.feed(response_to(forwarded, 487, "Request Terminated"), PRIMARY)
    assert statuses(sent) == [487]


def test_16_8_timer_c_reset_by_each_provisional(h: Harness) -> None:
    """§16.7 step 2: a provisional response resets Timer C."""
    forwarded = forward_invite(h)
    ringing(h, forwarded)
    h.advance(100.0)
    h.feed(response_to(forwarded, 183, "Session Progress"), PRIMARY)
    assert h.core.next_deadline() == pytest.approx(100.0 + TIMER_C)
    assert h.advance(TIMER_C - 0.1) == []
    assert [r.method for r in requests(h.advance(0.2), PRIMARY)] == ["CANCEL"]


def test_16_8_timer_c_without_provisional_gives_408() -> None:
    h = harness(timer_c=10.0)
    forward_invite(h)
    sent = h.advance(10.1)
    assert statuses(sent) == [408]
    refusal = responses(sent)[0]
    assert refusal.to.tag == "t1"
    assert h.feed(invite(method="ACK", to_tag="t1", body=b"")) == []  # absorbed (§17.2.1)
    # Timer B later finds the response context completed: nothing more upstream.
    assert statuses(h.advance(TIMER_B)) == []
    assert h.core.counters.requests_refused == 1


def test_16_8_timer_c_is_for_invite_only(h: Harness) -> None:
    h.feed(invite(method="OPTIONS", body=b""))
    deadline = h.core.next_deadline()
    assert deadline is not None
    assert deadline < 1.0  # Timer E only


def test_17_1_4_transport_error_without_response_gives_500(h: Harness) -> None:
    """§16.7 step 1 / §17.1.4: a transport error is treated as a 503, and a lone 503 becomes 500."""
    forward_invite(h)
    sent = h.transport_error(PRIMARY)
    assert statuses(sent) == [500]


def test_17_1_4_transport_error_after_a_provisional_is_ignored(h: Harness) -> None:
    forwarded = forward_invite(h)
    h.feed(response_to(forwarded, 100, "Trying"), PRIMARY)
    assert h.transport_error(PRIMARY) == []
    assert h.core.contexts == 1


def test_17_1_4_transport_error_for_another_destination_is_ignored(h: Harness) -> None:
    forward_invite(h)
    assert h.transport_error(BACKUP) == []


def test_17_1_4_the_branches_are_indexed_by_destination_and_the_index_empties(h: Harness) -> None:
    """A transport error looks at the branches to its destination only (a flood's closed ports
    must not make each ICMP error a scan of every branch), and ended branches leave the index."""
    for number in range(3):
        forward_invite(h, invite(call_id=f"call-{number}@alice", branch=f"z9hG4bK-i{number}"))
    assert set(h.core._responses._branches_to) == {PRIMARY}
    assert len(h.core._responses._branches_to[PRIMARY]) == 3
    assert h.transport_error(BACKUP) == []
    sent = h.transport_error(PRIMARY)
    assert statuses(sent) == [500, 500, 500]
    assert h.core._responses._branches_to == {}
    assert h.core._responses._destination_of == {}


def test_17_2_1_timer_h_without_ack_is_harmless(h: Harness) -> None:
    """No ACK for the 486 upstream: the server transaction times out (Timer H), nothing else."""
    forwarded = forward_invite(h)
    h.feed(response_to(forwarded, 486, "Busy Here"), PRIMARY)
    sent = h.advance(100.0)
    assert set(statuses(sent)) == {486}  # Timer G retransmissions only
    assert h.core.contexts == 0
    assert len(h.core.txn) == 0


# ====================================================================== §16.10 CANCEL


def test_16_10_cancel_after_180(h: Harness) -> None:
    forwarded = forward_invite(h)
    ringing(h, forwarded)
    sent = h.feed(cancel())
    # "the proxy MUST respond to the CANCEL with a 200 (OK)" at once, hop by hop.
    ok = responses(sent, ALICE)
    assert [(r.status, r.cseq.method) for r in ok] == [(200, "CANCEL")]
    downstream = only_one(requests(sent, PRIMARY))
    assert downstream.method == "CANCEL"
    assert downstream.uri == forwarded.uri
    assert downstream.top_via.branch == forwarded.top_via.branch
    assert len(downstream.vias) == 1
    assert downstream.call_id == forwarded.call_id
    assert downstream.get("from") == forwarded.get("from")
    assert downstream.get("to") == forwarded.get("to")
    assert (downstream.cseq.seq, downstream.cseq.method) == (forwarded.cseq.seq, "CANCEL")
    # The 200 to our CANCEL is hop by hop: not forwarded.
    assert h.feed(response_to(downstream, 200, "OK"), PRIMARY) == []
    # The 487 is forwarded upstream, and ACKed downstream by the client transaction.
    sent = h.feed(response_to(forwarded, 487, "Request Terminated"), PRIMARY)
    assert statuses(sent) == [487]
    assert [r.method for r in requests(sent, PRIMARY)] == ["ACK"]


def test_16_10_cancel_copies_the_route_set(h: Harness) -> None:
    """§9.1: the CANCEL's Route header fields are those of the request being cancelled."""
    forwarded = forward_invite(h, invite(uri=SERVER, extra="Route: <sip:127.0.0.1:5070;lr>\r\n"))
    ringing(h, forwarded)
    sent = h.feed(cancel(uri=SERVER, extra="Route: <sip:127.0.0.1:5070;lr>\r\n"))
    downstream = only_one(requests(sent, PRIMARY))
    assert [r.uri_text for r in downstream.routes] == ["sip:127.0.0.1:5070;lr"]


def test_16_10_cancel_retransmission_sends_nothing_more_downstream(h: Harness) -> None:
    forwarded = forward_invite(h)
    ringing(h, forwarded)
    h.feed(cancel())
    sent = h.feed(cancel())
    assert [(r.status, r.cseq.method) for r in responses(sent, ALICE)] == [(200, "CANCEL")]
    assert requests(sent, PRIMARY) == []


def test_16_10_cancel_before_any_provisional_is_held(h: Harness) -> None:
    """§9.1: "If no provisional response has been received, the CANCEL request MUST NOT be sent"."""
    forwarded = forward_invite(h)
    sent = h.feed(cancel())
    assert [(r.status, r.cseq.method) for r in responses(sent, ALICE)] == [(200, "CANCEL")]
    assert requests(sent, PRIMARY) == []
    sent = h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)
    assert [r.method for r in requests(sent, PRIMARY)] == ["CANCEL"]
    assert statuses(sent) == [180]


def test_16_10_cancel_before_provisional_released_by_100(h: Harness) -> None:
    forwarded = forward_invite(h)
    h.feed(cancel())
    sent = h.feed(response_to(forwarded, 100, "Trying"), PRIMARY)
    assert [r.method for r in requests(sent, PRIMARY)] == ["CANCEL"]
    assert statuses(sent) == []


def test_16_10_cancel_after_final_response_sends_nothing_downstream(h: Harness) -> None:
    forwarded = forward_invite(h)
    h.feed(response_to(forwarded, 486, "Busy Here"), PRIMARY)
    sent = h.feed(cancel())
    assert [(r.status, r.cseq.method) for r in responses(sent, ALICE)] == [(200, "CANCEL")]
    assert requests(sent, PRIMARY) == []


def test_16_10_cancel_stops_timer_c(h: Harness) -> None:
    forwarded = forward_invite(h)
    ringing(h, forwarded)
    downstream = only_one(requests(h.feed(cancel()), PRIMARY))
    h.feed(response_to(downstream, 200, "OK"), PRIMARY)
    assert requests(h.advance(TIMER_C + 1), PRIMARY) == []


def test_16_10_orphan_cancel_forwarded_with_the_invite_branch(h: Harness) -> None:
    """No response context: forwarded (§16.10), with the branch any instance gives the INVITE."""
    invite_branch = forward_invite(harness()).top_via.branch
    sent = h.feed(cancel())
    downstream = as_request(only(sent, PRIMARY))
    assert downstream.method == "CANCEL"
    assert downstream.top_via.branch == invite_branch
    assert downstream.max_forwards == 69
    assert statuses(sent) == []  # no 100 for a non-INVITE
    # The next hop's 200 to it comes back upstream through this transaction.
    sent = h.feed(response_to(downstream, 200, "OK"), PRIMARY)
    assert [(r.status, r.cseq.method) for r in responses(sent, ALICE)] == [(200, "CANCEL")]


def test_16_10_orphan_cancel_without_a_route_gets_481(h: Harness) -> None:
    view_of(h).active["demo"] = None
    sent = h.feed(cancel())
    assert statuses(sent) == [481]
    assert requests(sent) == []


# ====================================================================== ACK for 2xx


def test_ack_for_2xx_forwarded_statelessly(h: Harness) -> None:
    forwarded = forward_invite(h)
    h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    transactions = len(h.core.txn)
    sent = h.feed(ack_2xx())
    assert len(h.core.txn) == transactions  # an ACK of a 2xx creates no transaction (§17)
    out = only(sent)
    assert out.destination == PRIMARY
    assert out.key is None  # §16.11-like: the ACK of a 2xx has no transaction
    ack = as_request(out)
    assert ack.method == "ACK"
    assert ack.uri == SERVER
    assert ack.get("route") is None  # our Route entry removed (§16.4)
    assert ack.max_forwards == 69
    assert ack.record_routes == []
    branch = ack.top_via.branch
    assert branch is not None
    assert branch.startswith(MAGIC_COOKIE)
    assert branch not in {forwarded.top_via.branch, "z9hG4bK-alice-ack"}
    assert ack.to.tag == "srv1"


def test_ack_with_max_forwards_zero_dropped(h: Harness) -> None:
    assert h.feed(ack_2xx(max_forwards=0)) == []


def test_ack_without_max_forwards_gets_70(h: Harness) -> None:
    ack = as_request(only(h.feed(ack_2xx(max_forwards=None))))
    assert ack.max_forwards == 70


def test_ack_to_third_party_from_endpoint_dropped(h: Harness) -> None:
    assert h.feed(ack_2xx(route="<sip:evil.example.net;lr>")) == []


# ====================================================================== bookkeeping


def _complete_call(h: Harness) -> None:
    forwarded = forward_invite(h)
    ringing(h, forwarded)
    assert statuses(h.feed(response_to(forwarded, 200, "OK"), PRIMARY)) == [200]
    assert len(requests(h.feed(ack_2xx()), PRIMARY)) == 1
    bye = invite(
        method="BYE",
        uri=SERVER,
        branch="z9hG4bK-alice-bye",
        cseq=2,
        to_tag="srv1",
        extra=f"Route: <{RECORD_ROUTE}>\r\n",
        body=b"",
    )
    forwarded_bye = as_request(only(h.feed(bye), PRIMARY))
    assert forwarded_bye.method == "BYE"
    assert statuses(h.feed(response_to(forwarded_bye, 200, "OK"), PRIMARY)) == [200]


def test_no_leak_after_a_complete_call(h: Harness) -> None:
    _complete_call(h)
    h.advance(100.0)
    assert h.core.contexts == 0
    assert len(h.core.txn) == 0
    assert h.core.next_deadline() is None


def test_no_leak_after_a_cancelled_call(h: Harness) -> None:
    forwarded = forward_invite(h)
    ringing(h, forwarded)
    downstream = only_one(requests(h.feed(cancel()), PRIMARY))
    h.feed(response_to(downstream, 200, "OK"), PRIMARY)
    h.feed(response_to(forwarded, 487, "Request Terminated"), PRIMARY)
    h.feed(invite(method="ACK", to_tag="srv1", body=b""))
    h.advance(100.0)
    assert h.core.contexts == 0
    assert len(h.core.txn) == 0


def test_no_leak_after_refusals_and_orphan_cancel(h: Harness) -> None:
    h.feed(invite(uri="mailto:x@y"))
    h.feed(invite(method="OPTIONS", uri="sip:127.0.0.1:5060", branch="z9hG4bK-o", body=b""))
    h.feed(cancel(branch="z9hG4bK-orphan"))
    h.advance(100.0)
    assert h.core.contexts == 0
    assert len(h.core.txn) == 0


def test_no_leak_after_timer_c_cancel_with_answers(h: Harness) -> None:
    forwarded = forward_invite(h)
    ringing(h, forwarded)
    downstream = only_one(requests(h.advance(TIMER_C + 0.1), PRIMARY))
    h.feed(response_to(downstream, 200, "OK"), PRIMARY)
    h.feed(response_to(forwarded, 487, "Request Terminated"), PRIMARY)
    h.advance(100.0)
    assert h.core.contexts == 0
    assert len(h.core.txn) == 0


def test_timer_c_cancel_without_final_response_does_not_leak(h: Harness) -> None:
    forwarded = forward_invite(h)
    ringing(h, forwarded)
    downstream = only_one(requests(h.advance(TIMER_C + 0.1), PRIMARY))
    h.feed(response_to(downstream, 200, "OK"), PRIMARY)  # the CANCEL is answered, not the INVITE
    sent = h.advance(3600.0)
    assert statuses(sent) != []  # the caller gets some final response
    assert h.core.contexts == 0
    assert len(h.core.txn) == 0


def test_default_to_tags_are_unique() -> None:
    """§8.2.6.2: each response the proxy generates gets its own To tag."""
    core = ProxyCore(harness().core.settings, make_view())
    core.receive(invite(uri="mailto:a@b"), ALICE, 0.0)
    core.receive(invite(uri="mailto:a@b", branch="z9hG4bK-alice-2", call_id="c2"), ALICE, 0.0)
    tags = [r.to.tag for r in responses(core.drain()) if r.status == 416]
    assert len(tags) == 2
    assert None not in tags
    assert tags[0] != tags[1]


def test_next_deadline_none_when_idle(h: Harness) -> None:
    assert h.core.next_deadline() is None
    assert h.advance(10.0) == []


def test_counters_count_messages(h: Harness) -> None:
    forwarded = forward_invite(h)
    h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)
    counters = h.core.counters
    assert (counters.requests_in, counters.responses_in) == (1, 1)
    assert (counters.requests_forwarded, counters.responses_forwarded) == (1, 1)


@pytest.mark.parametrize(
    ("sent_by", "branch_tag"),
    [(("127.0.0.1", 5060), ""), (("[2001:db8::1]", 5070), ".w3"), (("proxy.example.com", 5060), ".w1")],
)
def test_16_6_step8_our_via_reads_as_its_text(sent_by: tuple[str, int], branch_tag: str) -> None:
    """The forwarded request's parsed top Via is what its text parses to (INVITE, ACK, BYE)."""
    core = ProxyCore(
        ProxySettings(record_route=RECORD_ROUTE, via={"UDP": sent_by}, branch_tag=branch_tag), make_view()
    )
    core.receive(invite(), ALICE, 0.0)
    core.receive(invite(method="ACK", to_tag="srv1", body=b"", branch="z9hG4bK-1"), ALICE, 0.0)
    core.receive(invite(method="BYE", cseq=2, to_tag="srv1", body=b"", branch="z9hG4bK-2"), ALICE, 0.0)
    forwarded = [out.message for out in core.drain() if out.destination == PRIMARY]
    assert [message.start_line.split()[0] for message in forwarded] == ["INVITE", "ACK", "BYE"]
    for message in forwarded:
        assert isinstance(message, Request)
        text = message.get_all("via")[0]
        assert text.startswith(f"SIP/2.0/UDP {sent_by[0]}:{sent_by[1]};branch=z9hG4bK")
        assert text.endswith(f"{branch_tag};rport")
        expected = _parse_via(text)
        for via in (message.top_via, message.vias[0], parse_via(text)):
            assert (via.protocol, via.transport, via.host, via.port, via.params) == (
                expected.protocol,
                expected.transport,
                expected.host,
                expected.port,
                expected.params,
            )
