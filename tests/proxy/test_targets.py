"""RFC 3263 targets of a next hop named by a host name, and failover across them (§16.6 step 7).

A pair member sends a request to a host name (docs/design.md §3 rule 3): the core
asks for its targets (a :class:`~sipha.proxy.targets.Lookup`), the test answers
as the driver would (:meth:`Harness.locate`), and the request goes to the first
target; a 503, a transport error, Timer B/F or failover-timeout without an answer
moves it to the next target on a new branch (RFC 3263 §4.3).  The fake clock moves
only when the test says so.
"""

from __future__ import annotations

import pytest

from sipha.proxy import targets as targets_module
from sipha.proxy.context import State
from sipha.sip import Request
from sipha.sip.address import Address
from sipha.txn import SendMessage, TimerConfig
from tests.proxy.support import (
    ALICE,
    PRIMARY,
    Harness,
    ack_2xx,
    cancel,
    harness,
    invite,
    requests,
    response_to,
    statuses,
)

T1 = TimerConfig().t1
TIMER_B = 64 * T1
FIRST = Address("UDP", "192.0.2.1", 5060)
SECOND = Address("UDP", "192.0.2.2", 5060)
THIRD = Address("TCP", "192.0.2.3", 5070)
MEMBER_VIA = "127.0.0.1:5070"  # PRIMARY's own sent-by: a request from a pair member
CARRIER = "sip:bob@carrier.example.net"


def from_member(h: Harness, *, method: str = "INVITE", uri: str = CARRIER, **fields: object) -> list[int]:
    """The primary sends a request to ``uri`` through the proxy; the statuses it got at once."""
    data = invite(method=method, uri=uri, via_host=MEMBER_VIA, **fields)  # type: ignore[arg-type]
    return statuses(h.feed(data, PRIMARY), PRIMARY)


def only_request(sent: list[SendMessage], destination: Address) -> Request:
    found = requests(sent, destination)
    assert len(found) == 1, found
    return found[0]


def branch(request: Request) -> str:
    return request.top_via.branch or ""


def context_state(h: Harness) -> State:
    (context,) = h.core._responses.by_server.values()
    return context.state


@pytest.fixture
def h() -> Harness:
    return harness(failover_timeout=100.0)  # out of the way, but where a test sets it


# ====================================================================== the lookup


def test_a_request_to_a_host_name_waits_for_its_targets(h: Harness) -> None:
    assert from_member(h) == [100]  # §17.2.1: the caller's INVITE is answered 100 at once
    (lookup,) = h.core.lookups
    assert (lookup.host, lookup.port, lookup.transport, lookup.secure) == (
        "carrier.example.net",
        None,
        None,
        False,
    )
    assert lookup.supported == frozenset({"UDP", "TCP"})  # the transports we have a Via for
    assert requests(h.sent) == []
    assert context_state(h) is State.LOCATING
    forwarded = only_request(h.locate(FIRST, SECOND), FIRST)  # §16.6 step 7: the first tuple
    assert forwarded.uri == CARRIER  # the Request-URI is left as it is
    assert forwarded.top_via.transport == "UDP"
    assert context_state(h) is State.CALLING


def test_the_uri_port_and_transport_are_handed_to_the_lookup(h: Harness) -> None:
    from_member(h, uri="sips:bob@carrier.example.net:5071;transport=tcp")
    (lookup,) = h.core.lookups
    assert (lookup.host, lookup.port, lookup.transport, lookup.secure) == (
        "carrier.example.net",
        5071,
        "tcp",
        True,
    )


def test_via_follows_the_transport_of_the_target(h: Harness) -> None:
    from_member(h)
    forwarded = only_request(h.locate(THIRD), THIRD)
    assert (forwarded.top_via.transport, forwarded.top_via.port) == ("TCP", 5060)  # §16.6 step 8


def test_a_name_without_targets_gets_408(h: Harness) -> None:
    from_member(h)
    sent = h.locate()
    # §16.6 step 7: an empty set is exhausted: "acts as if ... returned a 408".
    assert statuses(sent, PRIMARY) == [408]
    assert requests(sent) == []
    assert h.core.counters.targets_unresolved == 1
    assert h.core.under_way == 0


