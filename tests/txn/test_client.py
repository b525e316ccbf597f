"""Client transactions (§17.1): retransmission schedules, timeouts, the generated ACK, transports."""

from __future__ import annotations

import itertools

import pytest

from sipha.sip import Request, parse_message
from sipha.sip.address import Address
from sipha.txn import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ResponseReceived,
    State,
    StrayResponse,
    Timer,
    TimerConfig,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
    build_ack,
)
from tests.txn.support import TCP_PEER, UDP_PEER, kinds, request, response, sent, state_of


def proxy_request(method: str = "INVITE", **kwargs: object) -> Request:
    return request(method, branch="z9hG4bK-proxy-1", via_host="proxy.example.com", **kwargs)  # type: ignore[arg-type]


def run_until(layer: TransactionLayer, end: float) -> list[tuple[float, int]]:
    """Fire timers deadline by deadline up to ``end``; (time, messages sent) at each step."""
    steps: list[tuple[float, int]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= end:
        layer.handle_timers(deadline)
        steps.append((deadline, len(sent(layer.drain()))))
    return steps


def test_invite_timer_a_doubles_and_timer_b_times_out() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(proxy_request(), UDP_PEER, 0.0)
    assert isinstance(txn, ClientInviteTransaction)
    assert kinds(layer.drain()) == ["SendMessage"]
    assert txn.timers == {Timer.A: 0.5, Timer.B: 32.0}
    steps = run_until(layer, 31.9)
    # §17.1.1.2: A fires at T1, then 2*T1, 4*T1, ...: retransmissions at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5.
    assert steps == [(0.5, 1), (1.5, 1), (3.5, 1), (7.5, 1), (15.5, 1), (31.5, 1)]
    assert [b - a for (a, _), (b, _) in itertools.pairwise(steps)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert layer.next_deadline() == 32.0  # Timer B wins over A's next firing at 63.5
    layer.handle_timers(32.0)
    out = layer.drain()
    assert kinds(out) == ["TransactionTimeout", "TransactionTerminated"]
    assert out[0] == TransactionTimeout(txn)
    assert state_of(txn) is State.TERMINATED
    assert len(layer) == 0
    assert layer.next_deadline() is None


def test_invite_provisional_stops_retransmissions_and_timeout() -> None:
    layer = TransactionLayer()
    req = proxy_request()
    txn = layer.send_request(req, UDP_PEER, 0.0)
    layer.handle_timers(0.5)
    layer.drain()
    assert layer.receive_response(response(req, 180), 0.7) is txn
    assert kinds(layer.drain()) == ["ResponseReceived"]
    assert state_of(txn) is State.PROCEEDING
    assert txn.timers == {}
    assert layer.next_deadline() is None  # no Timer B in Proceeding: Timer C is the proxy core's
    layer.handle_timers(1000.0)
    assert layer.drain() == []
    assert state_of(txn) is State.PROCEEDING


@pytest.mark.parametrize("first_180", [False, True])
def test_invite_2xx_goes_to_tu_and_terminates(first_180: bool) -> None:
    layer = TransactionLayer()
    req = proxy_request()
    txn = layer.send_request(req, UDP_PEER, 0.0)
    layer.drain()
    if first_180:
        layer.receive_response(response(req, 180), 0.1)
        layer.drain()
    ok = response(req, 200)
    layer.receive_response(ok, 0.2)
    out = layer.drain()
    assert out == [ResponseReceived(txn, ok), TransactionTerminated(txn)]
    assert not sent(out)  # the ACK of a 2xx is the TU's (§17.1.1.2: "MUST NOT generate an ACK")
    # 2xx retransmissions, and other forks' 2xx, now reach the TU as stray responses.
    again = response(req, 200)
    assert layer.receive_response(again, 0.3) is None
    assert layer.drain() == [StrayResponse(again)]


def test_invite_non_2xx_generates_ack_and_timer_d() -> None:
    layer = TransactionLayer()
    req = proxy_request(routes=("<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"))
    txn = layer.send_request(req, UDP_PEER, 0.0)
    layer.drain()
    busy = response(req, 486)
    layer.receive_response(busy, 1.0)
    out = layer.drain()
    assert kinds(out) == ["ResponseReceived", "SendMessage"]
    ack_action = sent(out)[0]
    assert ack_action.destination == UDP_PEER  # §17.1.1.3: same address, port and transport
    assert ack_action.key == txn.key
    assert state_of(txn) is State.COMPLETED
    assert txn.timers == {Timer.D: 33.0}
    # A retransmitted final response: the same ACK again, nothing to the TU.
    layer.receive_response(response(req, 486), 2.0)
    out = layer.drain()
    assert kinds(out) == ["SendMessage"]
    assert sent(out)[0].message is ack_action.message
    layer.handle_timers(32.9)
    assert layer.drain() == []
    layer.handle_timers(33.0)
    assert layer.drain() == [TransactionTerminated(txn)]


def test_generated_ack_headers() -> None:
    req = proxy_request(
        uri="sip:bob@192.0.2.10:5070;transport=udp",
        routes=("<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>, <sip:p3.example.net;lr>"),
        cseq=4711,
    )
    busy = response(req, 486, to_tag="busy-tag")
    ack = build_ack(req, busy)
    assert ack.method == "ACK"
    assert ack.uri == req.uri  # same Request-URI
    assert ack.call_id == req.call_id
    assert ack.get("from") == req.get("from")
    assert ack.to.tag == "busy-tag"  # To of the response, with its tag
    assert ack.get("to") == busy.get("to")
    assert (ack.cseq.seq, ack.cseq.method) == (4711, "ACK")
    # A single Via, equal to the top Via of the original request.
    assert ack.get_all("via") == ["SIP/2.0/UDP proxy.example.com:5060;branch=z9hG4bK-proxy-1"]
    assert ack.get_elements("route") == [
        "<sip:p1.example.net;lr>",
        "<sip:p2.example.net;lr>",
        "<sip:p3.example.net;lr>",
    ]
    assert ack.max_forwards == 70
    assert ack.get("contact") is None
    # It is a well-formed request on the wire.
    reparsed = parse_message(ack.to_bytes())
    assert isinstance(reparsed, Request)
    reparsed.validate()
    assert reparsed.get("content-length") == "0"


def test_generated_ack_without_route() -> None:
    req = proxy_request()
    ack = build_ack(req, response(req, 603))
    assert ack.get("route") is None
    assert len(ack.vias) == 1


def test_non_invite_timer_e_doubles_capped_at_t2_then_f() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(proxy_request("OPTIONS"), UDP_PEER, 0.0)
    assert isinstance(txn, ClientNonInviteTransaction)
    layer.drain()
    assert txn.timers == {Timer.E: 0.5, Timer.F: 32.0}
    steps = run_until(layer, 31.9)
    times = [t for t, _ in steps]
    intervals = [round(b - a, 9) for a, b in zip([0.0, *times], times, strict=False)]
    # §17.1.2.2: T1, MIN(2*T1, T2), MIN(4*T1, T2), ... = 0.5, 1, 2, 4, 4, 4 ...
    assert intervals[:6] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert set(intervals[3:]) == {4.0}
    assert all(count == 1 for _, count in steps)
    layer.handle_timers(32.0)
    assert kinds(layer.drain()) == ["TransactionTimeout", "TransactionTerminated"]


def test_non_invite_timer_e_is_t2_in_proceeding() -> None:
    layer = TransactionLayer()
    req = proxy_request("REGISTER")
    txn = layer.send_request(req, UDP_PEER, 0.0)
    layer.handle_timers(0.5)  # first retransmission; E re-armed with 1 s
    layer.receive_response(response(req, 100), 0.6)
    layer.drain()
    assert state_of(txn) is State.PROCEEDING
    assert txn.timers == {Timer.E: 1.5, Timer.F: 32.0}  # kept from Trying
    layer.handle_timers(1.5)
    assert len(sent(layer.drain())) == 1
    assert txn.timers[Timer.E] == 5.5  # reset with T2
    layer.handle_timers(5.5)
    assert len(sent(layer.drain())) == 1
    assert txn.timers[Timer.E] == 9.5
    layer.receive_response(response(req, 200), 6.0)
    out = layer.drain()
    assert kinds(out) == ["ResponseReceived"]
    assert state_of(txn) is State.COMPLETED
    assert txn.timers == {Timer.K: 11.0}  # T4
    layer.receive_response(response(req, 200), 7.0)  # absorbed
    assert layer.drain() == []
    layer.handle_timers(11.0)
    assert layer.drain() == [TransactionTerminated(txn)]


def test_non_invite_timeout_in_proceeding() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.1, t2=0.4, t4=1.0))
    req = proxy_request("BYE")
    txn = layer.send_request(req, UDP_PEER, 0.0)
    layer.receive_response(response(req, 100), 0.05)
    layer.drain()
    while (deadline := layer.next_deadline()) is not None and deadline < 6.4:
        layer.handle_timers(deadline)
    assert state_of(txn) is State.PROCEEDING
    layer.handle_timers(6.4)  # Timer F = 64*T1
    assert kinds(layer.drain())[-2:] == ["TransactionTimeout", "TransactionTerminated"]
    assert state_of(txn) is State.TERMINATED
    assert len(layer) == 0


