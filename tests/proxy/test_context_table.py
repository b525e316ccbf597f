"""The response context's table (sipha.proxy.context), checked as tests/txn checks the §17 tables.

Every row is driven on a real core: a context is brought into the row's state
through the core's public inputs (messages, the clock), the row's input is fed
to it, and what comes out must be what the row's operations say.  The inputs
absent from a state's rows must change nothing.  The table's shape is checked
too: every row quotes its source, every state is reachable, a final response
goes upstream exactly once, and a CANCEL is never sent before a provisional
response (§9.1).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sipha.proxy.context import TABLE, Input, Op, ResponseContext, State, Transition
from sipha.proxy.core import ProxyCore, ProxySettings
from sipha.sip import Request, Response, make_response, parse_message
from sipha.txn import SendMessage, TimerConfig
from tests.proxy.support import (
    ALICE,
    PRIMARY,
    Harness,
    as_request,
    cancel,
    forward_invite,
    ha_harness,
    harness,
    invite,
    make_view,
    only,
    response_to,
)

T1 = TimerConfig().t1
TIMER_C = 10.0

FINAL_OPS = {Op.SEND_BEST, Op.RESPOND, Op.ANSWER_408, Op.ANSWER_487, Op.ANSWER_503}
"""Operations that send a final response upstream (besides relaying one)."""
FINAL_INPUTS = {Input.RESP_2XX, Input.RESP_3XX_6XX, Input.LATE_2XX, Input.LATE_3XX_6XX}
"""Inputs that carry a final response (a RELAY of them sends a final response upstream)."""
PROVISIONAL_INPUTS = {Input.RESP_100, Input.RESP_1XX}
STATUS = {
    Input.RESP_100: 100,
    Input.RESP_1XX: 180,
    Input.RESP_2XX: 200,
    Input.RESP_3XX_6XX: 486,
    Input.LATE_100: 100,
    Input.LATE_1XX: 180,
    Input.LATE_2XX: 200,
    Input.LATE_3XX_6XX: 486,
    Input.TIMEOUT: 408,
    Input.TRANSPORT_ERROR: 503,
}


# ---------------------------------------------------------------------- bringing a context into a state


def the_context(h: Harness) -> ResponseContext:
    """The one INVITE context of the core."""
    contexts = [c for c in h.core._responses.by_server.values() if c.request.method == "INVITE"]
    assert len(contexts) == 1
    return contexts[0]


def initial() -> Harness:
    """A context the core has not handled yet: its server transaction, no decision."""
    h = harness(timer_c=TIMER_C)
    request = parse_message(invite())
    assert isinstance(request, Request)
    server = h.core.txn.receive_request(request, ALICE, h.now)
    assert server is not None
    h.core.txn.drain()  # the 100 (Trying), and the request the core is not shown
    h.core._responses.by_server[server.key] = ResponseContext(server, request)
    return h


def calling() -> Harness:
    h = harness(timer_c=TIMER_C)
    forward_invite(h)
    return h


def proceeding() -> Harness:
    h = harness(timer_c=TIMER_C)
    h.feed(response_to(forward_invite(h), 180, "Ringing"), PRIMARY)
    return h


def cancel_pending() -> Harness:
    h = calling()
    h.feed(cancel())
    return h


def cancelling() -> Harness:
    h = proceeding()
    h.feed(cancel())
    return h


def expiring() -> Harness:
    h = proceeding()
    h.advance(TIMER_C)
    return h


def locating() -> Harness:
    """A request from a member to a host name, whose RFC 3263 targets are being looked up."""
    h = harness(timer_c=TIMER_C)
    h.feed(invite(uri="sip:bob@carrier.example.net", via_host="127.0.0.1:5070"), PRIMARY)
    return h


def completed() -> Harness:
    """Answered 200.  The branch ends with it and the context is then forgotten at once
    (tests/proxy/test_memory.py): it is put back here to drive its rows by hand."""
    h = harness(timer_c=TIMER_C)
    forwarded = forward_invite(h)
    context = the_context(h)
    h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    assert h.core.contexts == 0
    h.core._responses.by_server[context.server.key] = context
    context.forwarded = forwarded  # forgotten with the context too
    return h


def held() -> Harness:
    """Held with a branch given up on (a transport error from its member): it may still answer."""
    h = ha_harness(primary_active=True, timer_c=TIMER_C)
    assert only(h.feed(invite()), PRIMARY)
    h.transport_error(PRIMARY)
    return h


def suspended() -> Harness:
    h = ha_harness(primary_active=True, timer_c=TIMER_C)
    h.feed(invite())
    h.advance(1.0)  # failover-timeout, the primary silent
    return h


def resumed() -> Harness:
    h = held()
    forwarded = the_context(h).forwarded
    assert forwarded is not None
    h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)  # the branch answers after all
    return h


PATHS: dict[State, Callable[[], Harness]] = {
    State.INITIAL: initial,
    State.HELD: held,
    State.CALLING: calling,
    State.LOCATING: locating,
    State.SUSPENDED: suspended,
    State.PROCEEDING: proceeding,
    State.CANCEL_PENDING: cancel_pending,
    State.CANCELLING: cancelling,
    State.EXPIRING: expiring,
    State.RESUMED: resumed,
    State.COMPLETED: completed,
}


def reach(state: State) -> tuple[Harness, ResponseContext]:
    h = PATHS[state]()
    context = the_context(h)
    assert context.state is state
    assert h.core.txn.drain() == []
    return h, context


def message_for(context: ResponseContext, event: Input) -> Response | None:
    """The response an input comes with (None for the inputs without one)."""
    if event is Input.REFUSED:
        return make_response(context.request, 403, "Forbidden", to_tag="here")
    status = STATUS.get(event)
    if status is None:
        return None
    return make_response(context.forwarded or context.request, status, "Reason", to_tag="srv")


def upstream(outputs: list[object]) -> list[Response]:
    return [o.message for o in outputs if isinstance(o, SendMessage) and isinstance(o.message, Response)]


def requests_of(outputs: list[object], method: str) -> list[Request]:
    return [
        o.message
        for o in outputs
        if isinstance(o, SendMessage) and isinstance(o.message, Request) and o.message.method == method
    ]


# ---------------------------------------------------------------------- every row, driven


ROWS = [
    pytest.param(state, event, row, id=f"{state.value}-{event.name}") for (state, event), row in TABLE.items()
]


@pytest.mark.parametrize(("state", "event", "row"), ROWS)
def test_every_row(state: State, event: Input, row: Transition) -> None:
    h, context = reach(state)
    responses = h.core._responses
    timer_c = context.timer_c
    assert responses.step(context, event, h.now, message_for(context, event))
    outputs: list[object] = list(h.core.txn.drain())
    assert context.state is row.target
    ops = row.ops
    sent = sum(op in FINAL_OPS or op is Op.RELAY for op in ops)
    assert len(upstream(outputs)) == sent, outputs
    assert len(requests_of(outputs, "CANCEL")) == ops.count(Op.SEND_CANCEL)
    assert len(requests_of(outputs, "ACK")) == ops.count(Op.ACK)
    if Op.GIVE_UP_BRANCH in ops or Op.RETIRE_BRANCH in ops:
        assert context.client is None
    if Op.UNHOLD in ops:
        assert context.held_until is None
        assert all(context not in held for held in h.core._held.values())
    if Op.GUARD_CANCEL in ops:
        assert context.timer_c == pytest.approx(h.now + 64 * T1)
    elif Op.STOP_TIMER_C in ops or row.target is State.COMPLETED:
        assert context.timer_c is None
    elif Op.RESTART_TIMER_C in ops:
        assert context.timer_c == pytest.approx(h.now + TIMER_C)
    elif Op.START_TIMER_C in ops:
        assert context.timer_c == (timer_c if timer_c is not None else pytest.approx(h.now + TIMER_C))
    if state is State.CALLING and row.target is not State.CALLING:
        assert context.failover_at is None


ABSENT = [
    pytest.param(state, event, id=f"{state.value}-{event.name}")
    for state in PATHS
    for event in Input
    if (state, event) not in TABLE
]


@pytest.mark.parametrize(("state", "event"), ABSENT)
def test_inputs_absent_from_the_table_are_ignored(state: State, event: Input) -> None:
    h, context = reach(state)
    before = (context.timer_c, context.failover_at, context.held_until, context.client, context.best)
    assert not h.core._responses.step(context, event, h.now, message_for(context, event))
    assert context.state is state
    assert (context.timer_c, context.failover_at, context.held_until, context.client, context.best) == before
    assert h.core.txn.drain() == []


# ---------------------------------------------------------------------- the table's shape


def test_rows_cite_their_source() -> None:
    for row in TABLE.values():
        assert row.source.startswith(("§", "RFC ", "docs/design.md")), row.source
        assert len(row.source) > 40


def test_every_state_is_reachable_from_initial() -> None:
    seen = {State.INITIAL}
    frontier = [State.INITIAL]
    while frontier:
        state = frontier.pop()
        for (source, _), row in TABLE.items():
            if source is state and row.target not in seen:
                seen.add(row.target)
                frontier.append(row.target)
    assert seen == set(State)
    assert {state for state, _ in TABLE} == set(State)  # and none is a dead end


def test_every_input_and_operation_is_used() -> None:
    assert {event for _, event in TABLE} == set(Input)
    assert {op for row in TABLE.values() for op in row.ops} == set(Op)


def test_completed_is_final() -> None:
    """Once a final response went upstream, nothing leaves Completed (§16.7 step 5)."""
    for (state, _), row in TABLE.items():
        if state is State.COMPLETED:
            assert row.target is State.COMPLETED


def test_a_final_response_goes_upstream_exactly_once() -> None:
    """§16.7 step 6: one final response per context; after it only 2xx (§16.7 step 5)."""
    for (state, event), row in TABLE.items():
        finals = sum(op in FINAL_OPS for op in row.ops) + (event in FINAL_INPUTS and Op.RELAY in row.ops)
        if state is State.COMPLETED:
            assert finals == (event is Input.RESP_2XX), (state, event)
        elif row.target is State.COMPLETED:
            assert finals == 1, (state, event)
        else:
            assert finals == 0, (state, event)


def test_a_cancel_is_sent_only_after_a_provisional_response() -> None:
    """§9.1: "If no provisional response has been received, the CANCEL request MUST NOT be sent"."""
    for (state, event), row in TABLE.items():
        if Op.SEND_CANCEL in row.ops:
            assert state is State.PROCEEDING or event in PROVISIONAL_INPUTS, (state, event)
        if Op.GUARD_CANCEL in row.ops:
            assert row.ops.index(Op.GUARD_CANCEL) == row.ops.index(Op.SEND_CANCEL) + 1
            assert row.target in {State.CANCELLING, State.EXPIRING}


def test_the_context_keeps_its_state_in_one_field() -> None:
    """No flag beside the state: the derived property reads it."""
    _, context = reach(State.COMPLETED)
    assert context.final_sent
    _, context = reach(State.CALLING)
    assert not context.final_sent
    assert not hasattr(context, "__dict__")  # slots: nothing can be added on the side


# ---------------------------------------------------------------------- operations in detail


def test_a_provisional_response_to_a_non_invite_starts_no_timer_c() -> None:
    """§16.7 step 2 resets Timer C "for an INVITE transaction" only."""
    h = harness(timer_c=TIMER_C)
    sent = h.feed(invite(method="MESSAGE", body=b""))
    h.feed(response_to(as_request(only(sent, PRIMARY)), 180, "Ringing"), PRIMARY)
    context = next(c for c in h.core._responses.by_server.values() if c.request.method == "MESSAGE")
    assert context.state is State.PROCEEDING
    assert context.timer_c is None


def test_a_response_with_only_our_via_is_not_relayed() -> None:
    """§16.7 step 3: "If no Via header field values remain in the response, the response was
    meant for this element and MUST NOT be forwarded."."""
    h = calling()
    context = the_context(h)
    assert context.forwarded is not None
    ours = make_response(context.forwarded, 180, "Ringing", to_tag="srv")
    ours.remove_header("via")
    ours.add_header("Via", context.forwarded.get_all("via")[0])
    assert h.core._responses.step(context, Input.RESP_1XX, h.now, ours)
    assert upstream(list(h.core.txn.drain())) == []
    assert h.core.counters.stray_responses_dropped == 1


def test_a_request_held_on_arrival_answered_by_timer_c_leaves_its_hold_quietly() -> None:
    """Never forwarded, answered 408 by Timer C: its hold limit sends nothing more."""
    h = ha_harness(timer_c=TIMER_C)  # the pair has no active member yet: held on arrival
    h.feed(invite())
    context = the_context(h)
    assert context.state is State.HELD
    h.advance(TIMER_C)
    assert context.final_sent
    answers = [s for s in h.sent if isinstance(s.message, Response) and s.message.status >= 200]
    h.core.failover.expire(context, h.now)
    assert [s for s in h.sent if isinstance(s.message, Response) and s.message.status >= 200] == answers
    assert h.core.txn.drain() == []
    assert not any(h.core._held.values())


def test_a_record_route_that_is_not_a_sip_uri_is_refused() -> None:
    with pytest.raises(TypeError, match="record-route must be a SIP URI"):
        ProxyCore(ProxySettings(record_route="tel:+15551234", via={"UDP": ("127.0.0.1", 5060)}), make_view())
