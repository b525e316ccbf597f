"""Transaction matching: §17.1.3 (client), §17.2.3 (server, RFC 2543 fallback), §9.2 (CANCEL)."""

from __future__ import annotations

from sipha.txn import (
    MAGIC_COOKIE,
    AckReceived,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    TransactionLayer,
    ack_key_2543,
    cancel_target_key,
    client_key,
    client_key_of_request,
    client_key_of_response,
    has_magic_cookie,
    server_key,
)
from tests.txn.support import (
    UDP_PEER,
    UPSTREAM_UDP,
    ack_for,
    cancel_for,
    kinds,
    request,
    response,
    sent,
    state_of,
)


def test_key_shapes() -> None:
    invite = request()
    assert server_key(invite) == ("server", "z9hG4bK-client-1", "client.example.com", "5060", "INVITE")
    assert server_key(request(via_port=None))[3] == ""
    assert client_key_of_request(invite) == ("client", "z9hG4bK-client-1", "INVITE")
    assert client_key_of_response(response(invite, 200)) == client_key("z9hG4bK-client-1", "INVITE")
    assert hash(server_key(invite)) == hash(server_key(invite.copy()))
    assert has_magic_cookie(MAGIC_COOKIE + "x")
    assert not has_magic_cookie("z9hg4bkx")  # the cookie is case-sensitive (§8.1.1.7)
    assert not has_magic_cookie(None)


def test_server_key_uses_branch_sent_by_and_method() -> None:
    base = server_key(request())
    assert server_key(request(branch="z9hG4bK-other")) != base
    assert server_key(request(via_host="elsewhere.example.com")) != base
    assert server_key(request(via_port=5070)) != base
    assert server_key(request(via_host="CLIENT.example.com")) == base  # hosts compare case-insensitively
    # ACK maps to the INVITE; CANCEL is its own transaction with the same branch.
    assert server_key(request("ACK")) == base
    assert server_key(request("CANCEL")) != base
    assert cancel_target_key(request("CANCEL")) == base
    # Other headers do not matter when the branch has the cookie.
    assert server_key(request(call_id="x@y", cseq=9, uri="sip:carol@example.com")) == base


def test_rfc2543_key_fallback() -> None:
    old = request(branch=None)
    key = server_key(old)
    assert key[0] == "server-2543"
    assert server_key(old.copy()) == key
    assert server_key(request(branch="1234")) != key  # a non-cookie branch is part of the top Via
    for changed in (
        request(branch=None, uri="sip:carol@example.com"),
        request(branch=None, to_tag="t"),
        request(branch=None, from_tag="other"),
        request(branch=None, call_id="other@x"),
        request(branch=None, cseq=2),
        request("OPTIONS", branch=None),
        request(branch=None, via_host="elsewhere.example.com"),
    ):
        assert server_key(changed) != key
    assert cancel_target_key(cancel_for(old)) == key
    assert ack_key_2543(old)[0] == "server-2543-ack"
    # The ACK key ignores the To tag (compared separately) and the method.
    assert ack_key_2543(request("ACK", branch=None, to_tag="bob-tag")) == ack_key_2543(old)


def test_server_retransmission_and_cancel_are_told_apart() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = layer.receive_request(invite, UPSTREAM_UDP, 0.0)
    assert isinstance(txn, ServerInviteTransaction)
    layer.drain()
    cancel = cancel_for(invite)
    cancel_txn = layer.receive_request(cancel, UPSTREAM_UDP, 0.1)
    assert isinstance(cancel_txn, ServerNonInviteTransaction)
    assert cancel_txn.key != txn.key
    assert kinds(layer.drain()) == ["RequestReceived"]
    assert layer.find_cancel_target(cancel) is txn
    assert len(layer) == 2
    # A CANCEL retransmission belongs to the CANCEL transaction.
    assert layer.receive_request(cancel.copy(), UPSTREAM_UDP, 0.2) is cancel_txn
    # A CANCEL for an unknown INVITE finds nothing (the TU answers 481, §9.2).
    assert layer.find_cancel_target(cancel_for(request(branch="z9hG4bK-unknown"))) is None
    # Same branch from another sent-by: a different transaction (§17.2.3).
    other = layer.receive_request(request(via_host="other.example.com"), UPSTREAM_UDP, 0.3)
    assert other is not txn
    assert len(layer) == 3


def test_find_cancel_target_ignores_non_invite() -> None:
    layer = TransactionLayer()
    cancel = cancel_for(request())
    layer.receive_request(cancel, UPSTREAM_UDP, 0.0)
    assert layer.find_cancel_target(cancel) is None


def test_client_invite_and_cancel_share_branch_but_not_transaction() -> None:
    layer = TransactionLayer()
    invite = request(branch="z9hG4bK-out-1", via_host="proxy.example.com")
    invite_txn = layer.send_request(invite, UDP_PEER, 0.0)
    layer.receive_response(response(invite, 180), 0.1)
    cancel = cancel_for(invite)
    cancel_txn = layer.send_request(cancel, UDP_PEER, 0.2)
    layer.drain()
    assert cancel_txn is not invite_txn
    # §17.1.3: the CSeq method tells the 200 of the CANCEL from the 487 of the INVITE.
    assert layer.receive_response(response(cancel, 200), 0.3) is cancel_txn
    assert layer.receive_response(response(invite, 487), 0.4) is invite_txn
    assert state_of(invite_txn) is State.COMPLETED
    assert state_of(cancel_txn) is State.COMPLETED
    ack = sent(layer.drain())[0].message
    assert ack.start_line.startswith("ACK ")


