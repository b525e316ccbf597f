"""The takeover window in the proxy core (docs/design.md §2, ``takeover-timeout``), on the fake clock.

A pair that loses its active member holds its requests (held ones and new ones)
while both members are probed every quarter of a second, and sends them to the
first member that answers; only when the window ends with no member do the
callers get 503.  A branch that is only late stays live while held, so that a
member found alive again never gets a second copy; a ringing INVITE moves to the
member that took over when the old one is known to be gone.
"""

from __future__ import annotations

from sipha.ha import Member, MemberBecameActive, PairOutOfService, PairUnknown
from sipha.proxy.routing import RETRY_AFTER_SECONDS
from sipha.sip import Request
from sipha.sip.address import Address
from sipha.txn import SendMessage
from tests.proxy.support import (
    ALICE,
    BACKUP,
    PRIMARY,
    HaHarness,
    ha_harness,
    invite,
    make_view,
    requests,
    response_to,
    statuses,
)

PRIMARY_MEMBER, BACKUP_MEMBER = make_view().members("demo")
FAILOVER = 1.0
TAKEOVER = 6.0


def takeover_harness() -> HaHarness:
    """Active on the primary at t = 0, takeover-timeout 6 s, oos-check 1 s, oos-force 1 s."""
    h = ha_harness(oos_check=1.0, oos_force=1.0, takeover=TAKEOVER, primary_active=True)
    h.core.drain_events()
    return h


def active(h: HaHarness) -> Member | None:
    return h.core.view.active["demo"]


def invites(sent: list[SendMessage], destination: Address) -> list[Request]:
    seen: dict[str, Request] = {}
    for request in requests(sent, destination):
        if request.method == "INVITE":
            seen.setdefault(request.top_via.branch or "", request)
    return list(seen.values())


def fail_probes(h: HaHarness, member: Address) -> None:
    """``member`` is not bound yet: each of its pending probes gets ICMP port unreachable."""
    if h.pending_probes(member):
        h.transport_error(member)


def calls(h: HaHarness, count: int, start: int = 0) -> None:
    for index in range(start, start + count):
        h.feed(invite(call_id=f"c{index}", branch=f"z9hG4bK-c{index}"))


def test_a_killed_primary_and_a_backup_ready_two_seconds_later_lose_no_call() -> None:
    """The start-up race of the issue: ICMP from the dead primary, ICMP from a backup still
    binding; every call (the one in flight and the new ones) waits, none gets 503, and all go
    to the backup once it answers."""
    h = takeover_harness()
    calls(h, 1)
    h.advance(0.05)
    h.transport_error(PRIMARY)  # the primary is dead: ICMP at once
    events = h.core.drain_events()
    assert [type(e) for e in events] == [PairUnknown]
    assert "holding its requests for up to 6 s" in events[0].message
    assert len(h.pending_probes(BACKUP)) == 1
    assert len(h.pending_probes(PRIMARY)) == 1  # the lost member is asked again too
    for step in range(8):  # 2 s: new calls arrive, both members keep failing at once
        fail_probes(h, BACKUP)
        fail_probes(h, PRIMARY)
        calls(h, 1, start=1 + step)
        h.advance(0.25)
    assert len(h.probes(BACKUP)) >= 8  # every quarter of a second, not every oos-force
    assert 503 not in statuses(h.sent)
    assert not any(isinstance(e, PairOutOfService) for e in h.core.drain_events())
    sent = h.answer_probes(BACKUP)  # the backup is up
    assert active(h) == BACKUP_MEMBER
    moved = invites(sent, BACKUP)
    assert len(moved) == 9
    assert statuses(h.sent).count(100) == 9
    assert 503 not in statuses(h.sent)


def test_the_window_ends_with_503_and_event_40001_not_before() -> None:
    h = takeover_harness()
    calls(h, 1)
    h.transport_error(PRIMARY)
    h.core.drain_events()
    h.run(TAKEOVER - 0.01)
    assert 503 not in statuses(h.sent)
    assert not any(isinstance(e, PairOutOfService) for e in h.core.drain_events())
    h.run(0.02)
    assert [type(e) for e in h.core.drain_events()] == [PairOutOfService]
    assert statuses(h.sent) == [100, 503]
    assert h.sent[-1].message.get("retry-after") == str(RETRY_AFTER_SECONDS)
    # From now on, new calls get their 503 at once.
    sent = h.feed(invite(call_id="late", branch="z9hG4bK-late"))
    assert statuses(sent)[-1] == 503


