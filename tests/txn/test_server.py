"""Server transactions (§17.2): 100 Trying, retransmission absorption, G/H/I/J/L, Accepted."""

from __future__ import annotations

import pytest

from sipha.sip import Response, SipParseError, parse_message
from sipha.sip.message import make_field
from sipha.txn import (
    AckReceived,
    RequestReceived,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    Timer,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
    trying_response,
)
from tests.txn.support import UPSTREAM_TCP, UPSTREAM_UDP, ack_for, kinds, request, response, sent, state_of


def test_new_invite_goes_to_tu_with_immediate_100() -> None:
    layer = TransactionLayer()
    invite = request(extra=("Timestamp: 54.3",))
    txn = layer.receive_request(invite, UPSTREAM_UDP, 0.0)
    assert isinstance(txn, ServerInviteTransaction)
    out = layer.drain()
    assert kinds(out) == ["RequestReceived", "SendMessage"]
    assert out[0] == RequestReceived(txn, invite, UPSTREAM_UDP)
    trying = sent(out)[0]
    assert trying.destination == UPSTREAM_UDP
    assert trying.key == txn.key
    assert trying.message.start_line == "SIP/2.0 100 Trying"
    assert trying.message.get("timestamp") == "54.3"  # §8.2.6.1
    assert trying.message.to.tag is None
    assert state_of(txn) is State.PROCEEDING
    assert txn.timers == {}
    # A retransmission is absorbed: the 100 again, nothing to the TU.
    assert layer.receive_request(invite.copy(), UPSTREAM_UDP, 0.5) is txn
    out = layer.drain()
    assert kinds(out) == ["SendMessage"]
    assert sent(out)[0].message is trying.message


def test_tu_can_send_100_itself() -> None:
    layer = TransactionLayer(auto_trying=False)
    invite = request()
    txn = layer.receive_request(invite, UPSTREAM_UDP, 0.0)
    assert isinstance(txn, ServerInviteTransaction)
    assert kinds(layer.drain()) == ["RequestReceived"]
    # Before any provisional response, a retransmission has nothing to resend.
    layer.receive_request(invite.copy(), UPSTREAM_UDP, 0.1)
    assert layer.drain() == []
    assert layer.send_trying(txn, 0.2) is True
    out = sent(layer.drain())
    assert [m.message.start_line for m in out] == ["SIP/2.0 100 Trying"]
    assert trying_response(invite).get("timestamp") is None


def test_provisional_then_retransmission_resends_latest() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = layer.receive_request(invite, UPSTREAM_UDP, 0.0)
    assert txn is not None
    ringing = response(invite, 180)
    assert layer.respond(txn, ringing, 0.1) is True
    layer.drain()
    layer.receive_request(invite.copy(), UPSTREAM_UDP, 0.2)
    assert [m.message for m in sent(layer.drain())] == [ringing]


