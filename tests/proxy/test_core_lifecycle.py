"""Unit tests of the core's lifecycle parts, on a fake clock.

* ``overload-ctrl-dialog-rate``: a token bucket of new INVITEs (burst = the rate); over
  it, 503 with Retry-After: 1, counted in ``Counters.overload_rejections``.
* Drain (SIGTERM): new out-of-dialog requests get 503 with Retry-After; in-dialog requests,
  ACKs and CANCELs of calls under way flow; ``under_way`` and ``calls`` tell the app when
  it may exit.
* Reload (SIGHUP): :meth:`ProxyCore.reconfigure` applies new settings without dropping
  a transaction under way.
"""

from __future__ import annotations

import dataclasses

import pytest

from sipha.ha import AliveCodes, Monitor, MonitorSettings, State
from sipha.proxy.core import DRAIN_RETRY_AFTER, OVERLOAD_RETRY_AFTER, ProxySettings
from sipha.proxy.view import ConfiguredView, PairSpec
from sipha.sip.address import Address
from tests.proxy.support import (
    ALICE,
    BACKUP,
    PRIMARY,
    RECORD_ROUTE,
    Harness,
    ack_2xx,
    as_request,
    cancel,
    ha_harness,
    harness,
    invite,
    make_view,
    only,
    response_to,
    responses,
    statuses,
)

SITE_B_PRIMARY = Address("UDP", "127.0.0.1", 5090)
SITE_B_BACKUP = Address("UDP", "127.0.0.1", 5091)


def new_invite(h: Harness, n: int) -> list[int]:
    """Feed the ``n``-th new INVITE (its own Call-ID and branch); the statuses Alice got."""
    return statuses(h.feed(invite(call_id=f"call-{n}@alice", branch=f"z9hG4bK-alice-{n}")))


REFUSED = [100, 503]  # the INVITE server transaction's 100 Trying, then our 503


def retry_after(h: Harness) -> list[str | None]:
    """The Retry-After of every 503 sent to Alice so far."""
    return [r.get("retry-after") for r in responses(h.sent, ALICE) if r.status == 503]


# ---------------------------------------------------------------------- overload control


def test_behind_sheds_new_invites_from_endpoints_only() -> None:
    """docs/design.md §3, overload: while the driver says sipha is behind, a new call from an
    endpoint gets 503 with Retry-After, sent without a transaction (no retransmissions to a
    caller that never ACKs); what is under way keeps flowing: the INVITE's retransmission,
    re-INVITEs, BYEs, CANCELs and a SIP server's new call."""
    h = harness()
    assert new_invite(h, 1) == [100]
    admitted = invite(call_id="call-1@alice", branch="z9hG4bK-alice-1")
    h.core.overloaded = True
    transactions = len(h.core.txn)
    assert new_invite(h, 2) == [503]  # no 100 Trying: no transaction
    assert len(h.core.txn) == transactions
    assert retry_after(h) == [str(OVERLOAD_RETRY_AFTER)]
    assert (h.core.counters.overload_sheds, h.core.counters.overload_rejections) == (1, 0)
    [shed] = [r for r in responses(h.sent, ALICE) if r.status == 503]
    # Its ACK (same branch, the 503's To tag) ends here: nothing is forwarded.
    ack = invite(
        method="ACK", call_id="call-2@alice", branch="z9hG4bK-alice-2", to_tag=shed.to.tag or "", body=b""
    )
    assert h.feed(ack) == []
    # The admitted INVITE's retransmission is its server transaction's (§17.2.1), not a new call.
    assert statuses(h.feed(admitted)) == [100]
    sent = h.feed(invite(to_tag="srv1", branch="z9hG4bK-reinvite-1", cseq=10))
    assert statuses(sent) == [100]
    assert only(sent, PRIMARY)
    sent = h.feed(invite(method="BYE", to_tag="srv1", branch="z9hG4bK-bye-1", cseq=11, body=b""))
    assert as_request(only(sent, PRIMARY)).method == "BYE"
    sent = h.feed(cancel(call_id="call-1@alice", branch="z9hG4bK-alice-1"))
    assert 200 in statuses(sent)
    # A SIP server's new call (docs/design.md §3 rule 3) keeps priority.
    from_member = invite(call_id="from-server", branch="z9hG4bK-srv-1", uri="sip:bob@127.0.0.1:5099")
    sent = h.feed(from_member, PRIMARY)
    assert [m.destination for m in sent] == [PRIMARY, Address("UDP", "127.0.0.1", 5099)]
    assert h.core.counters.overload_sheds == 1
    h.core.overloaded = False
    assert new_invite(h, 3) == [100]
    # No transaction: the 503 is never retransmitted (Timer G), whatever the caller does.
    h.advance(40.0)
    assert [r.status for r in responses(h.sent, ALICE)].count(503) == 1


