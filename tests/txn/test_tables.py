"""Every row of every transition table, driven through the layer, plus the rows that are absent."""

from __future__ import annotations

import pytest

from sipha.sip import Request, Response
from sipha.txn import (
    TABLES,
    AckReceived,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    Input,
    Op,
    Output,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    State,
    Timer,
    Transaction,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    Transition,
    TransportError,
)
from sipha.txn.machines import TableInput
from tests.txn.support import UDP_PEER, UPSTREAM_UDP, ack_for, kinds, request, response

START = 100.0
STEP = 0.01

OP_OUTPUT: dict[Op, type[Output] | None] = {
    Op.SEND_REQUEST: SendMessage,
    Op.SEND_ACK: SendMessage,
    Op.SEND_RESPONSE: SendMessage,
    Op.RESEND_RESPONSE: SendMessage,
    Op.TU_REQUEST: RequestReceived,
    Op.TU_RESPONSE: ResponseReceived,
    Op.TU_ACK: AckReceived,
    Op.TU_TIMEOUT: TransactionTimeout,
    Op.TU_TRANSPORT_ERROR: TransportError,
    Op.REARM_DOUBLE: None,
    Op.REARM_DOUBLE_CAPPED: None,
    Op.REARM_T2: None,
    Op.FORGET_REQUEST: None,
    Op.FORGET_MESSAGES: None,
}
REARMS = {Op.REARM_DOUBLE, Op.REARM_DOUBLE_CAPPED, Op.REARM_T2}
STATUS = {
    Input.RESP_1XX: 180,
    Input.RESP_2XX: 200,
    Input.RESP_3XX_6XX: 486,
    Input.TU_1XX: 180,
    Input.TU_2XX: 200,
    Input.TU_3XX_6XX: 486,
}
# How to bring each machine into each state from its creation (inputs after the entering one).
PATHS: dict[type[Transaction], dict[State, tuple[Input, ...]]] = {
    ClientInviteTransaction: {
        State.CALLING: (),
        State.PROCEEDING: (Input.RESP_1XX,),
        State.COMPLETED: (Input.RESP_3XX_6XX,),
    },
    ClientNonInviteTransaction: {
        State.TRYING: (),
        State.PROCEEDING: (Input.RESP_1XX,),
        State.COMPLETED: (Input.RESP_2XX,),
    },
    ServerInviteTransaction: {
        State.PROCEEDING: (Input.TU_1XX,),
        State.COMPLETED: (Input.TU_3XX_6XX,),
        State.CONFIRMED: (Input.TU_3XX_6XX, Input.ACK),
        State.ACCEPTED: (Input.TU_2XX,),
    },
    ServerNonInviteTransaction: {
        State.TRYING: (),
        State.PROCEEDING: (Input.TU_1XX,),
        State.COMPLETED: (Input.TU_2XX,),
    },
}


class Harness:
    """A layer, one transaction of the requested kind, and a fake clock."""

    def __init__(self, machine: type[Transaction]) -> None:
        self.layer = TransactionLayer(auto_trying=False)
        self.machine = machine
        self.now = START
        self.request = self._request()
        self.txn: Transaction | None = None
        self.final: Response | None = None
        """The final response passed to the server transaction (what an ACK acknowledges)."""

    def _request(self) -> Request:
        method = "INVITE" if machine_is_invite(self.machine) else "OPTIONS"
        if issubclass(self.machine, ServerTransaction):
            return request(method)
        return request(method, branch="z9hG4bK-proxy-1", via_host="proxy.example.com")

    def create(self) -> list[Output]:
        if issubclass(self.machine, ServerTransaction):
            self.txn = self.layer.receive_request(self.request, UPSTREAM_UDP, self.now)
        else:
            self.txn = self.layer.send_request(self.request, UDP_PEER, self.now)
        assert isinstance(self.txn, self.machine)
        return self.layer.drain()

    def feed(self, event: TableInput) -> list[Output]:
        txn = self.txn
        assert txn is not None
        self.now += STEP
        layer = self.layer
        if isinstance(event, Timer):
            deadline = txn.timer_deadline(event)
            assert deadline is not None, f"{event} is not armed in {txn.state}"
            self.now = deadline
            txn.handle(event, self.now)
            layer._settle(txn)
        elif event in (Input.RESP_1XX, Input.RESP_2XX, Input.RESP_3XX_6XX):
            layer.receive_response(response(self.request, STATUS[event]), self.now)
        elif event in (Input.TU_1XX, Input.TU_2XX, Input.TU_3XX_6XX):
            assert isinstance(txn, ServerTransaction)
            sent = response(self.request, STATUS[event])
            if sent.status >= 200:
                self.final = sent
            layer.respond(txn, sent, self.now)
        elif event is Input.REQUEST:
            layer.receive_request(self.request.copy(), UPSTREAM_UDP, self.now)
        elif event is Input.ACK:
            assert self.final is not None  # the transaction may have forgotten it (Confirmed)
            layer.receive_request(ack_for(self.request, self.final), UPSTREAM_UDP, self.now)
        else:
            assert event is Input.TRANSPORT_ERROR
            layer.transport_error(txn.key, self.now)
        return layer.drain()

    def reach(self, state: State) -> None:
        self.create()
        for event in PATHS[self.machine][state]:
            self.feed(event)
        assert self.txn is not None
        assert self.txn.state is state


def machine_is_invite(machine: type[Transaction]) -> bool:
    return machine.is_invite


ROWS = [
    pytest.param(machine, state, event, transition, id=f"{machine.__name__}-{state.value}-{event}")
    for machine, table in TABLES.items()
    for (state, event), transition in table.items()
]


