"""The dispatcher between the transports and the core: one flush per batch of datagrams."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sipha.dispatch import TIMER_GRID, Dispatcher
from sipha.ha import HaEvent
from sipha.proxy.core import ProxyCore
from sipha.proxy.settings import ProxySettings
from sipha.sip import Request, parse_message
from sipha.sip.address import Address
from tests.proxy.support import (
    ALICE,
    PRIMARY,
    PROXY,
    RECORD_ROUTE,
    demo_monitor,
    harness,
    invite,
    make_view,
    response_to,
)

ALICE_TCP = Address("TCP", "127.0.0.1", 40000)


@dataclass
class SentLog:
    """What the dispatcher gave the transports, in order (the sockets' side of the glue)."""

    sent: list[tuple[bytes, Address]] = field(default_factory=list)
    connections: set[Address] = field(default_factory=set)
    aliases: list[tuple[Address, str, int]] = field(default_factory=list)
    probes: list[tuple[bytes, Address]] = field(default_factory=list)

    def send(self, data: bytes, destination: Address) -> None:
        self.sent.append((data, destination))

    def send_probe(self, data: bytes, destination: Address) -> None:
        self.probes.append((data, destination))

    def has_connection(self, destination: Address) -> bool:
        return destination in self.connections

    def alias(self, connection: Address, host: str, port: int) -> bool:
        self.aliases.append((connection, host, port))
        return True


@dataclass
class Wiring:
    dispatch: Dispatcher
    transports: SentLog
    armed: list[float]
    finals: list[tuple[str, int]]
    events: list[HaEvent]
    now: list[float]


def wiring() -> Wiring:
    h = harness()
    armed: list[float] = []
    finals: list[tuple[str, int]] = []
    events: list[HaEvent] = []
    now = [10.0]
    dispatch = Dispatcher(on_event=events.append, count_final=lambda m, s: finals.append((m, s)))
    transports = SentLog()
    dispatch.core = h.core
    dispatch.transports = transports
    dispatch.clock = lambda: now[0]
    dispatch.arm_timer = armed.append
    return Wiring(dispatch, transports, armed, finals, events, now)


def test_a_batch_of_datagrams_is_sent_once_the_batch_is_read_in_order() -> None:
    w = wiring()
    w.dispatch.on_message(invite(call_id="one"), ALICE, PROXY)
    w.dispatch.on_message(invite(call_id="two", branch="z9hG4bK-alice-2"), ALICE, PROXY)
    assert w.transports.sent == []  # nothing leaves before the batch ends
    w.dispatch.on_batch_end()
    sent = [(data.split(b"\r\n", 1)[0], destination) for data, destination in w.transports.sent]
    # Each INVITE: 100 Trying upstream, then the INVITE to the active member, in arrival order.
    assert [destination for _, destination in sent] == [ALICE, PRIMARY, ALICE, PRIMARY]
    assert b"Call-ID: one" in w.transports.sent[1][0]
    assert b"Call-ID: two" in w.transports.sent[3][0]
    # One timer, at the core's next deadline (Timer A, failover-timeout, ...), on the grid.
    deadline = w.dispatch.core.next_deadline()  # type: ignore[union-attr]
    assert deadline is not None
    assert len(w.armed) == 1
    assert deadline <= w.armed[0] < deadline + TIMER_GRID
    w.dispatch.on_batch_end()  # nothing new: nothing sent, no timer re-armed
    assert len(w.transports.sent) == 4
    assert len(w.armed) == 1


def test_a_stream_message_is_sent_at_once() -> None:
    w = wiring()
    w.transports.connections.add(ALICE_TCP)
    w.dispatch.on_message(invite(via_host="127.0.0.1:40000").replace(b"UDP", b"TCP"), ALICE_TCP, PROXY)
    assert [destination for _, destination in w.transports.sent] == [ALICE_TCP, PRIMARY]


def test_an_alias_request_over_tls_is_passed_to_the_transport() -> None:
    """RFC 5923 §5: a TLS request whose top Via has ``alias`` asks to reuse its connection;
    the core passes (connection, sent-by) on, the transport decides (certificate check)."""
    w = wiring()
    alice_tls = Address("TLS", "127.0.0.1", 40002)
    w.transports.connections.add(alice_tls)
    data = invite(via_host="127.0.0.1:5061").replace(
        b"SIP/2.0/UDP 127.0.0.1:5061;", b"SIP/2.0/TLS 127.0.0.1:5061;alias;"
    )
    assert b";alias;" in data
    w.dispatch.on_message(data, alice_tls, PROXY)
    assert w.transports.aliases == [(alice_tls, "127.0.0.1", 5061)]


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_alias_is_only_for_tls(transport: str) -> None:
    """RFC 5923 reuse is predicated on both ends authenticating with TLS certificates."""
    w = wiring()
    source = Address(transport, "127.0.0.1", 40003)
    w.transports.connections.add(source)
    data = invite(via_host="127.0.0.1:5061").replace(b"127.0.0.1:5061;", b"127.0.0.1:5061;alias;")
    w.dispatch.on_message(data, source, PROXY)
    w.dispatch.on_batch_end()
    assert w.transports.aliases == []


def test_the_timer_is_re_armed_only_for_an_earlier_deadline() -> None:
    w = wiring()
    w.dispatch.on_message(invite(call_id="one"), ALICE, PROXY)
    w.dispatch.on_batch_end()
    first = w.armed[-1]
    w.now[0] += 0.1
    w.dispatch.on_message(invite(call_id="two", branch="z9hG4bK-alice-2"), ALICE, PROXY)
    w.dispatch.on_batch_end()
    assert w.armed == [first]  # the armed timer fires first; it re-arms for what is left
    w.dispatch.timer_at = None  # it fired
    w.dispatch.flush()
    assert len(w.armed) == 2  # armed again for what is left


def test_timers_due_close_together_share_one_wakeup() -> None:
    w = wiring()
    w.now[0] = 10.001
    w.dispatch.on_message(invite(call_id="one"), ALICE, PROXY)
    w.dispatch.on_batch_end()
    w.now[0] = 10.004  # a second INVITE 3 ms later: its Timer A falls due 3 ms later
    w.dispatch.on_message(invite(call_id="two", branch="z9hG4bK-alice-2"), ALICE, PROXY)
    w.dispatch.on_batch_end()
    assert len(w.armed) == 1  # one wakeup, on the grid point after both Timer A deadlines
    fire_at = w.armed[0]
    assert 10.504 <= fire_at < 10.501 + TIMER_GRID  # T1 after each INVITE
    sent = len(w.transports.sent)
    w.now[0] = fire_at
    w.dispatch.timer_at = None
    w.dispatch.core.handle_timers(fire_at)  # type: ignore[union-attr]
    w.dispatch.flush()
    retransmitted = w.transports.sent[sent:]
    assert [destination for _, destination in retransmitted] == [PRIMARY, PRIMARY]  # both INVITEs


def test_final_responses_sent_upstream_are_counted() -> None:
    w = wiring()
    w.dispatch.on_message(invite(), ALICE, PROXY)
    w.dispatch.on_batch_end()
    forwarded = harness_request(w.transports.sent[1][0])
    w.dispatch.on_message(response_to(forwarded, 486, "Busy Here"), PRIMARY, PROXY)
    w.dispatch.on_batch_end()
    assert w.finals == [("INVITE", 486)]


def test_nothing_happens_before_the_core_exists() -> None:
    dispatch = Dispatcher(on_event=lambda _: None, count_final=lambda _m, _s: None)
    dispatch.on_message(invite(), ALICE, PROXY)
    dispatch.on_batch_end()
    dispatch.flush()


def harness_request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def ha_wiring(*, probe_socket: bool) -> Wiring:
    """A dispatcher over a core with the demo pair's monitor, not started yet."""
    view = make_view()
    core = ProxyCore(
        ProxySettings(record_route=RECORD_ROUTE, via={"UDP": ("127.0.0.1", 5060)}),
        view,
        monitor=demo_monitor(view, oos_check=5.0, oos_force=5.0, takeover=5.0),
    )
    w = wiring()
    w.dispatch.core = core
    if probe_socket:
        core.use_probe_port("UDP", 40999)
        w.dispatch.probe_socket = True
    core.start(w.now[0])
    w.dispatch.flush()
    return w


def test_probes_leave_from_the_monitors_socket_naming_it_in_via() -> None:
    """docs/design.md §2: the OPTIONS answers come back to a socket call traffic cannot fill."""
    w = ha_wiring(probe_socket=True)
    assert w.transports.sent == []
    [(data, destination)] = w.transports.probes
    assert destination == PRIMARY
    assert data.startswith(b"OPTIONS ")
    assert b"Via: SIP/2.0/UDP 127.0.0.1:40999;" in data
    # Its retransmission (Timer E, RFC 3261 §17.1.2.2) leaves from there too.
    w.now[0] += 0.5
    w.dispatch.on_timer()
    assert len(w.transports.probes) == 2
    assert w.transports.probes[1][0] == data
    assert w.transports.sent == []


def test_without_a_probe_socket_probes_name_the_listen_port() -> None:
    w = ha_wiring(probe_socket=False)
    assert w.transports.probes == []
    [(data, destination)] = w.transports.sent
    assert destination == PRIMARY
    assert b"Via: SIP/2.0/UDP 127.0.0.1:5060;" in data


def test_requests_and_responses_of_calls_never_use_the_probe_socket() -> None:
    w = ha_wiring(probe_socket=True)
    core = w.dispatch.core
    assert core is not None
    core.receive(response_to(harness_request(w.transports.probes[0][0]), 200, "OK"), PRIMARY, w.now[0])
    w.dispatch.on_message(invite(), ALICE, PROXY)
    w.dispatch.on_batch_end()
    assert [destination for _, destination in w.transports.sent] == [ALICE, PRIMARY]
    assert len(w.transports.probes) == 1


def test_new_calls_are_shed_while_any_socket_is_behind() -> None:
    """docs/design.md §5: a filling receive queue sheds new INVITEs until every socket caught up."""
    w = wiring()
    core = w.dispatch.core
    assert core is not None
    first, second = object(), object()
    w.dispatch.on_backlog(first, 1)
    w.dispatch.on_backlog(second, 1)
    assert core.overloaded
    assert not w.dispatch.dropping
    w.dispatch.on_backlog(first, 0)
    assert core.overloaded  # the other one is still behind
    w.dispatch.on_message(invite(), ALICE, PROXY)
    w.dispatch.on_batch_end()
    [(data, destination)] = w.transports.sent  # no transaction, no 100 Trying
    assert destination == ALICE
    assert data.startswith(b"SIP/2.0 503 ")
    assert b"Retry-After: 1\r\n" in data
    assert core.counters.overload_sheds == 1
    w.dispatch.on_backlog(second, 0)
    assert getattr(core, "overloaded") is False  # noqa: B009 - mypy narrowed it to True above
    w.dispatch.on_message(invite(call_id="two", branch="z9hG4bK-alice-2"), ALICE, PROXY)
    w.dispatch.on_batch_end()
    assert [destination for _, destination in w.transports.sent[1:]] == [ALICE, PRIMARY]


def test_far_behind_new_invites_from_endpoints_are_dropped_unparsed() -> None:
    """Level 2: a new INVITE costs nothing more than a look at its bytes; the rest flows."""
    w = wiring()
    core = w.dispatch.core
    assert core is not None
    w.dispatch.on_backlog(object(), 2)
    assert w.dispatch.dropping
    w.dispatch.on_message(invite(), ALICE, PROXY)
    w.dispatch.on_batch_end()
    assert w.transports.sent == []
    assert (core.counters.overload_drops, core.counters.requests_in) == (1, 0)
    # In a dialog (To tag): parsed and forwarded.  From a pair member: forwarded too.
    w.dispatch.on_message(invite(to_tag="srv1", branch="z9hG4bK-re-1", cseq=2), ALICE, PROXY)
    from_member = invite(call_id="srv", branch="z9hG4bK-srv-1", uri="sip:bob@127.0.0.1:5099")
    w.dispatch.on_message(from_member, PRIMARY, PROXY)
    w.dispatch.on_batch_end()
    assert [destination for _, destination in w.transports.sent] == [
        ALICE,
        PRIMARY,
        PRIMARY,
        Address("UDP", "127.0.0.1", 5099),
    ]
    assert core.counters.overload_drops == 1