def test_a_lookup_that_never_ends_gives_408_after_64_t1(h: Harness) -> None:
    from_member(h)
    (lookup,) = h.core.drain_lookups()[0]
    assert statuses(h.advance(TIMER_B - 0.1), PRIMARY) == []
    assert statuses(h.advance(0.2), PRIMARY) == [408]
    h.core.located(lookup.key, [FIRST], h.now)  # the answer, too late: nothing is sent
    assert h.core.drain() == []


def test_a_cancel_while_locating_is_answered_here(h: Harness) -> None:
    from_member(h)
    sent = h.feed(cancel(uri=CARRIER, via_host=MEMBER_VIA), PRIMARY)
    # §16.10 (no pending client transaction) and §9.2: 200 to the CANCEL, 487 to the INVITE.
    assert sorted(statuses(sent, PRIMARY)) == [200, 487]
    assert requests(h.locate(FIRST)) == []  # the targets arrive after: nothing goes out


# ====================================================================== RFC 3263 §4.3: failover


def test_a_transport_error_moves_the_request_to_the_next_target_on_a_new_branch(h: Harness) -> None:
    from_member(h)
    first = only_request(h.locate(FIRST, SECOND, THIRD), FIRST)
    second = only_request(h.transport_error(FIRST), SECOND)
    # "a new request, which is identical to the previous, but has a different value of the Via
    # branch ID": the same loop hash (§16.6 step 8), another attempt number.
    assert branch(second) != branch(first)
    assert branch(second).rsplit(".", 1)[0] == branch(first).rsplit(".", 1)[0]
    assert second.headers[1:] == first.headers[1:]
    assert h.failed_targets == [FIRST]  # the resolver tries it last for a while
    assert h.core.counters.target_failovers == 1
    assert statuses(h.sent, PRIMARY) == [100]  # nothing upstream: the caller waits
    relayed = h.feed(response_to(second, 200, "OK"), SECOND)
    assert statuses(relayed, PRIMARY) == [200]


def test_a_503_moves_the_request_to_the_next_target_and_is_not_relayed(h: Harness) -> None:
    from_member(h)
    first = only_request(h.locate(FIRST, SECOND), FIRST)
    sent = h.feed(response_to(first, 503, "Service Unavailable"), FIRST)
    assert statuses(sent, PRIMARY) == []
    assert [r.method for r in requests(sent, FIRST)] == ["ACK"]  # §17.1.1.3, by the client transaction
    second = only_request(sent, SECOND)
    assert branch(second) != branch(first)
    assert h.failed_targets == [FIRST]
    # A retransmission of the 503 is absorbed by the first branch's transaction (ACKed again).
    again = h.feed(response_to(first, 503, "Service Unavailable"), FIRST)
    assert statuses(again, PRIMARY) == []
    assert [r.method for r in requests(again)] == ["ACK"]


def test_a_503_after_a_provisional_response_still_moves_the_request(h: Harness) -> None:
    """RFC 3263 §4.3: "failure occurs if the transaction layer reports a 503" (any time before the final)."""
    from_member(h)
    first = only_request(h.locate(FIRST, SECOND), FIRST)
    assert statuses(h.feed(response_to(first, 180, "Ringing"), FIRST), PRIMARY) == [180]
    sent = h.feed(response_to(first, 503, "Service Unavailable"), FIRST)
    assert statuses(sent, PRIMARY) == []
    assert only_request(sent, SECOND).method == "INVITE"


def test_timer_b_moves_an_invite_to_the_next_target(h: Harness) -> None:
    from_member(h)
    only_request(h.locate(FIRST, SECOND), FIRST)
    assert requests(h.advance(TIMER_B - 0.1), SECOND) == []
    second = only_request(h.advance(0.2), SECOND)
    assert second.method == "INVITE"
    assert h.failed_targets == [FIRST]


def test_timer_f_moves_a_non_invite_to_the_next_target(h: Harness) -> None:
    from_member(h, method="MESSAGE")
    only_request(h.locate(FIRST, SECOND), FIRST)
    sent = h.advance(TIMER_B + 0.1)  # Timer F: 64*T1
    assert only_request(sent, SECOND).method == "MESSAGE"
    assert statuses(sent, PRIMARY) == []


