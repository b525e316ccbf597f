"""What the core keeps per call once it is set up (docs/design.md §5, memory).

A held call is one INVITE server transaction in RFC 6026's Accepted state (it absorbs
retransmissions of the INVITE until Timer L, 32 s) and the call's entry for draining.
Everything else - the parsed INVITE, its forwarded copy, the 200, the response context,
the client transaction's messages - has no later use and must be gone, whatever still
refers to the transaction (a stale timer-heap entry, a context).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

from sipha.sip import Request, Response
from sipha.txn import State as TxnState
from sipha.txn.machines import ServerInviteTransaction, ServerNonInviteTransaction
from tests.proxy.support import (
    ALICE,
    PRIMARY,
    Harness,
    ack_2xx,
    as_request,
    cancel,
    harness,
    invite,
    only,
    requests,
    response_to,
    statuses,
)

SDP = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
HELD_CALL_BYTES = 3072
"""Bound on what the core allocates and keeps per held call (measured 2,322 B interpreted)."""
ENDED_CALL_BYTES = 5120
"""Bound on what the core keeps per call set up and ended with a BYE: its INVITE server
transaction (Accepted, Timer L: 32 s), its BYE server transaction (Completed, Timer J: 32 s),
which re-sends the 200 for a retransmitted BYE from that 200's bytes, and the BYE's client
transaction (Completed, Timer K: 5 s).  Measured 4,677 B interpreted; 6,935 B while the BYE's
server transaction kept the parsed 200 and each transaction two bound methods of its own."""
REJECTED_INVITE_BYTES = 6144
"""Bound on what the core keeps, for 32 s, per INVITE a member rejected and whose caller never
ACKs: a flood's footprint (measured 5,441 B interpreted; 7,564 B while the server transaction
kept the parsed 403 and each transaction two bound methods of its own; 14,140 B earlier, while
the response context waited for the branch's Timer D)."""


def set_up_call(h: Harness, number: int) -> None:
    """INVITE with SDP, 180, 200, ACK: a call up through the proxy, as SIPp's ``uac`` places it."""
    call_id = f"{number}-4242@127.0.0.1"
    sent = h.feed(invite(call_id=call_id, branch=f"z9hG4bK-{number}-1", body=SDP))
    forwarded = as_request(only(sent, PRIMARY))
    h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)
    h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    h.feed(ack_2xx(branch=f"z9hG4bK-{number}-ack").replace(b"call-1@alice", call_id.encode()))
    h.sent.clear()


def reject_call(h: Harness, number: int) -> Request:
    """INVITE, the member's 403, and no ACK from the caller (a flood's INVITE): the copy sent."""
    sent = h.feed(invite(call_id=f"{number}-flood@127.0.0.1", branch=f"z9hG4bK-{number}-f"))
    forwarded = as_request(only(sent, PRIMARY))
    h.feed(response_to(forwarded, 403, "Forbidden"), PRIMARY)
    h.sent.clear()
    return forwarded


def bye(number: int) -> bytes:
    """The caller's BYE of call ``number`` (set up by :func:`set_up_call`)."""
    return invite(
        method="BYE",
        call_id=f"{number}-4242@127.0.0.1",
        to_tag="srv1",
        branch=f"z9hG4bK-{number}-bye",
        cseq=2,
        body=b"",
    )


def end_call(h: Harness, number: int) -> None:
    """A call set up, then ended by the caller's BYE and the member's 200."""
    set_up_call(h, number)
    forwarded = as_request(only(h.feed(bye(number)), PRIMARY))
    h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    h.sent.clear()


def server_transactions(h: Harness) -> list[ServerInviteTransaction]:
    return [t for t in h.core.txn if isinstance(t, ServerInviteTransaction)]


def test_a_call_set_up_keeps_only_its_server_transaction_and_that_without_messages() -> None:
    h = harness()
    set_up_call(h, 1)
    assert h.core.contexts == 0  # the response context is forgotten with its final response
    (server,) = server_transactions(h)
    assert server.state is TxnState.ACCEPTED
    assert server.request is None
    assert server.last_response is None
    assert server.final_to_tag == "srv1"  # what an RFC 2543 ACK is matched by
    # A retransmitted INVITE is still absorbed (RFC 6026 §7.1): not forwarded again.
    sent = h.feed(invite(call_id="1-4242@127.0.0.1", branch="z9hG4bK-1-1", body=SDP))
    assert requests(sent, PRIMARY) == []


def test_a_late_cancel_of_an_answered_invite_gets_200_and_goes_nowhere() -> None:
    """§16.10: the INVITE is known (its server transaction), so the CANCEL is answered 200;
    its final response was sent, so nothing is left to cancel."""
    h = harness()
    sent = h.feed(invite())
    forwarded = as_request(only(sent, PRIMARY))
    h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    assert h.core.contexts == 0
    sent = h.feed(cancel())
    assert statuses(sent) == [200]
    assert [r.method for r in requests(sent, PRIMARY)] == []


