"""Admission of new requests (sipha.proxy.admission, docs/design.md §3 "Overload"): shedding by
source tier under overload, ``[limits] max-transactions``, and the dispatcher's drop before parsing."""

from __future__ import annotations

import logging
from ipaddress import ip_network

import pytest
from pydantic import ValidationError

from sipha.config import Config
from sipha.proxy.admission import BLAME_OTHERS, LIMIT_RETRY_AFTER, RETRY_AFTER
from sipha.proxy.overload import is_new_invite
from sipha.proxy.ratelimit import GuardSettings
from sipha.sip.address import Address
from tests.proxy.support import ALICE, PRIMARY, PROXY, Harness, harness, invite, responses, statuses
from tests.proxy.test_dispatch import wiring

GATEWAY = Address("UDP", "127.0.0.9", 5060)
"""A trusted source ([limits] trusted)."""


def trusting(h: Harness) -> Harness:
    h.core.admission.trusted = lambda host: host == GATEWAY.host
    return h


def call(
    n: int, *, source: Address = ALICE, method: str = "INVITE", to_tag: str = "", body: bytes = b"v=0\r\n"
) -> bytes:
    """The ``n``-th call's INVITE (or ``method``) from ``source``, its Via naming it."""
    return invite(
        call_id=f"call-{n}@{source.host}",
        branch=f"z9hG4bK-{source.host}-{n}",
        via_host=f"{source.host}:{source.port}",
        method=method,
        to_tag=to_tag,
        body=body,
    )


def test_level_1_sheds_untrusted_new_invites_and_admits_trusted_ones() -> None:
    h = trusting(harness())
    h.core.admission.level = 1
    transactions = len(h.core.txn)
    assert statuses(h.feed(call(1))) == [503]
    assert len(h.core.txn) == transactions  # no transaction for the 503
    [shed] = responses(h.sent, ALICE)
    assert shed.get("retry-after") == str(RETRY_AFTER)
    sent = h.feed(call(2, source=GATEWAY), GATEWAY)
    assert statuses(sent, GATEWAY) == [100]
    assert [m.destination for m in sent if m.destination == PRIMARY] == [PRIMARY]
    assert h.core.counters.overload_sheds == 1


@pytest.mark.parametrize("level", [2, 3])
def test_trusted_new_invites_are_admitted_until_level_3(level: int) -> None:
    h = trusting(harness())
    h.core.admission.level = level
    expected = [100] if level < 3 else [503]
    assert statuses(h.feed(call(1, source=GATEWAY), GATEWAY), GATEWAY) == expected
    assert h.core.admission.shed_trusted == (level == 3)


def test_at_level_3_trusted_calls_are_kept_while_untrusted_ones_are_being_dropped() -> None:
    """The queue is full of a flood's: shedding the gateway's calls would not drain it."""
    h = trusting(harness())
    h.core.admission.level = 3
    h.core.admission.others_dropped_at = h.now - BLAME_OTHERS / 2
    assert statuses(h.feed(call(1, source=GATEWAY), GATEWAY), GATEWAY) == [100]
    h.now += BLAME_OTHERS
    assert statuses(h.feed(call(2, source=GATEWAY), GATEWAY), GATEWAY) == [503]


def test_in_dialog_requests_and_members_are_never_shed() -> None:
    h = trusting(harness())
    h.core.admission.level = 3
    assert statuses(h.feed(call(1, to_tag="srv1"))) == [100]  # a re-INVITE
    from_member = invite(call_id="srv", branch="z9hG4bK-srv-1", uri="sip:bob@127.0.0.1:5099")
    sent = h.feed(from_member, PRIMARY)
    assert Address("UDP", "127.0.0.1", 5099) in [m.destination for m in sent]


def test_max_transactions_keeps_half_for_trusted_sources_and_calls_up() -> None:
    """Untrusted requests outside a dialog: 503 from half the limit; the rest: at the limit."""
    h = trusting(harness())
    h.core.admission.limit(8)  # each forwarded INVITE: a server and a client transaction
    assert statuses(h.feed(call(1))) == [100]
    assert statuses(h.feed(call(2))) == [100]
    assert len(h.core.txn) == 4
    transactions = len(h.core.txn)
    assert statuses(h.feed(call(3))) == [503]  # untrusted, from 8 / 2
    assert len(h.core.txn) == transactions
    [refused] = [r for r in responses(h.sent, ALICE) if r.status == 503]
    assert refused.get("retry-after") == str(LIMIT_RETRY_AFTER)
    assert statuses(h.feed(call(1))) == [100]  # a retransmission is its transaction's
    assert statuses(h.feed(call(4, to_tag="srv1"))) == [100]  # in a dialog: up to the limit
    assert statuses(h.feed(call(5, source=GATEWAY), GATEWAY), GATEWAY) == [100]  # trusted
    assert len(h.core.txn) == 8
    assert statuses(h.feed(call(6, source=GATEWAY), GATEWAY), GATEWAY) == [503]  # the limit
    assert statuses(h.feed(call(7, to_tag="srv1"))) == [503]
    assert h.core.admission.refused == 3
    # The ACK of a refused INVITE ends here (§17.1.1.3); nothing is forwarded.
    ack = call(3, method="ACK", to_tag=refused.to.tag or "", body=b"")
    assert h.feed(ack) == []
    h.advance(300.0)  # Timer C (181 s), then the transactions end (Timers H, J, K, D): room again
    assert statuses(h.feed(call(8))) == [100]