def test_reliable_transport_has_no_retransmissions_and_zero_d_k() -> None:
    layer = TransactionLayer()
    invite = proxy_request(transport="TCP")
    txn = layer.send_request(invite, TCP_PEER, 0.0)
    assert txn.reliable
    assert txn.timers == {Timer.B: 32.0}  # no Timer A on TCP
    assert kinds(layer.drain()) == ["SendMessage"]
    layer.receive_response(response(invite, 486), 1.0)
    # Timer D is zero on reliable transports: Completed and Terminated at once, ACK sent.
    assert kinds(layer.drain()) == ["ResponseReceived", "SendMessage", "TransactionTerminated"]
    assert state_of(txn) is State.TERMINATED

    options = proxy_request("OPTIONS", transport="TCP")
    txn2 = layer.send_request(options, TCP_PEER, 2.0)
    assert txn2.timers == {Timer.F: 34.0}  # no Timer E on TCP
    layer.receive_response(response(options, 200), 3.0)
    assert kinds(layer.drain()) == ["SendMessage", "ResponseReceived", "TransactionTerminated"]
    assert len(layer) == 0
    assert layer.next_deadline() is None


def test_reliable_flag_can_override_the_transport() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(proxy_request(), Address("ws", "192.0.2.1", 80), 0.0)
    assert txn.reliable
    txn2 = layer.send_request(proxy_request("OPTIONS"), UDP_PEER, 0.0, reliable=True)
    assert txn2.reliable
    assert Timer.E not in txn2.timers


