"""Unit tests of the proxy core's high availability (docs/design.md §2-§3), on a fake clock.

The core runs with a real :class:`sipha.ha.Monitor` for the one pair ``demo``
(primary 127.0.0.1:5070, backup 127.0.0.1:5080).  Each test names the rule it
checks: ``s2``/``s3`` for docs/design.md §2/§3, ``issue4`` for "No lost calls during
detection" (failover-timeout, hold, hold-limit).  Known bugs are kept as strict
xfails whose reason starts with ``BUG:``.
"""

from __future__ import annotations

import pytest

from sipha.ha import (
    EVENT_PAIR_UNAVAILABLE,
    HaEvent,
    Member,
    MemberBecameActive,
    PairOutOfService,
    PairRestored,
    PairUnknown,
    SplitBrain,
)
from sipha.ha.settings import PERIOD_REASKS
from sipha.proxy.core import MAGIC_COOKIE
from sipha.proxy.failover import RELEASE_SLICE
from sipha.proxy.routing import RETRY_AFTER_SECONDS
from sipha.sip import Request, Response
from sipha.sip.address import Address
from sipha.txn import SendMessage, TimerConfig
from tests.proxy.support import (
    ALICE,
    BACKUP,
    PRIMARY,
    RECORD_ROUTE,
    HaHarness,
    as_request,
    cancel,
    ha_harness,
    harness,
    invite,
    make_view,
    only,
    requests,
    response_to,
    responses,
    statuses,
)

PRIMARY_MEMBER, BACKUP_MEMBER = make_view().members("demo")
FAILOVER = 1.0  # docs/design.md §5 failover-timeout default
HOLD = 11.0  # longer than any hold limit here (failover.hold_limit: failover + max(oos-force, takeover) + 1)
T1 = TimerConfig().t1
TIMER_F = 64 * T1
TIMER_C = 181.0


# ---------------------------------------------------------------------- helpers


def active(h: HaHarness) -> Member | None:
    return h.core.view.active["demo"]


def distinct(items: list[Request]) -> list[Request]:
    """Requests with distinct top Via branches (retransmissions left out), in order."""
    seen: dict[str, Request] = {}
    for item in items:
        seen.setdefault(item.top_via.branch or "", item)
    return list(seen.values())


def sent_requests(sent: list[SendMessage], destination: Address, method: str = "INVITE") -> list[Request]:
    """The distinct ``method`` requests (by branch) among ``sent`` to ``destination``."""
    return distinct([r for r in requests(sent, destination) if r.method == method])