def test_every_transaction_that_terminated_has_let_go_of_its_messages() -> None:
    h = harness()
    sent = h.feed(invite(method="MESSAGE", body=b"hi"))
    forwarded = as_request(only(sent, PRIMARY))
    client = next(t for t in h.core._responses.by_client.values()).client
    assert client is not None
    h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    assert client.state is TxnState.COMPLETED  # Timer K: absorbs retransmissions, sends nothing
    assert client.request is None
    assert client.last_response is None
    h.advance(40.0)
    assert client.terminated
    assert (client.request, client.last_response, client.ack) == (None, None, None)


def test_the_contexts_timer_heap_does_not_keep_forgotten_contexts() -> None:
    """Timer C (180 s) of each answered INVITE stays in the heap as a stale entry: it must not
    keep the context, and the request in it, alive for three minutes."""
    gc.collect()
    before = sum(isinstance(o, Request) for o in gc.get_objects())
    h = harness()
    for number in range(600):
        set_up_call(h, number)
    assert h.core.contexts == 0
    assert len(h.core._responses._deadlines) <= 2 * 64 + 1
    # The 600 INVITEs, their copies and ACKs are gone: what is left is bounded by the heap's
    # slack (the contexts of stale entries not yet swept), not by the calls.
    gc.collect()
    alive = sum(isinstance(o, Request) for o in gc.get_objects()) - before
    assert alive <= 2 * 64 + 20


def bytes_kept_per_call(h: Harness, place: Callable[[Harness, int], object], calls: int = 1500) -> float:
    """What the core allocates and keeps per call ``place`` makes (after a warm-up of 50)."""
    for number in range(50):  # warm-up: caches, interned strings, first-use allocations
        place(h, 10_000 + number)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for number in range(calls):
            place(h, number)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(stat.size_diff for stat in after.compare_to(before, "filename")) / calls


def test_bytes_kept_per_held_call() -> None:
    kept = bytes_kept_per_call(harness(), set_up_call)
    print(f"MEMORY core keeps {kept:.0f} B per held call")
    assert kept <= HELD_CALL_BYTES


def test_the_bye_transaction_keeps_the_bytes_of_its_200_not_the_parsed_response() -> None:
    """§17.2.2: Completed re-sends the final response for each retransmitted request until Timer
    J (32 s); it needs the bytes sent, not the parsed message (some 3 KB a call otherwise)."""
    h = harness()
    set_up_call(h, 1)
    forwarded = as_request(only(h.feed(bye(1)), PRIMARY))
    sent = h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    first = only(sent, ALICE).message.to_bytes()
    (server,) = [t for t in h.core.txn if isinstance(t, ServerNonInviteTransaction)]
    assert server.state is TxnState.COMPLETED
    assert server.last_response is None
    assert server.final_to_tag == "srv1"
    resent = h.feed(bye(1))
    assert requests(resent, PRIMARY) == []
    again = only(resent, ALICE).message
    assert isinstance(again, Response)
    assert again.to_bytes() == first
    assert (again.status, again.cseq.method) == (200, "BYE")


def test_bytes_kept_per_ended_call() -> None:
    kept = bytes_kept_per_call(harness(), end_call)
    print(f"MEMORY core keeps {kept:.0f} B per ended call (for 32 s)")
    assert kept <= ENDED_CALL_BYTES


def test_a_rejected_invite_keeps_no_response_context_while_its_branch_waits_for_timer_d() -> None:
    """§17.1.1.2: the Completed client transaction re-sends its ACK for a retransmitted 403 and
    passes nothing up: the context (request, copy, response) is forgotten at once, not 32 s on."""
    h = harness()
    forwarded = reject_call(h, 1)
    assert h.core.contexts == 0
    assert len(h.core._responses.by_client) == 0
    # The branch still absorbs the member's retransmitted 403 and re-sends its ACK ...
    sent = h.feed(response_to(forwarded, 403, "Forbidden"), PRIMARY)
    assert [r.method for r in requests(sent, PRIMARY)] == ["ACK"]
    assert statuses(sent) == []  # ... passing nothing upstream
    # ... the caller's retransmitted INVITE gets the 403 again from the server transaction ...
    sent = h.feed(invite(call_id="1-flood@127.0.0.1", branch="z9hG4bK-1-f"))
    assert statuses(sent) == [403]
    assert requests(sent, PRIMARY) == []
    # ... and a late CANCEL is answered, cancelling nothing (§16.10).
    sent = h.feed(cancel(call_id="1-flood@127.0.0.1", branch="z9hG4bK-1-f"))
    assert statuses(sent) == [200]
    assert requests(sent, PRIMARY) == []
    h.advance(40.0)
    assert list(h.core.txn) == []


def test_bytes_kept_per_rejected_invite() -> None:
    kept = bytes_kept_per_call(harness(), reject_call)
    print(f"MEMORY core keeps {kept:.0f} B per rejected INVITE")
    assert kept <= REJECTED_INVITE_BYTES