@pytest.mark.parametrize("state_path", [(), (180,), (486,)])
def test_invite_transport_error_terminates(state_path: tuple[int, ...]) -> None:
    layer = TransactionLayer()
    req = proxy_request()
    txn = layer.send_request(req, UDP_PEER, 0.0)
    for status in state_path:
        layer.receive_response(response(req, status), 0.1)
    layer.drain()
    assert layer.transport_error(txn.key, 0.2) is True
    assert layer.drain() == [TransportError(txn), TransactionTerminated(txn)]
    assert layer.transport_error(txn.key, 0.3) is False  # gone


def test_non_invite_transport_error_in_completed_is_ignored() -> None:
    layer = TransactionLayer()
    req = proxy_request("OPTIONS")
    txn = layer.send_request(req, UDP_PEER, 0.0)
    layer.receive_response(response(req, 200), 0.1)
    layer.drain()
    assert layer.transport_error(txn.key, 0.2) is False
    assert state_of(txn) is State.COMPLETED
    assert layer.drain() == []


def test_send_request_rejects_ack_bad_branch_and_duplicates() -> None:
    layer = TransactionLayer()
    with pytest.raises(ValueError, match="ACK"):
        layer.send_request(proxy_request("ACK"), UDP_PEER, 0.0)
    with pytest.raises(ValueError, match="z9hG4bK"):
        layer.send_request(request("INVITE", branch="old-style"), UDP_PEER, 0.0)
    with pytest.raises(ValueError, match="z9hG4bK"):
        layer.send_request(request("INVITE", branch=None), UDP_PEER, 0.0)
    layer.send_request(proxy_request(), UDP_PEER, 0.0)
    with pytest.raises(ValueError, match="already exists"):
        layer.send_request(proxy_request(), UDP_PEER, 0.0)


def test_response_without_branch_is_stray() -> None:
    layer = TransactionLayer()
    layer.send_request(proxy_request(), UDP_PEER, 0.0)
    layer.drain()
    odd = response(request("INVITE", branch=None), 200)
    assert layer.receive_response(odd, 0.1) is None
    assert layer.drain() == [StrayResponse(odd)]