def kinds(events: list[HaEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


def became_active(events: list[HaEvent]) -> list[tuple[str, str]]:
    return [(e.member.role, e.reason) for e in events if isinstance(e, MemberBecameActive)]


def last_response(sent: list[SendMessage], destination: Address = ALICE) -> Response:
    return responses(sent, destination)[-1]


def active_on_primary() -> HaHarness:
    """The pair active on the primary at t = 0 (it answered the first OPTIONS); events drained."""
    h = ha_harness(primary_active=True)
    assert active(h) == PRIMARY_MEMBER
    h.core.drain_events()
    return h


def failed_over(h: HaHarness, data: bytes | None = None, to: Address = PRIMARY) -> Request:
    """A request forwarded to the silent active member ``to``, given up at failover-timeout.

    Returns the copy ``to`` got; the pair is now unknown and the request held.
    """
    sent = h.feed(invite() if data is None else data)
    forwarded = distinct(requests(sent, to))
    assert len(forwarded) == 1
    h.advance(FAILOVER)
    assert active(h) is None
    return forwarded[0]


def bye_from_backup(via_host: str = "127.0.0.1:5080") -> bytes:
    """An in-dialog BYE the backup sends toward Alice (sipha as its outbound proxy, §3 rule 3)."""
    return invite(
        method="BYE",
        uri="sip:alice@127.0.0.1:5061",
        to_tag="dlg",
        via_host=via_host,
        branch="z9hG4bK-backup-bye",
        call_id="dlg-1@backup",
        body=b"",
    )


def ack_for(response: Response) -> bytes:
    """The ACK of a non-2xx final response to :func:`invite` (§17.1.1.3: same branch)."""
    return invite(method="ACK", body=b"", to_tag=response.to.tag or "")


# ====================================================================== §2 start


def test_s2_start_pair_unknown_first_options_goes_to_primary_as_a_real_options() -> None:
    """§2: "At start the pair is unknown. The first OPTIONS goes to the member configured as primary."

    A real OPTIONS (RFC 3261 §11.1) through the transaction layer, fresh ids.
    """
    h = ha_harness()
    events = h.core.drain_events()
    assert events == [PairUnknown("demo", 0.0, "start", None)]
    assert active(h) is None
    assert [s.destination for s in h.sent] == [PRIMARY]
    message = only(h.sent)
    assert message.key is not None  # sent by a client transaction, not statelessly
    assert message.key in h.core.txn.transactions
    probe = as_request(message)
    assert probe.method == "OPTIONS"
    assert probe.uri == "sip:127.0.0.1:5070"
    assert probe.max_forwards == 70
    assert probe.cseq.method == "OPTIONS"
    assert probe.to.tag is None
    assert probe.from_.tag
    assert probe.get("contact") == "<sip:127.0.0.1:5060>"
    assert probe.call_id
    assert (probe.top_via.branch or "").startswith(MAGIC_COOKIE)
    assert probe.top_via.host_key == "127.0.0.1"
    assert probe.top_via.port == 5060
    assert len(probe.vias) == 1


def test_s2_every_probe_has_a_fresh_call_id_branch_and_a_higher_cseq() -> None:
    """RFC 3261 §8.1.1.4/§8.1.1.7: each OPTIONS is a new request: new Call-ID, branch and tag."""
    h = ha_harness(oos_force=2.0)
    h.advance(2.0)  # primary silent: the alternation probes the backup
    h.answer_probes(BACKUP)
    h.run(5.0, alive=BACKUP)  # the backup is active: a period probe at 2 + 5
    probes = h.probes()
    assert [p.uri for p in probes] == ["sip:127.0.0.1:5070", "sip:127.0.0.1:5080", "sip:127.0.0.1:5080"]
    assert len({p.call_id for p in probes}) == 3
    assert len({p.top_via.branch for p in probes}) == 3
    assert len({p.from_.tag for p in probes}) == 3
    seqs = [p.cseq.seq for p in probes]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3


def test_s2_primary_answering_200_becomes_active_and_gets_endpoint_invites() -> None:
    """§2: "until one answers; that member becomes active"; §3 rule 4: endpoint traffic to it."""
    h = ha_harness()
    h.core.drain_events()
    assert h.answer_probes(PRIMARY) == []
    assert h.core.drain_events() == [MemberBecameActive("demo", 0.0, PRIMARY_MEMBER, "options", None)]
    assert active(h) == PRIMARY_MEMBER
    sent = h.feed(invite())
    assert statuses(sent) == [100]
    assert len(sent_requests(sent, PRIMARY)) == 1
    assert requests(sent, BACKUP) == []


def test_issue4_requests_before_any_answer_are_held_then_forwarded_when_primary_answers() -> None:
    """Issue 4 / §2: while the pair is unknown (probing), requests wait for the member that answers."""
    h = ha_harness()
    sent = h.feed(invite())
    sent += h.feed(invite(method="MESSAGE", branch="z9hG4bK-msg", call_id="msg@alice", body=b""))
    assert statuses(sent) == [100]  # the INVITE's; the MESSAGE is waiting silently
    assert [r.method for r in requests(sent)] == []
    sent = h.advance(0.4)
    assert [r.method for r in requests(sent) if r.method != "OPTIONS"] == []
    sent = h.answer_probes(PRIMARY)
    assert sorted(r.method for r in distinct(requests(sent, PRIMARY))) == ["INVITE", "MESSAGE"]
    assert requests(sent, BACKUP) == []
    assert 503 not in statuses(h.sent)
    assert h.core.contexts == 2


def test_a_large_hold_is_released_a_slice_a_step_with_new_calls_between() -> None:
    """2,000 requests held through a takeover, forwarded in one step, kept the event loop from
    reading its sockets for a second: new calls met the overload level of that burst (503).
    Released RELEASE_SLICE a step, the sockets are read between the slices."""
    h = ha_harness()
    for n in range(2 * RELEASE_SLICE + 50):
        h.feed(invite(call_id=f"held-{n}@alice", branch=f"z9hG4bK-held-{n}"))
    assert [r for r in requests(h.sent) if r.method == "INVITE"] == []
    sent = h.answer_probes(PRIMARY)
    assert len([r for r in requests(sent, PRIMARY) if r.method == "INVITE"]) == RELEASE_SLICE
    assert h.core.next_deadline() == h.now  # the next slice is due at once
    sent = h.feed(invite(call_id="new@alice", branch="z9hG4bK-new"))  # read between two slices
    assert [r.call_id for r in requests(sent, PRIMARY)] == ["new@alice"]
    h.core.handle_timers(h.now)
    assert len([r for r in requests(h.core.drain(), PRIMARY) if r.method == "INVITE"]) == RELEASE_SLICE
    h.core.handle_timers(h.now)
    assert len([r for r in requests(h.core.drain(), PRIMARY) if r.method == "INVITE"]) == 50
    deadline = h.core.next_deadline()
    assert deadline is None or deadline > h.now
    assert h.core.contexts == 2 * RELEASE_SLICE + 51
    assert 503 not in statuses(h.sent)


def test_held_requests_released_but_not_yet_sent_get_503_when_the_pair_goes_out_of_service() -> None:
    """40001 between two slices: what waited for the pair is answered, as if still held."""
    h = ha_harness(oos_force=2.0)
    for n in range(RELEASE_SLICE + 10):
        h.feed(invite(call_id=f"held-{n}@alice", branch=f"z9hG4bK-held-{n}"))
    h.answer_probes(PRIMARY)
    assert len(h.core.failover.releasing) == 10
    h.core.failover.out_of_service("demo", h.now)
    assert len(h.core.failover.releasing) == 0
    h.core.handle_timers(h.now)  # the core's step that sends what the 503s left queued
    assert statuses(h.core.drain()).count(503) == 10


def test_s2_answer_outside_alive_codes_is_no_answer() -> None:
    """§2: "A backup in backup mode ... answers with a code outside alive-codes": not active."""
    h = ha_harness()
    h.feed(invite())
    h.answer_probes(PRIMARY, status=503)
    assert active(h) is None
    assert requests(h.sent, PRIMARY)[-1].method == "OPTIONS"  # the INVITE is still held
    assert [e for e in h.core.drain_events() if isinstance(e, MemberBecameActive)] == []


# ====================================================================== §2 the OPTIONS cycle


def test_s2_active_member_probed_every_oos_check() -> None:
    """§2: "if X answers within oos-check, wait for oos-check to expire, then send the next one"."""
    h = ha_harness(oos_check=4.0, oos_force=2.0, primary_active=True)
    assert len(h.probes(PRIMARY)) == 1
    h.run(3.99, alive=PRIMARY)
    assert len(h.probes(PRIMARY)) == 1
    h.run(0.01, alive=PRIMARY)  # t = 4
    assert len(h.probes(PRIMARY)) == 2
    h.run(3.99, alive=PRIMARY)
    assert len(h.probes(PRIMARY)) == 2
    h.run(0.01, alive=PRIMARY)  # t = 8
    assert len(h.probes(PRIMARY)) == 3
    assert h.probes(BACKUP) == []
    assert active(h) == PRIMARY_MEMBER
    assert kinds(h.core.drain_events()) == ["PairUnknown", "MemberBecameActive"]


def test_s2_no_answer_makes_pair_unknown_then_alternates_every_oos_force_until_one_answers() -> None:
    """§2: no answer before oos-check expires: unknown; OPTIONS alternately every oos-force; 40001."""
    h = ha_harness(oos_check=4.0, oos_force=2.0, primary_active=True)
    h.core.drain_events()
    h.advance(4.0)  # the period probe to the primary, which has died
    assert len(h.probes(PRIMARY)) == 2
    h.advance(3.99)
    assert active(h) == PRIMARY_MEMBER
    assert h.probes(BACKUP) == []
    h.advance(0.01)  # t = 8: oos-check expired without an answer
    assert active(h) is None
    assert h.core.drain_events() == [PairUnknown("demo", 8.0, "no-answer", PRIMARY_MEMBER)]
    assert len(h.probes(BACKUP)) == 1  # at once, to the other member
    h.advance(2.0)  # t = 10: the backup silent too (the primary already was): out of service
    # (the primary's silent period was asked again at each quarter: PERIOD_REASKS more probes)
    assert [len(h.probes(PRIMARY)), len(h.probes(BACKUP))] == [3 + PERIOD_REASKS, 1]
    events = h.core.drain_events()
    assert events == [PairOutOfService("demo", 10.0, (PRIMARY_MEMBER, BACKUP_MEMBER))]
    assert events[0].event_id == EVENT_PAIR_UNAVAILABLE == 40001
    h.advance(2.0)  # t = 12: the alternation goes on, to the backup
    assert [len(h.probes(PRIMARY)), len(h.probes(BACKUP))] == [3 + PERIOD_REASKS, 2]
    h.advance(1.0)
    h.answer_probes(BACKUP)  # t = 13: the backup answers: it becomes active
    assert active(h) == BACKUP_MEMBER
    assert h.core.drain_events() == [
        MemberBecameActive("demo", 13.0, BACKUP_MEMBER, "options", None),
        PairRestored("demo", 13.0, BACKUP_MEMBER, 8.0),
    ]
    sent = h.feed(invite())
    assert len(sent_requests(sent, BACKUP)) == 1
    assert requests(sent, PRIMARY) == []


def test_s2_transport_error_on_the_active_members_probe_makes_the_pair_unknown() -> None:
    """§2 (ha decision): a failed OPTIONS settles the period at once; the other member is probed."""
    h = ha_harness(primary_active=True)
    h.advance(5.0)  # period probe outstanding
    h.core.drain_events()
    h.transport_error(PRIMARY)
    assert h.core.drain_events() == [PairUnknown("demo", 5.0, "probe-failed", PRIMARY_MEMBER)]
    assert len(h.probes(BACKUP)) == 1


def test_s2_request_from_backup_while_unknown_makes_it_active_and_releases_held_requests() -> None:
    """§2: a request from the member that is not active makes it active as soon as it answers the
    OPTIONS sent to it at once (unknown too)."""
    h = ha_harness()
    h.feed(invite())
    sent = h.feed(bye_from_backup(), BACKUP)
    assert [r.method for r in requests(sent, ALICE)] == ["BYE"]
    assert sent_requests(sent, BACKUP) == []  # not before it confirms
    assert len(h.pending_probes(BACKUP)) == 1
    sent = h.answer_probes(BACKUP)
    assert became_active(h.core.drain_events()) == [("backup", "request")]
    assert len(sent_requests(sent, BACKUP)) == 1  # the held INVITE


# ====================================================================== failover


def test_issue4_failover_timeout_invite_reprobes_at_once_and_goes_to_the_member_that_answers() -> None:
    """Issue 4: no provisional within failover-timeout: pair unknown now, OPTIONS to the backup now;
    the INVITE waits (sent nowhere) until the backup answers, then goes there on a new branch."""
    h = active_on_primary()
    first = distinct(requests(h.feed(invite()), PRIMARY))
    assert len(first) == 1
    assert (first[0].top_via.branch or "").endswith(".0")
    sent = h.advance(FAILOVER - 0.01)
    assert h.probes(BACKUP) == []
    assert {r.method for r in requests(sent)} == {"INVITE"}  # Timer A retransmission only
    sent = h.advance(0.01)  # t = failover-timeout
    assert h.core.drain_events() == [PairUnknown("demo", FAILOVER, "suspect", PRIMARY_MEMBER)]
    assert [r.method for r in requests(sent, BACKUP)] == ["OPTIONS"]
    assert sent_requests(sent, BACKUP) == []
    sent = h.advance(0.9)
    # The backup does not get the INVITE meanwhile; the primary's branch stays live (it may
    # only be late), retransmitting on Timer A, so it never gets a second copy.
    assert {(r.top_via.branch or "") for r in sent_requests(sent, PRIMARY)} <= {first[0].top_via.branch}
    assert sent_requests(sent, BACKUP) == []
    assert statuses(h.sent) == [100]  # the caller got only 100 Trying
    sent = h.answer_probes(BACKUP)
    assert became_active(h.core.drain_events()) == [("backup", "options")]
    second = sent_requests(sent, BACKUP)
    assert len(second) == 1
    assert (second[0].top_via.branch or "").endswith(".1")
    assert second[0].top_via.branch != first[0].top_via.branch
    assert second[0].call_id == first[0].call_id
    assert (second[0].cseq.seq, second[0].cseq.method) == (first[0].cseq.seq, "INVITE")
    assert second[0].max_forwards == 69
    assert len(second[0].get_all("record-route")) == 1
    assert statuses(h.sent) == [100]
    sent = h.advance(4.0)
    assert sent_requests(sent, PRIMARY) == []  # once given up, the primary's branch is silent


def test_issue4_after_failover_backup_responses_relayed_old_primary_late_responses_dropped() -> None:
    """Issue 4: the backup's 180/200 reach the caller; a late answer on the abandoned branch never does."""
    h = active_on_primary()
    first = failed_over(h)
    second = sent_requests(h.answer_probes(BACKUP), BACKUP)[0]
    assert statuses(h.feed(response_to(second, 100, "Trying"), BACKUP)) == []
    assert statuses(h.feed(response_to(second, 180, "Ringing", to_tag="b1"), BACKUP)) == [180]
    dropped = h.core.counters.stray_responses_dropped
    assert h.feed(response_to(first, 180, "Ringing", to_tag="p1"), PRIMARY) == []
    assert h.feed(response_to(first, 200, "OK", to_tag="p1"), PRIMARY) == []
    assert h.core.counters.stray_responses_dropped == dropped + 2
    sent = h.feed(response_to(second, 200, "OK", to_tag="b1"), BACKUP)
    assert statuses(sent) == [200]
    assert last_response(sent).to.tag == "b1"
    assert statuses(h.sent) == [100, 180, 200]


def test_issue4_transport_error_fails_over_at_once() -> None:
    """Issue 4: a transport error on the forwarded request: same as failover-timeout, immediately."""
    h = active_on_primary()
    h.feed(invite())
    h.advance(0.1)
    sent = h.transport_error(PRIMARY)
    assert h.core.drain_events() == [PairUnknown("demo", 0.1, "suspect", PRIMARY_MEMBER)]
    assert [r.method for r in requests(sent)] == ["OPTIONS"]
    assert only(sent).destination == BACKUP
    assert statuses(h.sent) == [100]
    sent = h.answer_probes(BACKUP)
    forwarded = sent_requests(sent, BACKUP)
    assert len(forwarded) == 1
    assert (forwarded[0].top_via.branch or "").endswith(".1")


@pytest.mark.parametrize("status", [100, 180, 183])
def test_issue4_any_provisional_before_failover_timeout_keeps_the_branch(status: int) -> None:
    """Issue 4 / DESIGN §5: only "without a provisional one" fails an INVITE over, even with a late final."""
    h = active_on_primary()
    forwarded = distinct(requests(h.feed(invite()), PRIMARY))[0]
    h.advance(0.5)
    h.feed(response_to(forwarded, status, "Early"), PRIMARY)
    sent = h.run(20.0, alive=PRIMARY)
    assert h.probes(BACKUP) == []
    assert requests(sent, BACKUP) == []
    assert active(h) == PRIMARY_MEMBER
    assert all(not isinstance(e, PairUnknown) for e in h.core.drain_events())
    # A transport error now changes nothing either: the branch has answered (§17.1.4 note).
    assert h.transport_error(PRIMARY) == []
    sent = h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    assert statuses(sent) == [200]


def test_issue4_a_member_answering_other_requests_is_not_failed_over_for_one_late_answer() -> None:
    """failover-timeout is "without any response from the active member": a primary that answers
    other calls meanwhile is alive; one INVITE whose answer is late (or was lost by a busy
    proxy) keeps its branch, and the pair is not re-probed."""
    h = active_on_primary()
    late = distinct(requests(h.feed(invite(call_id="late", branch="z9hG4bK-late")), PRIMARY))[0]
    h.advance(0.5)
    other = distinct(requests(h.feed(invite(call_id="other", branch="z9hG4bK-other")), PRIMARY))[0]
    h.feed(response_to(other, 180, "Ringing"), PRIMARY)
    sent = h.advance(FAILOVER - 0.5 + 0.01)  # past the late INVITE's failover-timeout
    assert h.probes(BACKUP) == []
    assert requests(sent, BACKUP) == []
    assert h.core.drain_events() == []
    assert active(h) == PRIMARY_MEMBER
    sent = h.feed(response_to(late, 180, "Ringing", to_tag="p2"), PRIMARY)
    assert statuses(sent) == [180]  # relayed: the branch was kept


def test_issue4_a_member_that_stops_answering_is_failed_over_one_window_later() -> None:
    """The other calls' answers only postpone the judgement: once the member is silent for a
    whole failover-timeout, the request is failed over as from a silent member."""
    h = active_on_primary()
    h.feed(invite(call_id="late", branch="z9hG4bK-late"))
    h.advance(0.5)
    other = distinct(requests(h.feed(invite(call_id="other", branch="z9hG4bK-other")), PRIMARY))[0]
    h.feed(response_to(other, 180, "Ringing"), PRIMARY)  # heard at t = 0.5, then silence
    h.advance(FAILOVER - 0.5 + 0.01)
    assert h.core.drain_events() == []  # t = 1.01: heard 0.51 s ago, not judged silent
    sent = h.advance(FAILOVER)  # t = 2.01: the re-judgement, silent since t = 0.5
    events = h.core.drain_events()
    assert kinds(events) == ["PairUnknown"]
    assert [r.method for r in requests(sent, BACKUP)] == ["OPTIONS"]


def test_issue4_an_answer_older_than_the_window_does_not_keep_a_branch() -> None:
    h = active_on_primary()
    other = distinct(requests(h.feed(invite(call_id="other", branch="z9hG4bK-other")), PRIMARY))[0]
    h.feed(response_to(other, 180, "Ringing"), PRIMARY)  # heard at t = 0
    h.advance(0.2)
    h.feed(invite(call_id="late", branch="z9hG4bK-late"))  # sent at t = 0.2, never answered
    sent = h.advance(FAILOVER + 0.01)
    assert kinds(h.core.drain_events()) == ["PairUnknown"]
    assert [r.method for r in requests(sent, BACKUP)] == ["OPTIONS"]


def test_issue4_a_silent_next_hop_outside_the_pairs_is_waited_for() -> None:
    """A request from a SIP server to a phone (its Request-URI): no member to fail over from,
    whatever the failover-timeout; the phone is waited for (Timer B)."""
    h = active_on_primary()
    to_phone = invite(uri="sip:alice@127.0.0.1:5061", via_host="127.0.0.1:5070", call_id="to-phone")
    sent = h.feed(to_phone, PRIMARY)
    assert len(sent_requests(sent, ALICE)) == 1
    sent = h.advance(FAILOVER + 0.01)
    assert h.core.drain_events() == []
    assert requests(sent, BACKUP) == []
    assert {r.method for r in requests(sent, ALICE)} <= {"INVITE"}  # Timer A only


def test_issue4_a_final_response_from_the_primary_is_relayed_not_failed_over() -> None:
    """Issue 4: "never sends a request to a member after that member has responded to it"."""
    h = active_on_primary()
    forwarded = distinct(requests(h.feed(invite(method="MESSAGE", body=b"")), PRIMARY))[0]
    sent = h.feed(response_to(forwarded, 486, "Busy Here"), PRIMARY)
    assert statuses(sent) == [486]
    sent = h.run(30.0, alive=PRIMARY)
    assert [r.method for r in requests(sent)] == ["OPTIONS"] * len(requests(sent))
    assert h.probes(BACKUP) == []


@pytest.mark.parametrize(
    "data",
    [
        invite(method="MESSAGE", body=b"", branch="z9hG4bK-msg"),
        invite(
            method="BYE",
            uri="sip:srv@127.0.0.1:5070",
            to_tag="srv1",
            extra=f"Route: <{RECORD_ROUTE}>\r\n",
            branch="z9hG4bK-bye",
            body=b"",
        ),
    ],
    ids=["MESSAGE", "BYE-in-dialog"],
)
def test_issue4_non_invite_fails_over_the_same_way(data: bytes) -> None:
    """Issue 4: a non-INVITE without any response within failover-timeout is re-sent to the new member."""
    h = active_on_primary()
    first = failed_over(h, data)
    assert statuses(h.sent) == []
    assert [r.method for r in requests(h.advance(0.5), BACKUP)] == ["OPTIONS"]  # Timer E: the probe only
    sent = h.answer_probes(BACKUP)
    second = sent_requests(sent, BACKUP, first.method)
    assert len(second) == 1
    assert second[0].uri == first.uri
    assert (second[0].top_via.branch or "").endswith(".1")
    assert h.feed(response_to(first, 200, "OK", to_tag="p"), PRIMARY) == []  # abandoned branch
    sent = h.feed(response_to(second[0], 200, "OK"), BACKUP)
    assert statuses(sent) == [200]
    assert statuses(h.sent) == [200]


def test_issue4_held_invite_retransmissions_are_absorbed() -> None:
    """Issue 4: the hold absorbs the caller's retransmissions (§17.2.1: the last provisional again)."""
    h = active_on_primary()
    failed_over(h)
    for _ in range(3):
        h.advance(0.5)
        sent = h.feed(invite())
        assert statuses(sent) == [100]
        assert [r.method for r in requests(sent)] == []
    assert h.core.counters.requests_forwarded == 1
    assert h.core.contexts == 1
    forwarded = sent_requests(h.answer_probes(BACKUP), BACKUP)
    assert len(forwarded) == 1


def test_issue4_held_at_start_retransmissions_are_absorbed() -> None:
    """Issue 4: the same while the pair has never had an active member."""
    h = ha_harness()
    h.feed(invite())
    h.advance(0.5)
    sent = h.feed(invite())
    assert statuses(sent) == [100]
    assert [r.method for r in requests(sent)] == []


def test_issue4_hold_limit_gives_503_with_retry_after_once_and_nothing_is_forwarded_after() -> None:
    """Issue 4: no member answers in time: "only then does the caller get 503".

    The bound is the pair going out of service (40001): the suspected primary counts as
    silent, so that is oos-force after the failover, when the backup stayed silent too.
    """
    h = active_on_primary()
    failed_over(h)  # held from t = failover-timeout
    sent = h.advance(5.0 - 0.01)
    assert statuses(sent) == []
    sent = h.advance(0.01)
    assert any(isinstance(e, PairOutOfService) for e in h.core.drain_events())  # both silent: 40001
    assert statuses(sent) == [503]
    refusal = last_response(sent)
    assert refusal.get("retry-after") == str(RETRY_AFTER_SECONDS)
    assert h.core.counters.requests_refused == 1
    assert h.feed(ack_for(refusal)) == []  # §17.2.1: the ACK stops the 503's retransmissions
    h.advance(0.5)
    sent = h.answer_probes(BACKUP)  # a member comes back: nothing left to send it
    assert became_active(h.core.drain_events()) == [("backup", "options")]
    assert sent_requests(sent, BACKUP) == []
    sent = h.run(60.0, alive=BACKUP)
    assert statuses(h.sent) == [100, 503]
    assert sent_requests(h.sent, BACKUP) == []
    assert h.core.counters.requests_refused == 1
    assert h.core.contexts == 0


def test_issue4_hold_limit_non_invite_503() -> None:
    """Issue 4: the same for a non-INVITE (§17.2.2: its final response once, then Timer J)."""
    h = active_on_primary()
    failed_over(h, invite(method="MESSAGE", body=b""))
    sent = h.advance(HOLD)
    assert statuses(sent) == [503]
    assert last_response(sent).get("retry-after") == str(RETRY_AFTER_SECONDS)
    h.run(60.0)
    assert statuses(h.sent) == [503]
    assert h.core.contexts == 0


@pytest.mark.parametrize("when", ["at-start", "after-failover"])
def test_issue4_cancel_of_held_invite_gets_200_and_487_nothing_downstream(when: str) -> None:
    """§16.10: a held INVITE was sent nowhere: the CANCEL is answered here, the INVITE 487."""
    h = ha_harness() if when == "at-start" else active_on_primary()
    if when == "at-start":
        h.feed(invite())
    else:
        failed_over(h)
    before = len(h.sent)
    sent = h.feed(cancel())
    assert sorted(statuses(sent)) == [200, 487]
    by_method = {r.cseq.method: r.status for r in responses(sent, ALICE)}
    assert by_method == {"CANCEL": 200, "INVITE": 487}
    assert [r.method for r in requests(h.sent[before:])] == []
    h.feed(ack_for(last_response(sent)))
    h.advance(0.5)
    sent = h.answer_probes(BACKUP) + h.answer_probes(PRIMARY)
    assert sent_requests(sent, BACKUP) == []
    assert sent_requests(sent, PRIMARY) == []
    assert [r.method for r in requests(h.sent[before:]) if r.method != "OPTIONS"] == []
    h.run(40.0, alive=BACKUP)
    assert h.core.contexts == 0


def test_issue4_failover_goes_at_once_to_a_member_that_took_over_meanwhile() -> None:
    """Issue 4 / §2: the backup took over (request) before failover-timeout: the INVITE goes there
    at once, without a probe; never to both members at once (the primary's branch stops)."""
    h = active_on_primary()
    first = distinct(requests(h.feed(invite()), PRIMARY))[0]
    h.advance(0.5)
    h.feed(bye_from_backup(), BACKUP)
    h.answer_probes(BACKUP)  # it confirms at once
    assert active(h) == BACKUP_MEMBER
    h.advance(0.4)
    assert sent_requests(h.sent, BACKUP) == []
    sent = h.advance(0.1)
    second = sent_requests(sent, BACKUP)
    assert len(second) == 1
    assert second[0].top_via.branch != first.top_via.branch
    assert len(h.probes(BACKUP)) == 1  # the one that confirmed its request
    events = h.core.drain_events()
    assert not any(isinstance(e, PairUnknown) for e in events)  # the primary is not active: no suspicion
    sent = h.advance(2.0)
    assert sent_requests(sent, PRIMARY) == []  # the abandoned branch does not retransmit


def test_issue4_second_failover_goes_back_to_the_primary() -> None:
    """Issue 4: the new member is silent too: re-probed at once again; the request follows the answer."""
    h = active_on_primary()
    failed_over(h)
    second = sent_requests(h.answer_probes(BACKUP), BACKUP)[0]
    h.core.drain_events()
    sent = h.advance(FAILOVER)
    assert h.core.drain_events() == [PairUnknown("demo", 2 * FAILOVER, "suspect", BACKUP_MEMBER)]
    assert [r.method for r in requests(sent, PRIMARY)] == ["OPTIONS"]
    sent = h.answer_probes(PRIMARY)
    third = sent_requests(sent, PRIMARY)
    assert len(third) == 1
    assert (third[0].top_via.branch or "").endswith(".2")
    assert h.feed(response_to(second, 180, "Ringing"), BACKUP) == []  # abandoned
    assert statuses(h.feed(response_to(third[0], 180, "Ringing"), PRIMARY)) == [180]


def test_issue4_failover_timeout_zero_turns_the_timer_off() -> None:
    """DESIGN §5: failover-timeout 0: nothing is re-probed early; a transport error still fails over."""
    h = ha_harness(primary_active=True, failover_timeout=0.0)
    h.feed(invite())
    sent = h.advance(3.0)
    assert h.probes(BACKUP) == []
    assert len(requests(sent, PRIMARY)) >= 2  # Timer A retransmissions go on
    h.transport_error(PRIMARY)
    assert len(h.probes(BACKUP)) == 1
    assert len(sent_requests(h.answer_probes(BACKUP), BACKUP)) == 1


def test_issue4_cancelled_invite_is_not_failed_over() -> None:
    """§9.1: a caller that CANCELled has nothing left to save: the request is not re-sent."""
    h = active_on_primary()
    h.feed(invite())
    h.advance(0.3)
    assert statuses(h.feed(cancel())) == [200]  # hop by hop; no provisional yet: CANCEL waits (§9.1)
    h.advance(FAILOVER)
    assert h.probes(BACKUP) == []
    assert not any(isinstance(e, PairUnknown) for e in h.core.drain_events())
    sent = h.run(TIMER_F + 1.0, alive=PRIMARY)  # Timer B ends the branch (§16.8: a 408)
    assert requests(h.sent, BACKUP) == []
    assert [r.status for r in responses(sent, ALICE)][:1] == [408]
    assert [r.method for r in requests(h.sent, PRIMARY) if r.method == "CANCEL"] == []


def test_issue4_timer_c_while_held_answers_once_and_nothing_is_forwarded_after() -> None:
    """§16.8 Timer C bounds a held INVITE too; a member found afterwards gets nothing, no second answer."""
    h = ha_harness(primary_active=True, timer_c=5.0)
    h.core.drain_events()
    failed_over(h)
    sent = h.advance(4.0)  # t = 5: Timer C
    assert statuses(sent) == [408]
    h.feed(ack_for(last_response(sent)))
    sent = h.answer_probes(BACKUP)
    assert became_active(h.core.drain_events()) == [("backup", "options")]
    assert sent_requests(sent, BACKUP) == []
    h.run(60.0, alive=BACKUP)
    assert statuses(h.sent) == [100, 408]
    assert sent_requests(h.sent, BACKUP) == []
    assert h.core.contexts == 0


def test_issue4_timer_c_while_held_then_hold_limit_sends_no_second_answer() -> None:
    """Issue 4: "exactly once": the hold-limit of a request already answered (Timer C) is silent."""
    h = ha_harness(primary_active=True, timer_c=5.0)
    failed_over(h)
    h.advance(4.0)
    assert statuses(h.sent) == [100, 408]
    h.feed(ack_for(last_response(h.sent)))
    h.advance(HOLD)
    assert statuses(h.sent) == [100, 408]
    assert not any(h.core._held.values())


def test_issue4_transport_error_only_fails_what_went_to_that_destination() -> None:
    """§17.1.4: the error concerns one destination: the backup's probe is left alone."""
    h = active_on_primary()
    h.feed(invite())
    h.transport_error(PRIMARY)
    assert len(h.probes(BACKUP)) == 1
    assert h.transport_error(PRIMARY) == []  # nothing left toward the primary
    sent = h.answer_probes(BACKUP)  # the backup's probe still counts
    assert len(sent_requests(sent, BACKUP)) == 1


def test_start_without_a_monitor_does_nothing() -> None:
    """DESIGN §6: a core without a monitor (static next hop) has no probes and no HA events."""
    h = harness()
    h.core.start(0.0)
    assert h.core.drain() == []
    assert h.core.drain_events() == []
    assert h.core.next_deadline() is None


# ====================================================================== §2 requests from members


@pytest.mark.parametrize(
    "data",
    [
        bye_from_backup(),
        invite(
            uri="sip:alice@127.0.0.1:5061",
            via_host="127.0.0.1:5080",
            branch="z9hG4bK-backup-inv",
            call_id="out@backup",
        ),
    ],
    ids=["in-dialog-BYE", "INVITE-to-endpoint"],
)
def test_s2_request_from_backup_makes_it_active_at_once(data: bytes) -> None:
    """§2: "A request that arrives from the member that is not active makes that member active at once"
    (one OPTIONS round trip: it is probed at once and switched to when it answers alive)."""
    h = active_on_primary()
    sent = h.feed(data, BACKUP)
    assert h.core.drain_events() == []
    assert active(h) == PRIMARY_MEMBER
    assert len(h.pending_probes(BACKUP)) == 1
    sent += h.answer_probes(BACKUP)
    assert h.core.drain_events() == [
        MemberBecameActive("demo", 0.0, BACKUP_MEMBER, "request", PRIMARY_MEMBER),
    ]
    assert active(h) == BACKUP_MEMBER
    assert len(distinct(requests(sent, ALICE))) == 1  # §3 rule 3: forwarded to its Request-URI
    sent = h.feed(invite())
    assert len(sent_requests(sent, BACKUP)) == 1
    assert requests(sent, PRIMARY) == []


def test_s2_request_from_member_ip_with_another_port_does_not_switch() -> None:
    """§2: "only when its source IP equals the member's IP and its port equals the member's port"."""
    h = active_on_primary()
    other = Address("UDP", "127.0.0.1", 5081)
    h.feed(bye_from_backup(via_host="127.0.0.1:5081"), other)
    assert h.core.drain_events() == []
    assert active(h) == PRIMARY_MEMBER
    sent = h.feed(invite())
    assert len(sent_requests(sent, PRIMARY)) == 1


def test_s3_keepalive_options_from_backup_does_not_switch() -> None:
    """§3 rule 1: a keepalive OPTIONS to the proxy itself is answered here and is not pair traffic."""
    h = active_on_primary()
    keepalive = invite(
        method="OPTIONS", uri="sip:127.0.0.1:5060", via_host="127.0.0.1:5080", branch="z9hG4bK-ka", body=b""
    )
    sent = h.feed(keepalive, BACKUP)
    assert statuses(sent, BACKUP) == [200]
    assert h.core.drain_events() == []
    assert active(h) == PRIMARY_MEMBER


def test_s3_keepalive_while_no_pair_is_active_gets_503() -> None:
    """§3 rule 1: "503 otherwise" (answered at once, never held)."""
    h = ha_harness()
    sent = h.feed(invite(method="OPTIONS", uri="sip:127.0.0.1:5060", body=b""))
    assert statuses(sent) == [503]
    assert last_response(sent).get("retry-after") == str(RETRY_AFTER_SECONDS)


def test_task_split_brain_keeps_the_current_active_member() -> None:
    """Issue: "Split brain: keep the current active member while it keeps answering"."""
    h = active_on_primary()
    h.feed(bye_from_backup(), BACKUP)
    h.answer_probes(BACKUP)
    assert active(h) == BACKUP_MEMBER
    h.core.drain_events()
    h.advance(0.5)
    from_primary = invite(
        method="BYE",
        uri="sip:alice@127.0.0.1:5061",
        to_tag="dlg2",
        via_host="127.0.0.1:5070",
        branch="z9hG4bK-primary-bye",
        call_id="dlg-2@primary",
        body=b"",
    )
    sent = h.feed(from_primary, PRIMARY)
    assert len(distinct(requests(sent, ALICE))) == 1
    assert h.core.drain_events() == [SplitBrain("demo", 0.5, True, BACKUP_MEMBER, PRIMARY_MEMBER)]
    assert active(h) == BACKUP_MEMBER
    h.run(12.0, alive=BACKUP)  # the backup keeps answering its OPTIONS
    assert active(h) == BACKUP_MEMBER
    assert len(sent_requests(h.feed(invite()), BACKUP)) == 1


# ====================================================================== §2 unknown and out of service


def test_s2_new_requests_while_unknown_are_held_and_after_40001_get_503_at_once() -> None:
    """Issue 4: held while probing (not refused); §2: with no active member (40001), 503 + Retry-After."""
    h = active_on_primary()
    h.advance(10.0)  # the probe at 5 went unanswered: unknown at 10
    assert active(h) is None
    assert kinds(h.core.drain_events()) == ["PairUnknown"]
    h.advance(0.5)
    sent = h.feed(invite(branch="z9hG4bK-held", call_id="held@alice"))
    assert statuses(sent) == [100]  # held, not refused
    assert [r.method for r in requests(sent)] == []
    sent = h.advance(4.5)  # t = 15: the backup silent too: out of service, the held INVITE refused
    assert kinds(h.core.drain_events()) == ["PairOutOfService"]
    held = [r for r in responses(sent, ALICE) if r.call_id == "held@alice"]
    assert [r.status for r in held] == [503]
    assert held[0].get("retry-after") == str(RETRY_AFTER_SECONDS)
    sent = h.feed(invite(branch="z9hG4bK-late", call_id="late@alice"))
    assert statuses(sent) == [100, 503]
    assert last_response(sent).get("retry-after") == str(RETRY_AFTER_SECONDS)
    sent = h.feed(invite(method="MESSAGE", branch="z9hG4bK-m", call_id="m@alice", body=b""))
    assert statuses(sent) == [503]


def test_s2_held_request_released_when_an_out_of_service_pair_is_restored() -> None:
    """Issue 4: a request held while probing goes to the member that answers; at 40001, 503."""
    h = ha_harness(oos_force=2.0)
    h.feed(invite())
    sent = h.answer_probes(PRIMARY)  # the first probe is answered: the held INVITE goes there
    assert len(sent_requests(sent, PRIMARY)) == 1
    h2 = ha_harness(oos_force=2.0)
    h2.feed(invite())
    sent = h2.advance(4.0)  # both silent: 40001 at 4, the held INVITE refused then
    assert kinds(h2.core.drain_events()) == ["PairUnknown", "PairOutOfService"]
    assert statuses(h2.sent) == [100, 503]
    sent = h2.answer_probes(BACKUP)
    assert kinds(h2.core.drain_events()) == ["MemberBecameActive", "PairRestored"]
    sent = h2.feed(invite(branch="z9hG4bK-new", call_id="new@alice"))
    assert len(sent_requests(sent, BACKUP)) == 1


# ====================================================================== §3 routing after a switch


def test_s3_rule2_in_dialog_bye_to_old_primary_contact_reaches_the_backup_after_a_switch() -> None:
    """§3 rule 2: "in-dialog requests that target the old primary's Contact reach the new primary"."""
    h = active_on_primary()
    failed_over(h)
    h.answer_probes(BACKUP)
    assert active(h) == BACKUP_MEMBER
    bye = invite(
        method="BYE",
        uri="sip:x@127.0.0.1:5070",
        to_tag="srv1",
        extra=f"Route: <{RECORD_ROUTE}>\r\n",
        branch="z9hG4bK-bye-old",
        call_id="old@alice",
        body=b"",
    )
    sent = h.feed(bye)
    forwarded = sent_requests(sent, BACKUP, "BYE")
    assert len(forwarded) == 1
    assert forwarded[0].uri == "sip:x@127.0.0.1:5070"
    assert forwarded[0].get("route") is None
    assert requests(sent, PRIMARY) == []


# ====================================================================== §2 oos-check = 0


def test_s2_oos_check_zero_no_probes_primary_active_request_from_backup_switches() -> None:
    """§2: "0 turns OPTIONS monitoring off": primary active from the start, switched by a request."""
    h = ha_harness(oos_check=0.0)
    assert h.sent == []
    assert h.core.drain_events() == [MemberBecameActive("demo", 0.0, PRIMARY_MEMBER, "start", None)]
    assert active(h) == PRIMARY_MEMBER
    assert h.core.next_deadline() is None
    sent = h.feed(invite())
    assert len(sent_requests(sent, PRIMARY)) == 1
    h.advance(600.0)
    assert h.probes() == []
    h.feed(bye_from_backup(), BACKUP)
    assert became_active(h.core.drain_events()) == [("backup", "request")]
    sent = h.feed(invite(branch="z9hG4bK-2", call_id="call-2@alice"))
    assert len(sent_requests(sent, BACKUP)) == 1
    assert h.probes() == []


# ====================================================================== no leaks


def _is_idle(h: HaHarness) -> None:
    core = h.core
    assert core.contexts == 0
    assert set(core.txn.transactions) <= set(core._probes)  # only live probe transactions
    assert not any(core._held.values())
    assert core._by_client == {}
    assert core._abandoned == {}


def test_no_leaks_after_calls_failovers_and_hold_expiries() -> None:
    """Every context, held request, abandoned branch and transaction goes once its timers have run."""
    h = active_on_primary()
    # 1. A call that completes on the primary (200, ACK, BYE).
    forwarded = distinct(requests(h.feed(invite(branch="z9hG4bK-c1", call_id="c1@alice")), PRIMARY))[0]
    h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    # 2. A call failed over to the backup, answered there.
    h.advance(0.1)
    first = failed_over(h, invite(branch="z9hG4bK-c2", call_id="c2@alice"))
    second = sent_requests(h.answer_probes(BACKUP), BACKUP)[0]
    h.feed(response_to(second, 200, "OK"), BACKUP)
    h.feed(response_to(first, 200, "OK", to_tag="late"), PRIMARY)
    # 3. A MESSAGE failed over, then its hold expires (nobody answers).
    h.run(1.0, alive=BACKUP)
    failed_over(h, invite(method="MESSAGE", branch="z9hG4bK-c3", call_id="c3@alice", body=b""), BACKUP)
    # 4. A held INVITE cancelled, and one that expires.
    h.feed(invite(branch="z9hG4bK-c4", call_id="c4@alice"))
    h.feed(cancel(branch="z9hG4bK-c4", call_id="c4@alice"))
    h.feed(invite(branch="z9hG4bK-c5", call_id="c5@alice"))
    h.advance(HOLD + 1.0)
    finals = {(r.call_id, r.cseq.method, r.status) for r in responses(h.sent, ALICE) if r.status >= 200}
    assert finals == {
        ("c1@alice", "INVITE", 200),
        ("c2@alice", "INVITE", 200),
        ("c3@alice", "MESSAGE", 503),
        ("c4@alice", "CANCEL", 200),
        ("c4@alice", "INVITE", 487),
        ("c5@alice", "INVITE", 503),
    }
    # Past every timer (Timer C, L/M, J, abandoned branches), with the backup answering.
    h.run(TIMER_C + 10.0, alive=BACKUP)
    _is_idle(h)


def test_no_leaks_with_the_pair_out_of_service() -> None:
    """Held requests of a dead pair end in 503; nothing but probe transactions remains."""
    h = active_on_primary()
    failed_over(h)
    h.feed(invite(method="MESSAGE", branch="z9hG4bK-m", call_id="m@alice", body=b""))
    h.run(TIMER_C + 10.0)
    _is_idle(h)
    assert len(h.core._probes) >= 1  # probing goes on


# ====================================================================== known bugs


def test_issue4_bug_failover_of_a_non_invite_is_bounded_in_time() -> None:
    """Issue 4: "forwards it to whichever member becomes active, bounded in time; only then ... 503"."""
    h = active_on_primary()
    h.feed(invite(method="MESSAGE", body=b""))
    h.run(120.0, alive=PRIMARY)  # the primary answers every OPTIONS, never the MESSAGE
    copies = sent_requests(h.sent, PRIMARY, "MESSAGE")
    assert statuses(h.sent) != [], f"no final response after 120 s; {len(copies)} copies sent"
    assert h.core.contexts == 0


def test_issue4_bug_never_sends_a_request_to_a_member_after_it_responded() -> None:
    """Issue 4: "It never sends a request to a member after that member has responded to it"."""
    h = active_on_primary()
    first = failed_over(h)
    h.advance(0.5)
    assert h.feed(response_to(first, 100, "Trying"), PRIMARY) == []  # late, on the abandoned branch
    h.run(10.0, alive=PRIMARY)  # the backup stays silent; the primary answers its next OPTIONS
    resent = [r for r in sent_requests(h.sent, PRIMARY) if r.top_via.branch != first.top_via.branch]
    assert resent == []


def test_issue4_bug_late_2xx_on_abandoned_branch_is_never_relayed() -> None:
    """Issue 4: "a late response from the old primary on the abandoned branch is dropped (not relayed)"."""
    h = active_on_primary()
    first = failed_over(h)
    second = sent_requests(h.answer_probes(BACKUP), BACKUP)[0]
    h.feed(response_to(second, 180, "Ringing", to_tag="b"), BACKUP)
    h.run(40.0, alive=BACKUP)  # still ringing on the backup
    assert h.core.contexts == 1
    sent = h.feed(response_to(first, 200, "OK", to_tag="p"), PRIMARY)
    assert statuses(sent) == []


def test_issue4_bug_oos_check_zero_slow_primary_call_is_not_lost() -> None:
    """Issue 4 "No lost calls": failover must not make things worse when no other member can be found."""
    h = ha_harness(oos_check=0.0)
    forwarded = distinct(requests(h.feed(invite()), PRIMARY))[0]
    h.advance(1.5)
    h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)
    h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    h.advance(20.0)
    assert statuses(h.sent)[:3] == [100, 180, 200]
    assert 503 not in statuses(h.sent)


def test_ringing_call_on_a_dead_member_is_reoffered_to_the_member_that_took_over() -> None:
    """An INVITE ringing on a member that is gone (ICMP is the last heard of it) moves: the dead
    branch gets a CANCEL, a new branch goes to the backup once it is active (serial forking,
    RFC 3261 §16.6/§16.7), and the caller gets the backup's answers: the call is saved."""
    h = active_on_primary()
    sent = h.feed(invite())
    forwarded = distinct(requests(sent, PRIMARY))[0]
    h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)
    assert statuses(h.sent) == [100, 180]
    h.advance(5.0)  # the next oos-check probe to the primary goes out
    h.core.transport_error(PRIMARY, h.now)  # ... and the primary is gone (ICMP)
    sent = h.core.drain()
    h.sent.extend(sent)
    assert kinds(h.core.drain_events())[:1] == ["PairUnknown"]
    assert statuses(h.sent) == [100, 180]  # nothing to do before a member takes over
    sent += h.answer_probes(BACKUP)  # the backup takes over
    assert statuses(h.sent) == [100, 180]
    cancels = [r for r in requests(sent, PRIMARY) if r.method == "CANCEL"]
    assert len(cancels) == 1
    assert cancels[0].top_via.branch == forwarded.top_via.branch
    moved = sent_requests(sent, BACKUP)
    assert len(moved) == 1
    assert moved[0].call_id == forwarded.call_id
    assert moved[0].top_via.branch != forwarded.top_via.branch
    assert h.core.counters.reoffered == 1
    h.feed(response_to(moved[0], 180, "Ringing", to_tag="b1"), BACKUP)
    h.feed(response_to(moved[0], 200, "OK", to_tag="b1"), BACKUP)
    assert statuses(h.sent) == [100, 180, 180, 200]
    # A late answer of the old branch (its 487 to our CANCEL) never reaches the caller.
    h.feed(response_to(forwarded, 487, "Request Terminated"), PRIMARY)
    assert statuses(h.sent) == [100, 180, 180, 200]