def test_one_unanswered_request_is_not_an_outage() -> None:
    """The primary drops one INVITE but answers OPTIONS: failover-timeout re-probes it, it answers,
    and it stays active: no switch, no 40001, no 503, and the INVITE's branch goes on (it never
    gets a second copy of the call)."""
    h = takeover_harness()
    first = invites(h.feed(invite(call_id="dropped", branch="z9hG4bK-d")), PRIMARY)[0]
    h.advance(FAILOVER)
    assert [type(e) for e in h.core.drain_events()] == [PairUnknown]
    assert h.pending_probes(PRIMARY)  # re-probed at once
    h.answer_probes(PRIMARY)
    events = h.core.drain_events()
    assert [(type(e), getattr(e, "member", None)) for e in events] == [(MemberBecameActive, PRIMARY_MEMBER)]
    assert h.core.monitor is not None
    assert h.core.monitor.pairs["demo"].counters.switchovers == 0
    sent = h.advance(3.0)
    assert {r.top_via.branch for r in invites(sent, PRIMARY)} <= {first.top_via.branch}
    assert invites(h.sent, BACKUP) == []
    assert 503 not in statuses(h.sent)
    sent = h.feed(response_to(first, 200, "OK"), PRIMARY)
    assert statuses(sent) == [200]


def test_an_options_answer_after_the_request_keeps_the_member() -> None:
    """A member that answered an OPTIONS since the request went out is alive: no suspicion."""
    h = takeover_harness()
    h.advance(0.5)
    h.feed(invite(call_id="slow", branch="z9hG4bK-s"))  # t = 0.5, never answered
    h.advance(0.5)  # t = 1.0: the oos-check probe goes out
    h.answer_probes(PRIMARY)  # ... and the primary answers it
    h.advance(FAILOVER)  # past the INVITE's failover-timeout (t = 1.5)
    assert h.core.drain_events() == []
    assert active(h) == PRIMARY_MEMBER


def test_a_partitioned_primary_comes_back_within_the_window_and_keeps_its_calls() -> None:
    """No ICMP: the branch stays live; when the partition heals the retransmission gets through
    and its answer ends the hold: the call goes on with the primary."""
    h = takeover_harness()
    first = invites(h.feed(invite(call_id="p", branch="z9hG4bK-p")), PRIMARY)[0]
    h.run(FAILOVER + 2.0)  # partitioned: nothing answers
    assert active(h) is None
    sent = h.feed(response_to(first, 180, "Ringing"), PRIMARY)  # healed: its answer arrives
    assert statuses(sent) == [180]
    h.answer_probes(PRIMARY)
    assert active(h) == PRIMARY_MEMBER
    h.feed(response_to(first, 200, "OK"), PRIMARY)
    assert statuses(h.sent) == [100, 180, 200]
    assert invites(h.sent, BACKUP) == []


def test_a_held_live_branch_is_given_up_when_the_backup_takes_over() -> None:
    h = takeover_harness()
    first = invites(h.feed(invite(call_id="q", branch="z9hG4bK-q")), PRIMARY)[0]
    h.advance(FAILOVER)
    sent = h.answer_probes(BACKUP)
    assert active(h) == BACKUP_MEMBER
    moved = invites(sent, BACKUP)
    assert len(moved) == 1
    assert moved[0].top_via.branch != first.top_via.branch
    sent = h.advance(4.0)
    assert invites(sent, PRIMARY) == []  # the primary's branch stopped
    # Its late answer never reaches the caller: the call is the backup's.
    assert statuses(h.feed(response_to(first, 200, "OK"), PRIMARY), ALICE) == []


def test_cancel_of_a_held_live_branch_is_answered_here() -> None:
    h = takeover_harness()
    h.feed(invite(call_id="x", branch="z9hG4bK-x"))
    h.advance(FAILOVER)
    sent = h.feed(invite(method="CANCEL", call_id="x", branch="z9hG4bK-x", body=b""))
    assert sorted(statuses(sent)) == [200, 487]
    sent = h.answer_probes(PRIMARY)
    assert invites(sent, PRIMARY) == []
    assert invites(h.advance(4.0), PRIMARY) == []


def test_news_from_another_worker_that_the_member_is_gone_moves_its_ringing_calls() -> None:
    """With workers, the worker that got the ICMP tells the others the member is gone (not just
    lost): their ringing calls move to the new member too, instead of getting 408."""
    h = takeover_harness()
    forwarded = invites(h.feed(invite(call_id="r", branch="z9hG4bK-r")), PRIMARY)[0]
    h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)
    h.advance(0.1)  # later, another worker gets ICMP from the primary
    h.core.pair_news("demo", "gone", "primary", h.now, h.now)
    h._collect()
    assert active(h) is None
    assert "lost by another worker" in h.core.drain_events()[0].message
    h.core.pair_news("demo", "active", "backup", h.now, h.now)
    sent = h._collect()
    assert active(h) == BACKUP_MEMBER
    assert len(invites(sent, BACKUP)) == 1
    assert 408 not in statuses(h.sent)


def test_news_that_the_member_was_only_lost_ends_its_ringing_calls_with_408() -> None:
    h = takeover_harness()
    forwarded = invites(h.feed(invite(call_id="r", branch="z9hG4bK-r")), PRIMARY)[0]
    h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)
    h.core.pair_news("demo", "lost", "primary", h.now, h.now)
    h.core.pair_news("demo", "active", "backup", h.now, h.now)
    sent = h._collect()
    assert invites(sent, BACKUP) == []
    assert statuses(h.sent) == [100, 180, 408]