def test_no_failover_after_any_response_but_a_503(h: Harness) -> None:
    """RFC 3263 §4.3: a timeout is a failure only "without ever having received any response"."""
    from_member(h, method="MESSAGE")
    first = only_request(h.locate(FIRST, SECOND), FIRST)
    h.feed(response_to(first, 100, "Trying"), FIRST)
    sent = h.advance(TIMER_B + 0.1)  # Timer F fires in Proceeding
    assert requests(sent, SECOND) == []
    assert statuses(sent, PRIMARY) == [408]  # §16.8 / §8.1.3.1: the timeout is a 408
    assert h.failed_targets == []


def test_no_failover_on_a_transport_error_after_a_provisional_response(h: Harness) -> None:
    from_member(h)
    first = only_request(h.locate(FIRST, SECOND), FIRST)
    h.feed(response_to(first, 180, "Ringing"), FIRST)
    assert h.transport_error(FIRST) == []  # §17.1.4: the branch answered: it is alive
    assert context_state(h) is State.PROCEEDING


def test_other_final_responses_are_not_failures(h: Harness) -> None:
    from_member(h)
    first = only_request(h.locate(FIRST, SECOND), FIRST)
    sent = h.feed(response_to(first, 486, "Busy Here"), FIRST)
    assert statuses(sent, PRIMARY) == [486]
    assert requests(sent, SECOND) == []


def test_an_exhausted_list_gets_408(h: Harness) -> None:
    from_member(h)
    first = only_request(h.locate(FIRST, SECOND, THIRD), FIRST)
    second = only_request(h.feed(response_to(first, 503, "Service Unavailable"), FIRST), SECOND)
    third = only_request(h.transport_error(SECOND), THIRD)
    assert len({branch(first), branch(second), branch(third)}) == 3
    sent = h.feed(response_to(third, 503, "Service Unavailable"), THIRD)
    # §16.6 step 7: "If the ordered set is exhausted ... acts as if this element of the target
    # set returned a 408": not the 500 a lone 503 would give (§16.7 step 6).
    assert statuses(sent, PRIMARY) == [408]
    assert statuses(h.sent, PRIMARY) == [100, 408]
    assert h.failed_targets == [FIRST, SECOND, THIRD]
    assert h.core.counters.target_failovers == 2


def test_the_last_target_times_out_with_408(h: Harness) -> None:
    from_member(h)
    only_request(h.locate(FIRST), FIRST)
    assert statuses(h.advance(TIMER_B + 0.1), PRIMARY) == [408]
    assert h.failed_targets == [FIRST]


def test_a_cancel_reaches_the_target_that_rings(h: Harness) -> None:
    from_member(h)
    first = only_request(h.locate(FIRST, SECOND), FIRST)
    second = only_request(h.transport_error(FIRST), SECOND)
    h.feed(response_to(second, 180, "Ringing"), SECOND)
    sent = h.feed(cancel(uri=CARRIER, via_host=MEMBER_VIA), PRIMARY)
    cancelled = only_request(sent, SECOND)  # §9.1: the CANCEL goes where its INVITE went
    assert (cancelled.method, branch(cancelled)) == ("CANCEL", branch(second))
    assert requests(sent, FIRST) == []
    assert branch(first) != branch(second)


# ====================================================================== failover-timeout (docs/design.md §3)


def test_a_silent_target_is_left_after_failover_timeout() -> None:
    h = harness(failover_timeout=1.0)
    from_member(h)
    first = only_request(h.locate(FIRST, SECOND), FIRST)
    assert requests(h.advance(0.9), SECOND) == []
    sent = h.advance(0.2)
    second = only_request(sent, SECOND)
    assert branch(second) != branch(first)
    assert h.failed_targets == [FIRST]
    # The first branch was given up: it stops retransmitting, and its late answer is dropped.
    assert requests(h.advance(10.0), FIRST) == []
    late = h.feed(response_to(first, 200, "OK", to_tag="late"), FIRST)
    assert statuses(late, PRIMARY) == []
    relayed = h.feed(response_to(second, 200, "OK"), SECOND)
    assert statuses(relayed, PRIMARY) == [200]