def test_overload_rate_10_passes_a_burst_of_10_and_refuses_the_11th() -> None:
    h = harness(overload_rate=10.0)
    h.now = 100.0  # a clock far from 0: float differences must still refill whole tokens
    for n in range(10):
        assert new_invite(h, n) == [100], n
    assert new_invite(h, 10) == REFUSED
    assert retry_after(h) == [str(OVERLOAD_RETRY_AFTER)]
    assert h.core.counters.overload_rejections == 1
    h.advance(0.1)
    assert new_invite(h, 11) == [100]  # one token back after 1/rate s
    assert new_invite(h, 12) == REFUSED
    assert h.core.counters.overload_rejections == 2


def test_overload_steady_rate_is_admitted() -> None:
    h = harness(overload_rate=10.0)
    for n in range(50):
        assert new_invite(h, n) == [100], n
        h.advance(0.1)
    assert h.core.counters.overload_rejections == 0


def test_overload_fraction_of_a_second_rate_has_a_burst_of_one() -> None:
    h = harness(overload_rate=0.5)
    assert new_invite(h, 1) == [100]
    assert new_invite(h, 2) == REFUSED
    h.advance(1.9)
    assert new_invite(h, 3) == REFUSED
    h.advance(0.2)
    assert new_invite(h, 4) == [100]


def test_overload_never_refuses_in_dialog_requests() -> None:
    h = harness(overload_rate=1.0)
    assert new_invite(h, 1) == [100]
    assert new_invite(h, 2) == REFUSED
    # Re-INVITEs, BYEs, ACKs for 2xx: in a dialog (To tag), never counted nor refused.
    for n in range(20):
        sent = h.feed(invite(to_tag="srv1", branch=f"z9hG4bK-reinvite-{n}", cseq=10 + n))
        assert statuses(sent) == [100]
        sent = h.feed(invite(method="BYE", to_tag="srv1", branch=f"z9hG4bK-bye-{n}", cseq=100 + n, body=b""))
        assert statuses(sent) == []
        assert only(sent, PRIMARY)
    sent = h.feed(ack_2xx())
    assert as_request(only(sent, PRIMARY)).method == "ACK"
    assert h.core.counters.overload_rejections == 1


def test_overload_only_counts_invites() -> None:
    h = harness(overload_rate=1.0)
    assert new_invite(h, 1) == [100]
    for n in range(5):
        sent = h.feed(invite(method="MESSAGE", branch=f"z9hG4bK-msg-{n}", call_id=f"m{n}", body=b""))
        assert only(sent, PRIMARY)
    assert h.core.counters.overload_rejections == 0


def test_overload_zero_is_off() -> None:
    h = harness(overload_rate=0.0)
    for n in range(1000):
        assert new_invite(h, n) == [100]
    assert h.core.counters.overload_rejections == 0


def test_overload_retransmission_of_a_refused_invite_gets_the_same_503() -> None:
    h = harness(overload_rate=1.0)
    assert new_invite(h, 1) == [100]
    assert new_invite(h, 2) == REFUSED
    assert new_invite(h, 2) == [503]  # the server transaction answers it again
    assert h.core.counters.overload_rejections == 1


# ---------------------------------------------------------------------- drain


