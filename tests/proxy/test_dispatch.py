"""The dispatcher between the transports and the core: one flush per batch of datagrams."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sipha.dispatch import TIMER_GRID, Dispatcher
from sipha.ha import HaEvent
from sipha.sip import Request, parse_message
from sipha.sip.address import Address
from tests.proxy.support import ALICE, PRIMARY, PROXY, harness, invite, response_to

ALICE_TCP = Address("TCP", "127.0.0.1", 40000)


@dataclass
class SentLog:
    """What the dispatcher gave the transports, in order (the sockets' side of the glue)."""

    sent: list[tuple[bytes, Address]] = field(default_factory=list)
    connections: set[Address] = field(default_factory=set)
    aliases: list[tuple[Address, str, int]] = field(default_factory=list)

    def send(self, data: bytes, destination: Address) -> None:
        self.sent.append((data, destination))

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