def test_a_target_that_answers_other_requests_is_not_left_at_failover_timeout() -> None:
    h = harness(failover_timeout=1.0)
    from_member(h)
    first = only_request(h.locate(FIRST, SECOND), FIRST)
    from_member(h, method="MESSAGE", call_id="other@member", branch="z9hG4bK-other")
    other = only_request(h.locate(FIRST), FIRST)
    h.advance(0.5)
    h.feed(response_to(other, 200, "OK"), FIRST)  # FIRST is alive: the INVITE's answer is late
    assert requests(h.advance(1.0), SECOND) == []
    h.advance(1.0)  # silent for a whole failover-timeout since: now it is left
    assert requests(h.sent, SECOND)[0].method == "INVITE"
    assert first.method == "INVITE"


def test_the_last_target_is_not_timed_by_failover_timeout() -> None:
    h = harness(failover_timeout=1.0)
    from_member(h)
    only_request(h.locate(FIRST), FIRST)
    assert statuses(h.advance(5.0), PRIMARY) == []  # Timer B decides, not failover-timeout
    assert h.failed_targets == []


# ====================================================================== the ACK of a 2xx


def test_the_ack_of_a_2xx_to_a_host_name_goes_to_the_first_target(h: Harness) -> None:
    data = ack_2xx(uri="sip:bob@carrier.example.net", route=None).replace(
        b"127.0.0.1:5061", MEMBER_VIA.encode(), 1
    )
    assert h.feed(data, PRIMARY) == []
    (lookup,) = h.core.lookups
    assert lookup.host == "carrier.example.net"
    sent = h.locate(FIRST, SECOND)
    ack = only_request(sent, FIRST)  # §13.2.2.4: forwarded statelessly, never retried
    assert ack.method == "ACK"
    assert requests(sent, SECOND) == []


def test_an_ack_whose_name_gives_no_target_is_dropped(h: Harness) -> None:
    data = ack_2xx(uri="sip:bob@carrier.example.net", route=None).replace(
        b"127.0.0.1:5061", MEMBER_VIA.encode(), 1
    )
    h.feed(data, PRIMARY)
    assert h.locate() == []  # an ACK is never answered (§17.1.1.3)
    assert h.core.counters.targets_unresolved == 1


def test_requests_from_endpoints_never_look_names_up(h: Harness) -> None:
    """docs/design.md §3: only a pair member's requests follow their Request-URI (no open relay)."""
    h.feed(invite(uri=CARRIER))
    assert h.core.lookups == []
    assert [r.method for r in requests(h.sent, PRIMARY)] == ["INVITE"]
    assert statuses(h.sent, ALICE) == [100]


# ====================================================================== bounds


def test_lookups_nobody_answers_are_forgotten(h: Harness) -> None:
    from_member(h)
    (stale,) = h.core.drain_lookups()[0]
    h.advance(TIMER_B + 1.0)  # the caller got its 408 at the lookup limit
    from_member(h, call_id="later@member", branch="z9hG4bK-later")  # a lookup later: the stale one goes
    h.core.located(stale.key, [FIRST], h.now)  # unknown by now: nothing happens
    assert requests(h.core.drain()) == []
    assert len(h.core._responses.targets._pending) == 1


def test_the_table_of_answering_targets_is_bounded(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    if (targets_module.__file__ or "").endswith(".so"):
        pytest.skip("the compiled build inlines the Final bound: checked by the interpreted run")
    monkeypatch.setattr(targets_module, "HEARD_KEPT", 1)
    from_member(h)
    first = only_request(h.locate(FIRST), FIRST)
    from_member(h, call_id="two@member", branch="z9hG4bK-two")
    second = only_request(h.locate(SECOND), SECOND)
    h.feed(response_to(first, 180, "Ringing"), FIRST)
    h.feed(response_to(second, 180, "Ringing"), SECOND)
    assert list(h.core._responses.targets._heard) == [SECOND]


def test_failover_timeout_after_an_answer_changes_nothing(h: Harness) -> None:
    """The timer is disarmed once the branch answers; a late call of it is ignored all the same."""
    from_member(h)
    first = only_request(h.locate(FIRST, SECOND), FIRST)
    h.feed(response_to(first, 180, "Ringing"), FIRST)
    (context,) = h.core._responses.by_server.values()
    h.core._responses.targets.silent(context, h.now)
    assert context.state is State.PROCEEDING
    assert requests(h.core.drain(), SECOND) == []