def test_drain_refuses_new_requests_with_503_and_retry_after() -> None:
    h = harness()
    h.core.start_draining()
    assert new_invite(h, 1) == REFUSED
    sent = h.feed(invite(method="OPTIONS", branch="z9hG4bK-opt", call_id="o1", body=b""))
    assert statuses(sent) == [503]
    assert retry_after(h) == [str(DRAIN_RETRY_AFTER)] * 2
    assert h.core.counters.drain_rejections == 2
    assert not [s for s in h.sent if s.destination == PRIMARY]
    assert h.core.under_way == 0  # refusals are finished transactions


def test_drain_lets_a_call_under_way_finish() -> None:
    h = harness()
    forwarded = as_request(only(h.feed(invite()), PRIMARY))
    h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)
    assert h.core.under_way == 1
    h.core.start_draining()
    sent = h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    assert statuses(sent) == [200]
    assert h.core.under_way == 0
    assert h.core.calls == 1  # the call is up: the drain waits for its BYE
    sent = h.feed(ack_2xx())
    assert as_request(only(sent, PRIMARY)).method == "ACK"
    bye = invite(method="BYE", to_tag="srv1", branch="z9hG4bK-bye", cseq=2, body=b"")
    forwarded_bye = as_request(only(h.feed(bye), PRIMARY))
    assert h.core.calls == 0
    assert h.core.under_way == 1
    assert statuses(h.feed(response_to(forwarded_bye, 200, "OK"), PRIMARY)) == [200]
    assert h.core.under_way == 0
    assert h.core.counters.drain_rejections == 0


def test_drain_bye_from_the_callee_ends_the_call_too() -> None:
    h = harness()
    forwarded = as_request(only(h.feed(invite()), PRIMARY))
    h.feed(response_to(forwarded, 200, "OK", to_tag="srv9"), PRIMARY)
    assert h.core.calls == 1
    h.core.start_draining()
    # The callee hangs up: From/To swapped, so the tags are too.
    bye = (
        "BYE sip:alice@127.0.0.1:5061 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-srv-bye;rport\r\n"
        "Max-Forwards: 70\r\n"
        f"Route: <{RECORD_ROUTE}>\r\n"
        "From: <sip:service@127.0.0.1>;tag=srv9\r\n"
        "To: <sip:alice@127.0.0.1:5061>;tag=a1\r\n"
        "Call-ID: call-1@alice\r\n"
        "CSeq: 1 BYE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    sent = h.feed(bye, PRIMARY)
    assert as_request(only(sent, ALICE)).method == "BYE"
    assert h.core.calls == 0


def test_drain_cancel_of_a_ringing_call_is_forwarded() -> None:
    h = harness()
    forwarded = as_request(only(h.feed(invite()), PRIMARY))
    h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)
    h.core.start_draining()
    sent = h.feed(cancel())
    assert statuses(sent) == [200]  # the CANCEL's own 200, hop by hop
    assert as_request(only(sent, PRIMARY)).method == "CANCEL"
    sent = h.feed(response_to(forwarded, 487, "Request Terminated"), PRIMARY)
    assert statuses(sent) == [487]
    assert h.core.under_way == 0
    assert h.core.calls == 0


def test_drain_in_dialog_requests_flow() -> None:
    h = harness()
    h.core.start_draining()
    sent = h.feed(invite(to_tag="srv1", branch="z9hG4bK-reinvite", cseq=5))
    assert statuses(sent) == [100]
    assert as_request(only(sent, PRIMARY)).method == "INVITE"
    assert h.core.under_way == 1


def test_drain_counts_held_requests_as_under_way() -> None:
    h = ha_harness()  # the pair is unknown: the primary has not answered the first probe
    assert new_invite(h, 1) == [100]
    assert h.core.under_way == 1  # held for the member that answers
    h.core.start_draining()
    h.run(2.0, alive=PRIMARY)
    assert h.core.under_way == 1  # forwarded to the primary now
    forwarded = [r for r in h.sent if r.destination == PRIMARY and as_request(r).method == "INVITE"]
    assert h.feed(response_to(as_request(forwarded[0]), 486, "Busy Here"), PRIMARY)
    assert h.core.under_way == 0


