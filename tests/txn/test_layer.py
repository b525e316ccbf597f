"""The layer's bookkeeping: deadlines, lazy deletion, removal, no leaks; timer values; sans-IO."""

from __future__ import annotations

import pytest

from sipha.sip import Request
from sipha.sip.address import Address
from sipha.txn import (
    Input,
    SendMessage,
    State,
    Timer,
    TimerConfig,
    TransactionLayer,
)
from tests.txn.support import UDP_PEER, UPSTREAM_UDP, request, response


def proxy_request(method: str, n: int) -> Request:
    return request(method, branch=f"z9hG4bK-p{n}", via_host="proxy.example.com", call_id=f"c{n}@x")


# ------------------------------------------------------------------ timers


def test_timer_defaults_follow_table_4() -> None:
    config = TimerConfig()
    assert (config.t1, config.t2, config.t4) == (0.5, 4.0, 5.0)
    unreliable = {timer: config.initial(timer, reliable=False) for timer in Timer}
    reliable = {timer: config.initial(timer, reliable=True) for timer in Timer}
    assert unreliable == {
        Timer.A: 0.5, Timer.B: 32.0, Timer.D: 32.0, Timer.E: 0.5, Timer.F: 32.0, Timer.G: 0.5,
        Timer.H: 32.0, Timer.I: 5.0, Timer.J: 32.0, Timer.K: 5.0, Timer.L: 32.0,
    }  # fmt: skip
    assert reliable == {
        Timer.A: None, Timer.B: 32.0, Timer.D: 0.0, Timer.E: None, Timer.F: 32.0, Timer.G: None,
        Timer.H: 32.0, Timer.I: 0.0, Timer.J: 0.0, Timer.K: 0.0, Timer.L: 32.0,
    }  # fmt: skip


def test_timer_sequences() -> None:
    config = TimerConfig()
    assert config.sequence(Timer.A, 7) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert config.sequence(Timer.E, 6) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert config.sequence(Timer.G, 6) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    fast = TimerConfig(t1=0.1, t2=0.3, t4=1.0)
    assert fast.sequence(Timer.E, 4) == [0.1, 0.2, 0.3, 0.3]
    assert fast.timeout == pytest.approx(6.4)
    with pytest.raises(ValueError, match="not a retransmission timer"):
        config.sequence(Timer.B, 2)


@pytest.mark.parametrize(("t1", "t2", "t4"), [(0.0, 4.0, 5.0), (5.0, 4.0, 5.0), (0.5, 4.0, -1.0)])
def test_timer_config_rejects_nonsense(t1: float, t2: float, t4: float) -> None:
    with pytest.raises(ValueError, match="T"):
        TimerConfig(t1=t1, t2=t2, t4=t4)


def test_layer_uses_its_timer_config() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.25, t2=2.0, t4=2.5))
    txn = layer.send_request(proxy_request("INVITE", 1), UDP_PEER, 10.0)
    assert txn.timers == {Timer.A: 10.25, Timer.B: 26.0}


# ------------------------------------------------------------------ deadlines


def test_next_deadline_tracks_the_earliest_live_timer() -> None:
    layer = TransactionLayer()
    assert layer.next_deadline() is None
    invite = proxy_request("INVITE", 1)
    a = layer.send_request(invite, UDP_PEER, 0.0)
    assert layer.next_deadline() == 0.5
    b = layer.send_request(proxy_request("OPTIONS", 2), UDP_PEER, 0.2)
    assert layer.next_deadline() == 0.5
    # The INVITE gets a 180: its A and B are stopped; the stale heap entries are skipped.
    layer.receive_response(response(invite, 180), 0.3)
    assert a.timers == {}
    assert layer.next_deadline() == 0.7  # the OPTIONS' Timer E
    layer.drain()
    layer.handle_timers(0.69)
    assert layer.drain() == []
    assert b.timers[Timer.E] == 0.7  # not yet
    layer.handle_timers(0.7)
    assert b.timers[Timer.E] == 1.7
    assert layer.next_deadline() == 1.7