def test_client_response_with_other_branch_or_method_is_stray() -> None:
    layer = TransactionLayer()
    invite = request(branch="z9hG4bK-out-1", via_host="proxy.example.com")
    layer.send_request(invite, UDP_PEER, 0.0)
    assert layer.receive_response(response(request(branch="z9hG4bK-out-2"), 200), 0.1) is None
    assert layer.receive_response(response(request("OPTIONS", branch="z9hG4bK-out-1"), 200), 0.1) is None
    assert kinds(layer.drain())[1:] == ["StrayResponse", "StrayResponse"]


def test_rfc2543_invite_retransmission_ack_and_to_tag_check() -> None:
    layer = TransactionLayer()
    invite = request(branch=None)
    txn = layer.receive_request(invite, UPSTREAM_UDP, 0.0)
    assert isinstance(txn, ServerInviteTransaction)
    assert layer.receive_request(invite.copy(), UPSTREAM_UDP, 0.1) is txn
    # An ACK before any final response: nothing to match the To tag against.
    early_ack = request("ACK", branch=None, to_tag="bob-tag")
    assert layer.receive_request(early_ack, UPSTREAM_UDP, 0.15) is None
    busy = response(invite, 486, to_tag="busy-tag")
    layer.respond(txn, busy, 0.2)
    layer.drain()
    # An ACK whose To tag is not the one of the response sent: not this transaction.
    wrong = request("ACK", branch=None, to_tag="other-tag")
    assert layer.receive_request(wrong, UPSTREAM_UDP, 0.3) is None
    assert layer.drain() == [AckReceived(wrong, UPSTREAM_UDP, None)]
    ack = ack_for(invite, busy)
    assert ack.top_via.branch is None
    assert layer.receive_request(ack, UPSTREAM_UDP, 0.4) is txn
    assert state_of(txn) is State.CONFIRMED
    assert layer.drain() == []
    # The CANCEL of an RFC 2543 INVITE finds it too.
    assert layer.find_cancel_target(cancel_for(invite)) is txn
    layer.handle_timers(100.0)
    assert len(layer) == 0
    assert not layer._acks_2543  # the ACK index is cleaned up with the transaction


def test_rfc2543_2xx_ack_after_accepted() -> None:
    layer = TransactionLayer()
    invite = request(branch=None)
    txn = layer.receive_request(invite, UPSTREAM_UDP, 0.0)
    assert isinstance(txn, ServerInviteTransaction)
    ok = response(invite, 200, to_tag="ok-tag")
    layer.respond(txn, ok, 0.1)
    layer.drain()
    ack = ack_for(invite, ok)
    # In Accepted, RFC 6026 passes the matching ACK up to the TU.
    assert layer.receive_request(ack, UPSTREAM_UDP, 0.2) is txn
    assert layer.drain() == [AckReceived(ack, UPSTREAM_UDP, txn)]


def test_rfc2543_ack_before_any_response_matches_nothing() -> None:
    layer = TransactionLayer(auto_trying=False)
    layer.receive_request(request(branch=None), UPSTREAM_UDP, 0.0)
    ack = request("ACK", branch=None)
    assert layer.receive_request(ack, UPSTREAM_UDP, 0.1) is None
    assert layer.drain()[-1] == AckReceived(ack, UPSTREAM_UDP)


def test_stray_ack_with_cookie_matches_nothing() -> None:
    layer = TransactionLayer()
    ack = request("ACK", branch="z9hG4bK-stray", to_tag="x")
    assert layer.receive_request(ack, UPSTREAM_UDP, 0.0) is None
    assert layer.drain() == [AckReceived(ack, UPSTREAM_UDP)]
    # An ACK whose key names a non-INVITE transaction is not absorbed by it either.
    options = request("OPTIONS", branch="z9hG4bK-o")
    layer.receive_request(options, UPSTREAM_UDP, 0.0)
    layer.drain()
    assert layer.receive_request(request("ACK", branch="z9hG4bK-o"), UPSTREAM_UDP, 0.1) is None


def test_rfc2543_ack_index_keeps_the_newer_transaction() -> None:
    layer = TransactionLayer()
    first = layer.receive_request(request(branch=None), UPSTREAM_UDP, 0.0)
    # Same ACK key (URI, From tag, Call-ID, CSeq number, top Via) but another To tag: a new
    # transaction that takes over the ACK index entry.
    second = layer.receive_request(request(branch=None, to_tag="t2"), UPSTREAM_UDP, 0.1)
    assert first is not None
    assert second is not None
    assert first.key != second.key
    assert first.request is not None
    layer.respond(first, response(first.request, 486), 0.2)
    layer.handle_timers(100.0)  # the first ends (Timer H); the second's entry stays
    assert layer.get(first.key) is None
    assert list(layer._acks_2543.values()) == [second]