def test_invite_non_2xx_timer_g_capped_and_h_failure() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = layer.receive_request(invite, UPSTREAM_UDP, 0.0)
    assert txn is not None
    busy = response(invite, 486)
    layer.respond(txn, busy, 0.0)
    layer.drain()
    assert state_of(txn) is State.COMPLETED
    assert txn.timers == {Timer.G: 0.5, Timer.H: 32.0}
    fired: list[float] = []
    while (deadline := layer.next_deadline()) is not None and deadline < 32.0:
        layer.handle_timers(deadline)
        assert [m.message.to_bytes() for m in sent(layer.drain())] == [busy.to_bytes()]
        fired.append(deadline)
    intervals = [round(b - a, 9) for a, b in zip([0.0, *fired], fired, strict=False)]
    # §17.2.1: T1, then MIN(2*T1, T2), doubling up to T2 = 4 s.
    assert intervals[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert set(intervals[3:]) == {4.0}
    layer.handle_timers(32.0)
    assert layer.drain() == [TransactionTimeout(txn), TransactionTerminated(txn)]


def test_invite_non_2xx_ack_confirms_and_timer_i() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = layer.receive_request(invite, UPSTREAM_UDP, 0.0)
    assert txn is not None
    layer.drain()
    busy = response(invite, 486)
    layer.respond(txn, busy, 0.0)
    layer.receive_request(invite.copy(), UPSTREAM_UDP, 0.2)  # retransmitted INVITE: 486 again
    assert [m.message.to_bytes() for m in sent(layer.drain())] == [
        busy.to_bytes(),
        busy.to_bytes(),
    ]  # the same bytes (a final response is kept as sent)
    ack = ack_for(invite, busy)
    assert layer.receive_request(ack, UPSTREAM_UDP, 0.3) is txn
    assert layer.drain() == []  # the ACK of a non-2xx is absorbed by the transaction
    assert state_of(txn) is State.CONFIRMED
    assert txn.timers == {Timer.I: 5.3}  # T4; G and H stopped
    layer.receive_request(ack_for(invite, busy), UPSTREAM_UDP, 1.0)  # retransmitted ACK
    layer.receive_request(invite.copy(), UPSTREAM_UDP, 1.1)  # a very late INVITE copy
    assert layer.drain() == []
    layer.handle_timers(5.3)
    assert layer.drain() == [TransactionTerminated(txn)]


def test_invite_reliable_has_no_timer_g_and_zero_timer_i() -> None:
    layer = TransactionLayer()
    invite = request(transport="TCP")
    txn = layer.receive_request(invite, UPSTREAM_TCP, 0.0)
    assert txn is not None
    layer.respond(txn, response(invite, 486), 0.0)
    assert txn.timers == {Timer.H: 32.0}
    layer.drain()
    layer.receive_request(ack_for(invite, response(invite, 486)), UPSTREAM_TCP, 0.1)
    assert layer.drain() == [TransactionTerminated(txn)]  # Timer I = 0 on TCP


def test_invite_2xx_accepted_absorbs_retransmissions_until_timer_l() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = layer.receive_request(invite, UPSTREAM_UDP, 0.0)
    assert txn is not None
    layer.drain()
    ok = response(invite, 200)
    layer.respond(txn, ok, 1.0)
    assert [m.message for m in sent(layer.drain())] == [ok]
    assert state_of(txn) is State.ACCEPTED
    assert txn.timers == {Timer.L: 33.0}
    # RFC 6026: the INVITE retransmission is absorbed, neither resent 2xx nor a new request.
    assert layer.receive_request(invite.copy(), UPSTREAM_UDP, 2.0) is txn
    assert layer.drain() == []
    assert len(layer) == 1
    # The TU retransmits the 2xx (or forwards another fork's 2xx) through the transaction.
    assert layer.respond(txn, ok, 3.0) is True
    assert [m.message for m in sent(layer.drain())] == [ok]
    # The ACK of the 2xx has its own branch: it matches nothing and goes to the TU.
    ack = ack_for(invite, ok, branch="z9hG4bK-ack-of-2xx")
    assert layer.receive_request(ack, UPSTREAM_UDP, 4.0) is None
    assert layer.drain() == [AckReceived(ack, UPSTREAM_UDP, None)]
    # A non-2xx after the 2xx is discarded.
    assert layer.respond(txn, response(invite, 486), 5.0) is False
    layer.handle_timers(33.0)
    assert layer.drain() == [TransactionTerminated(txn)]
    assert layer.respond(txn, ok, 34.0) is False  # gone


def test_accepted_ack_with_the_invite_branch_goes_to_tu() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = layer.receive_request(invite, UPSTREAM_UDP, 0.0)
    assert isinstance(txn, ServerInviteTransaction)
    ok = response(invite, 200)
    layer.respond(txn, ok, 0.0)
    layer.drain()
    ack = ack_for(invite, ok)  # a UAC reusing the INVITE's branch
    assert layer.receive_request(ack, UPSTREAM_UDP, 0.1) is txn
    assert layer.drain() == [AckReceived(ack, UPSTREAM_UDP, txn)]


def test_invite_transport_errors_inform_tu_and_keep_state() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = layer.receive_request(invite, UPSTREAM_UDP, 0.0)
    assert txn is not None
    layer.drain()
    assert layer.transport_error(txn.key, 0.1) is True
    assert layer.drain() == [TransportError(txn)]
    assert state_of(txn) is State.PROCEEDING
    layer.respond(txn, response(invite, 486), 0.2)
    layer.drain()
    assert layer.transport_error(txn.key, 0.3) is True
    assert layer.drain() == [TransportError(txn)]
    assert state_of(txn) is State.COMPLETED
    assert Timer.H in txn.timers


def test_non_invite_trying_discards_retransmissions_and_timer_j() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    txn = layer.receive_request(options, UPSTREAM_UDP, 0.0)
    assert isinstance(txn, ServerNonInviteTransaction)
    assert kinds(layer.drain()) == ["RequestReceived"]  # no automatic 100 for non-INVITE
    layer.receive_request(options.copy(), UPSTREAM_UDP, 0.5)
    assert layer.drain() == []  # §17.2.2: discarded in Trying
    ok = response(options, 200)
    assert layer.respond(txn, ok, 1.0) is True
    assert [m.message for m in sent(layer.drain())] == [ok]
    assert txn.timers == {Timer.J: 33.0}
    layer.receive_request(options.copy(), UPSTREAM_UDP, 2.0)
    assert [m.message.to_bytes() for m in sent(layer.drain())] == [ok.to_bytes()]  # the 200's bytes again
    assert layer.respond(txn, response(options, 500), 3.0) is False  # §17.2.2: discarded
    assert layer.drain() == []
    layer.handle_timers(33.0)
    assert layer.drain() == [TransactionTerminated(txn)]
    # After Timer J the same request would be a new transaction again.
    assert layer.receive_request(options.copy(), UPSTREAM_UDP, 34.0) is not txn


def test_non_invite_reliable_timer_j_is_zero() -> None:
    layer = TransactionLayer()
    bye = request("BYE", transport="TCP", to_tag="bob-tag")
    txn = layer.receive_request(bye, UPSTREAM_TCP, 0.0)
    assert txn is not None
    layer.drain()
    layer.respond(txn, response(bye, 200), 0.1)
    assert kinds(layer.drain()) == ["SendMessage", "TransactionTerminated"]
    assert len(layer) == 0


@pytest.mark.parametrize("provisional", [False, True])
def test_non_invite_transport_error_terminates(provisional: bool) -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    txn = layer.receive_request(options, UPSTREAM_UDP, 0.0)
    assert txn is not None
    layer.respond(txn, response(options, 100 if provisional else 200), 0.1)
    layer.drain()
    assert layer.transport_error(txn.key, 0.2) is True
    assert layer.drain() == [TransportError(txn), TransactionTerminated(txn)]


def test_non_invite_transport_error_in_trying_is_ignored() -> None:
    layer = TransactionLayer()
    txn = layer.receive_request(request("OPTIONS"), UPSTREAM_UDP, 0.0)
    assert txn is not None
    layer.drain()
    assert layer.transport_error(txn.key, 0.1) is False
    assert state_of(txn) is State.TRYING


def test_a_final_response_kept_as_bytes_is_resent_as_those_bytes_even_if_they_do_not_parse() -> None:
    """§17.2.2: Completed re-sends the final response; it is kept as the bytes sent.  They are
    parsed back for the message that carries them; bytes that would not parse (a message built
    oddly) still go out as they were, with their status."""
    layer = TransactionLayer()
    options = request("OPTIONS")
    txn = layer.receive_request(options, UPSTREAM_UDP, 0.0)
    assert txn is not None
    layer.drain()
    ok = response(options, 200)
    odd = b"SIP/2.0 200 OK\r\nthis line has no colon\r\n\r\n"
    with pytest.raises(SipParseError):
        parse_message(odd)
    layer.respond(
        txn, Response(200, "OK", [make_field(name, value) for name, value in ok.headers], raw=odd), 1.0
    )
    assert [m.message.to_bytes() for m in sent(layer.drain())] == [odd]
    assert txn.last_response is None
    assert txn.final_bytes == odd
    layer.receive_request(options.copy(), UPSTREAM_UDP, 2.0)
    (again,) = sent(layer.drain())
    assert isinstance(again.message, Response)
    assert (again.message.to_bytes(), again.message.status) == (odd, 200)
    layer.handle_timers(33.0)
    assert txn.terminated
    assert txn.final_bytes is None