def test_handle_timers_fires_in_deadline_order_across_transactions() -> None:
    layer = TransactionLayer()
    first = layer.send_request(proxy_request("OPTIONS", 1), UDP_PEER, 0.3)
    second = layer.send_request(proxy_request("OPTIONS", 2), UDP_PEER, 0.1)
    layer.drain()
    layer.handle_timers(1.0)  # both E timers (0.6 and 0.8) are due
    messages = [o.message for o in layer.drain() if isinstance(o, SendMessage)]
    assert messages == [second.request, first.request]


def test_terminated_transactions_are_removed_and_nothing_leaks() -> None:
    layer = TransactionLayer()
    now = 0.0
    for n in range(2000):
        now += 0.001
        if n % 2:
            invite = proxy_request("INVITE", n)
            layer.send_request(invite, UDP_PEER, now)
            layer.receive_response(response(invite, 200), now)  # terminates at once
        else:
            inbound = request("MESSAGE", branch=f"z9hG4bK-in{n}")
            server = layer.receive_request(inbound, UPSTREAM_UDP, now)
            assert server is not None
            layer.respond(server, response(inbound, 200), now)  # Timer J: 32 s
        layer.drain()
        # Stale entries (e.g. the INVITEs' A and B) never outnumber the live ones unboundedly.
        assert layer.heap_size <= 2 * (64 + 2 * len(layer))
    assert len(layer) == 1000
    layer.handle_timers(now + 32.0)
    outputs = layer.drain()
    assert len(outputs) == 1000
    assert len(layer) == 0
    assert layer.next_deadline() is None
    assert layer.heap_size == 0
    assert not layer._acks_2543


def test_heap_is_compacted_when_stale_entries_pile_up() -> None:
    layer = TransactionLayer()
    for n in range(1000):
        invite = proxy_request("INVITE", n)
        layer.send_request(invite, UDP_PEER, 0.0)
        layer.receive_response(response(invite, 200), 0.0)  # A and B entries go stale at once
    assert len(layer) == 0
    assert layer.heap_size <= 2 * 64 + 2
    layer.drain()
    assert layer.next_deadline() is None
    assert layer.heap_size == 0


def test_inspection_helpers() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(proxy_request("OPTIONS", 1), UDP_PEER, 0.0)
    assert list(layer) == [txn]
    assert dict(layer.transactions) == {txn.key: txn}
    assert layer.get(txn.key) is txn
    assert layer.get(("client", "nope", "OPTIONS")) is None
    assert "OPTIONS" in repr(txn)
    assert "Trying" in repr(txn)
    assert txn.timer_deadline(Timer.A) is None
    assert txn.request is not None  # kept in Trying: Timer E re-sends it
    layer.send_stateless(txn.request, UDP_PEER)
    assert layer.drain()[-1] == SendMessage(txn.request, UDP_PEER, None)
    assert layer.drain() == []


def test_address_reliability() -> None:
    assert not Address("UDP", "h", 1).reliable
    assert not Address("udp", "h", 1).reliable
    for transport in ("TCP", "TLS", "SCTP", "WS", "WSS"):
        assert Address(transport, "h", 1).reliable


def test_handle_rejects_the_wrong_message_type() -> None:
    layer = TransactionLayer(auto_trying=False)
    inbound = request()
    txn = layer.receive_request(inbound, UPSTREAM_UDP, 0.0)
    assert txn is not None
    with pytest.raises(TypeError, match="needs a response"):
        txn.handle(Input.TU_1XX, 0.1, inbound)
    layer.respond(txn, response(inbound, 200), 0.2)
    assert txn.state is State.ACCEPTED
    with pytest.raises(TypeError, match="needs a request"):
        txn.handle(Input.ACK, 0.3, response(inbound, 200))


def test_unarmed_timer_input_is_ignored() -> None:
    layer = TransactionLayer()
    invite = proxy_request("INVITE", 1)
    txn = layer.send_request(invite, UDP_PEER, 0.0)
    layer.receive_response(response(invite, 180), 0.1)
    assert txn.handle(Timer.A, 0.5) is False
    assert txn.state is State.PROCEEDING