def test_ringing_call_on_a_silent_member_ends_with_408_and_a_cancel_not_a_second_call() -> None:
    """A member that is only silent (a partition: it may still have the call, and answer it)
    is not sent a second copy elsewhere: when the backup takes over, the caller gets the 408
    Timer C would give, at once, and the branch a CANCEL (no double call)."""
    h = active_on_primary()
    sent = h.feed(invite())
    forwarded = distinct(requests(sent, PRIMARY))[0]
    h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)
    h.advance(10.0)  # the probe sent at 5 is not answered by 10: unknown (no transport error)
    assert kinds(h.core.drain_events())[:1] == ["PairUnknown"]
    sent = h.answer_probes(BACKUP)
    assert statuses(h.sent) == [100, 180, 408]
    cancels = [r for r in requests(sent, PRIMARY) if r.method == "CANCEL"]
    assert len(cancels) == 1
    assert cancels[0].top_via.branch == forwarded.top_via.branch
    assert sent_requests(sent, BACKUP) == []


def test_issue4_ringing_call_survives_a_false_alarm_on_its_member() -> None:
    """An OPTIONS answer late by a moment makes the pair unknown; when that member's answer
    then arrives, its ringing calls go on (nothing confirmed its loss)."""
    h = active_on_primary()
    sent = h.feed(invite())
    forwarded = distinct(requests(sent, PRIMARY))[0]
    h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)
    h.advance(10.0)  # the probe sent at 5 is not answered by 10: unknown
    assert kinds(h.core.drain_events())[:1] == ["PairUnknown"]
    h.advance(0.5)
    h.answer_probes(PRIMARY)  # its answer arrives late: a false alarm
    assert active(h) == PRIMARY_MEMBER
    h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
    assert statuses(h.sent) == [100, 180, 200]


def test_while_sipha_is_behind_failover_timeout_suspects_nobody() -> None:
    """docs/design.md §3, overload: behind on its own receive queue, sipha does not take its own
    lateness for a silent member; once it caught up, failover-timeout judges again."""
    h = active_on_primary()
    assert requests(h.feed(invite()), PRIMARY)
    h.core.overloaded = True
    h.advance(FAILOVER * 3)
    assert h.core.drain_events() == []
    assert h.probes(BACKUP) == []
    h.core.overloaded = False
    h.advance(FAILOVER)
    [event] = h.core.drain_events()
    assert isinstance(event, PairUnknown)
    assert event.reason == "suspect"