def test_calls_are_forgotten_after_their_memory() -> None:
    h = harness()
    forwarded = as_request(only(h.feed(invite()), PRIMARY))
    h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    assert h.core.calls == 1
    h.now += 3601.0
    second = invite(call_id="call-2@alice", branch="z9hG4bK-alice-2")
    forwarded = as_request(only(h.feed(second), PRIMARY))
    h.feed(response_to(forwarded, 200, "OK", to_tag="srv2"), PRIMARY)
    assert h.core.calls == 1  # the first one is forgotten (its BYE went elsewhere)


# ---------------------------------------------------------------------- reconfigure (SIGHUP)


def two_pair_view() -> ConfiguredView:
    return ConfiguredView.build(
        [("127.0.0.1", 5060), ("proxy.example.com", None)],
        [
            PairSpec("demo", PRIMARY, BACKUP, serving=True),
            PairSpec("site-b", SITE_B_PRIMARY, SITE_B_BACKUP),
        ],
    )


def test_reconfigure_keeps_unchanged_pairs_and_probes_new_ones() -> None:
    h = ha_harness(primary_active=True)
    old = h.core.monitor
    assert old is not None
    kept = old.pairs["demo"]
    assert kept.state is State.ACTIVE
    forwarded = as_request(only(h.feed(invite()), PRIMARY))  # a call under way
    view = two_pair_view()
    settings = MonitorSettings(oos_check=3.0, oos_force=5.0, alive_codes=AliveCodes.parse(["2xx"]))
    monitor = Monitor([view.members(name) for name in view.pairs], settings)
    monitor.pairs["demo"] = kept  # what the app does for an unchanged pair
    kept.settings = settings
    h.core.reconfigure(dataclasses.replace(h.core.settings, overload_rate=5.0), view, monitor, h.now)
    h._collect()
    assert view.active["demo"] is not None
    assert view.active_member("site-b") is None  # unknown until probed
    assert monitor.pairs["site-b"].state is State.UNKNOWN
    assert h.probes(SITE_B_PRIMARY)
    # The call under way finishes on the member it went to.
    assert statuses(h.feed(response_to(forwarded, 200, "OK"), PRIMARY)) == [200]
    assert h.core.settings.overload_rate == 5.0
    # The kept pair's next probe comes oos-check (3 s) after the current period ends.
    h.run(6.0, alive=PRIMARY)
    h.answer_probes(SITE_B_PRIMARY)
    assert view.active_member("site-b") is not None
    assert kept.state is State.ACTIVE


def test_reconfigure_drops_probes_of_removed_pairs() -> None:
    h = ha_harness()
    assert h.pending_probes(PRIMARY)
    view = ConfiguredView.build(
        [("127.0.0.1", 5060)], [PairSpec("site-b", SITE_B_PRIMARY, SITE_B_BACKUP, serving=True)]
    )
    monitor = Monitor([view.members("site-b")], MonitorSettings())
    h.core.reconfigure(h.core.settings, view, monitor, h.now)
    h._collect()
    # The late answer of the removed pair's probe is dropped, not fed to a missing pair.
    h.answer_probes(PRIMARY)
    h.answer_probes(SITE_B_PRIMARY)
    assert view.active["site-b"] is not None


def test_reconfigure_record_route_applies_to_new_requests() -> None:
    h = harness()
    settings = ProxySettings(
        record_route="sip:pool.example.net;lr",
        via={"UDP": ("127.0.0.1", 5062), "TCP": ("127.0.0.1", 5062)},
    )
    h.core.reconfigure(settings, make_view(), None, h.now)
    forwarded = as_request(only(h.feed(invite()), PRIMARY))
    assert forwarded.get("record-route") == "<sip:pool.example.net;lr>"
    assert forwarded.top_via.port == 5062


@pytest.mark.parametrize("rate", [0.0, 2.0])
def test_reconfigure_overload_rate_change(rate: float) -> None:
    h = harness(overload_rate=1.0)
    assert new_invite(h, 1) == [100]
    assert new_invite(h, 2) == REFUSED
    h.core.reconfigure(dataclasses.replace(h.core.settings, overload_rate=rate), make_view(), None, h.now)
    expected = [100] if rate == 0 else REFUSED  # 2/s: the bucket kept its (empty) level
    assert new_invite(h, 3) == expected
    h.advance(0.5)
    assert new_invite(h, 4) == [100]