def expected_kinds(transition: Transition) -> list[str]:
    names = [kind.__name__ for op in transition.ops if (kind := OP_OUTPUT[op]) is not None]
    if transition.target is State.TERMINATED:
        names.append(TransactionTerminated.__name__)
    return names


@pytest.mark.parametrize(("machine", "state", "event", "transition"), ROWS)
def test_every_row(
    machine: type[Transaction], state: State, event: TableInput, transition: Transition
) -> None:
    harness = Harness(machine)
    if state is State.INITIAL:
        outputs = harness.create()
        before: set[Timer] = set()
    else:
        harness.reach(state)
        assert harness.txn is not None
        before = set(harness.txn.timers)
        outputs = harness.feed(event)
    txn = harness.txn
    assert txn is not None
    assert txn.state is transition.target
    assert kinds(outputs) == expected_kinds(transition)
    # Timer bookkeeping: the fired timer is disarmed unless re-armed; a state change stops the
    # old state's timers except the kept ones; started timers run (UDP: all of them, non-zero).
    kept = before - {event} if isinstance(event, Timer) else set(before)
    if transition.target is not state:
        kept &= set(transition.keep)
    expected = kept | set(transition.start)
    if REARMS & set(transition.ops):
        assert isinstance(event, Timer)
        expected.add(event)
    if transition.target is State.TERMINATED:
        expected = set()
        assert txn.key not in harness.layer.transactions
    else:
        assert harness.layer.get(txn.key) is txn
    assert set(txn.timers) == expected
    # What a row forgets is gone (memory: docs/design.md §5).
    if Op.FORGET_REQUEST in transition.ops or Op.FORGET_MESSAGES in transition.ops:
        assert txn.request is None
    if Op.FORGET_MESSAGES in transition.ops:
        assert txn.last_response is None


# What each operation reads from the transaction (SEND_ACK: the request only to build the ACK
# the first time, which the entering row of Completed does before forgetting it).
NEEDS_REQUEST = {Op.SEND_REQUEST, Op.TU_REQUEST}
NEEDS_RESPONSE = {Op.RESEND_RESPONSE}


def test_nothing_forgotten_is_needed_later() -> None:
    """From a row that forgets a message, no row reachable afterwards reads it."""
    for table in TABLES.values():
        for transition in table.values():
            forgets_request = {Op.FORGET_REQUEST, Op.FORGET_MESSAGES} & set(transition.ops)
            forgets_response = Op.FORGET_MESSAGES in transition.ops
            if not forgets_request:
                continue
            seen: set[State] = set()
            todo = [transition.target]
            while todo:
                state = todo.pop()
                if state in seen:
                    continue
                seen.add(state)
                for (source, _event), row in table.items():
                    if source is not state:
                        continue
                    assert not NEEDS_REQUEST & set(row.ops), (state, row)
                    if forgets_response:
                        assert not NEEDS_RESPONSE & set(row.ops), (state, row)
                    todo.append(row.target)


def test_rows_cite_the_rfc() -> None:
    for table in TABLES.values():
        for transition in table.values():
            assert transition.rfc.startswith(("§", "RFC ", "Figure ")), transition.rfc
            assert len(transition.rfc) > 20


def test_every_state_in_a_table_is_reachable() -> None:
    for machine, table in TABLES.items():
        states = {state for state, _ in table} - {State.INITIAL}
        assert states == set(PATHS[machine]), machine
        targets = {transition.target for transition in table.values()}
        assert State.TERMINATED in targets
        assert states <= targets


ALL_INPUTS: list[TableInput] = [*Input, *Timer]
ABSENT = [
    pytest.param(machine, state, event, id=f"{machine.__name__}-{state.value}-{event}")
    for machine, table in TABLES.items()
    for state in PATHS[machine]
    for event in ALL_INPUTS
    if (state, event) not in table
]


@pytest.mark.parametrize(("machine", "state", "event"), ABSENT)
def test_inputs_absent_from_a_table_are_ignored(
    machine: type[Transaction], state: State, event: TableInput
) -> None:
    harness = Harness(machine)
    harness.reach(state)
    txn = harness.txn
    assert txn is not None
    timers = txn.timers
    message: Request | Response = (
        harness.request if event in (Input.REQUEST, Input.ACK) else response(harness.request, 200)
    )
    assert txn.handle(event, harness.now + 1, message) is False
    assert txn.state is state
    assert txn.timers == timers
    assert harness.layer.drain() == []


@pytest.mark.parametrize("machine", list(TABLES), ids=lambda machine: machine.__name__)
def test_no_state_of_any_table_has_more_than_two_timers_armed(machine: type[Transaction]) -> None:
    """A transaction keeps its timers in two slots (sipha.txn.machines): every armed set that
    the rows can reach, from Initial, input by input, holds two timers at most."""
    table = TABLES[machine]
    name = machine.__name__
    start: tuple[State, frozenset[Timer]] = (State.INITIAL, frozenset())
    seen = {start}
    frontier = [start]
    while frontier:
        state, armed = frontier.pop()
        for (row_state, event), transition in table.items():
            if row_state is not state or (isinstance(event, Timer) and event not in armed):
                continue  # the layer fires only armed timers
            after = armed - {event} if isinstance(event, Timer) else armed
            if transition.target is not state:
                after = after & frozenset(transition.keep)
            if transition.target is State.TERMINATED:
                after = frozenset()
            after = after | frozenset(transition.start)
            assert len(after) <= 2, (name, state, event, transition.target, sorted(t.name for t in after))
            reached = (transition.target, after)
            if reached not in seen:
                seen.add(reached)
                frontier.append(reached)
    assert len(seen) > 2