def test_far_behind_only_untrusted_new_invites_over_udp_are_dropped_unparsed() -> None:
    w = wiring()
    core = w.dispatch.core
    assert core is not None
    w.dispatch.sources.reconfigure(GuardSettings(trusted=(ip_network(GATEWAY.host),)))
    w.dispatch.on_backlog(object(), 2)
    w.dispatch.on_message(call(1), ALICE, PROXY)
    w.dispatch.on_batch_end()
    assert w.transports.sent == []
    assert core.counters.overload_drops == 1
    assert core.admission.others_dropped_at == w.now[0]
    w.dispatch.on_message(call(2, source=GATEWAY), GATEWAY, PROXY)  # trusted: parsed, admitted
    tcp = Address("TCP", ALICE.host, 40000)
    w.dispatch.on_message(call(3, source=tcp), tcp, PROXY)  # no retransmission over TCP: parsed, 503
    w.dispatch.on_batch_end()
    sent = [(data.split(b"\r\n", 1)[0], destination) for data, destination in w.transports.sent]
    assert (b"SIP/2.0 100 Trying", GATEWAY) in sent
    assert (b"SIP/2.0 503 Service Unavailable", tcp) in sent
    assert core.counters.overload_drops == 1


def test_refusals_at_max_transactions_are_logged_once_per_10_s(caplog: pytest.LogCaptureFixture) -> None:
    w = wiring()
    core = w.dispatch.core
    assert core is not None
    w.dispatch.limit_transactions(1000)
    assert core.admission.max_transactions == 1000
    core.admission.limit(2)
    caplog.set_level(logging.WARNING, logger="sipha")
    for n in range(4):
        w.dispatch.on_message(call(n), ALICE, PROXY)
        w.dispatch.on_batch_end()
    w.now[0] += 5.0
    w.dispatch.on_message(call(10), ALICE, PROXY)
    w.dispatch.on_batch_end()
    lines = [r.getMessage() for r in caplog.records if "max-transactions" in r.getMessage()]
    expected = (
        "[limits] max-transactions = 2 reached: 1 new requests answered 503 since the last line about it "
        "(untrusted sources' from 1 transactions)"
    )
    assert lines == [expected]
    w.now[0] += 10.0
    w.dispatch.on_message(call(11), ALICE, PROXY)
    w.dispatch.on_batch_end()
    lines = [r.getMessage() for r in caplog.records if "max-transactions" in r.getMessage()]
    assert len(lines) == 2
    assert "reached: 4 new requests" in lines[1]
    assert core.admission.refused == 5


@pytest.mark.parametrize("value", [0, 999, 10_000_001, "many"])
def test_max_transactions_out_of_range_is_refused_naming_key_value_and_range(value: object) -> None:
    with pytest.raises(ValidationError) as raised:
        Config.model_validate({"limits": {"max-transactions": value}})
    text = str(raised.value)
    assert "max-transactions" in text
    assert repr(value) in text or str(value) in text
    assert "1000" in text or "10000000" in text or "integer" in text


def test_max_transactions_default_is_a_bound() -> None:
    assert Config.model_validate({}).limits.max_transactions == 500_000


@pytest.mark.parametrize(
    ("data", "new"),
    [
        (b"INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\nFrom: x\r\n\r\n", True),
        (b"INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>;tag=1\r\nFrom: x\r\n\r\n", False),
        (b"INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n ;tag=1\r\nFrom: x\r\n\r\n", False),  # folded
        (b"INVITE sip:a@b SIP/2.0\r\nFrom: x\r\nTo: <sip:a@b>\r\n\r\n", True),  # the last header
        (b"INVITE sip:a@b SIP/2.0\r\nFrom: x\r\nTo: <sip:a@b> ; TAG = 2\r\n\r\n", False),
        (b"INVITE sip:a@b SIP/2.0\nTo: <sip:a@b>\nFrom: x\n\n", True),  # bare LF: the general path
        (b"INVITE sip:a@b SIP/2.0\r\nFrom: x\r\n\r\nTo: <sip:a@b>", False),  # only in the body
    ],
)
def test_is_new_invite_fast_path(data: bytes, new: bool) -> None:
    assert is_new_invite(data) is new
