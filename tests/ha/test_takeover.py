"""The takeover window and confirmed claims, on a fake clock (now = 100 at start, oos-check 5, oos-force 2).

With takeover-timeout > 0 an active pair that loses its member holds its requests while both
members are probed every TAKEOVER_PROBE_INTERVAL; 40001 comes only when the window ends with no
member.  A request from the member that is not active is a claim: that member is probed and
becomes active only if it answers alive.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from sipha.ha import (
    TAKEOVER_PROBE_INTERVAL,
    ClaimRejected,
    MemberBecameActive,
    Monitor,
    MonitorSettings,
    Output,
    PairOutOfService,
    PairRestored,
    PairUnknown,
    Probe,
    SplitBrain,
    State,
)
from sipha.ha.pair import CLAIM_REPORT_INTERVAL
from tests.ha.support import BACKUP, CHECK, FORCE, PAIR, PRIMARY, Harness, kinds, of_type, settings

TAKEOVER = 5.0


def active_at_105(takeover: float = TAKEOVER) -> Harness:
    """Active on the primary since 100, its second probe sent at 105 (answer due before 110)."""
    harness = Harness.started(takeover=takeover)
    harness.answer(harness.last_probe(PRIMARY))
    harness.advance(CHECK)
    assert harness.last_probe().sent_at == 105.0
    return harness


def roles(probes: list[Probe]) -> list[str]:
    return [probe.member.role for probe in probes]


def probes_since(harness: Harness, when: float) -> list[Probe]:
    return [probe for probe in harness.probes() if probe.sent_at >= when]


# ------------------------------------------------------------------ defaults and settings


def test_the_window_is_on_by_default_and_needs_monitoring() -> None:
    assert MonitorSettings().takeover_timeout == 5.0
    assert MonitorSettings().takeover
    assert not MonitorSettings(takeover_timeout=0.0).takeover
    assert not MonitorSettings(oos_check=0.0).takeover  # no probe could end it
    assert MonitorSettings(takeover_timeout=32.0).takeover


@pytest.mark.parametrize("takeover", [-0.1, 32.5])
def test_takeover_timeout_range(takeover: float) -> None:
    with pytest.raises(ValueError, match="takeover-timeout"):
        MonitorSettings(takeover_timeout=takeover)


# ------------------------------------------------------------------ the window, end to end


def test_no_member_answers_probes_both_every_quarter_second_then_40001_exactly_at_the_end() -> None:
    harness = active_at_105()
    harness.at(109.9)  # asked again at each quarter of the period (tests/ha/test_loss.py)
    out = harness.at(110.0)  # the primary stayed silent: lost at 110
    # Both at once, the member that was not active first.
    assert kinds(out) == ["PairUnknown", "Probe:backup", "Probe:primary"]
    unknown = of_type(out, PairUnknown)[0]
    assert (unknown.reason, unknown.member, unknown.at, unknown.hold) == ("no-answer", PRIMARY, 110.0, 5.0)
    assert "holding its requests for up to 5 s" in unknown.message
    monitor = harness.monitor
    assert (monitor.state, monitor.active, monitor.status().state) == (State.TAKEOVER, None, "takeover")
    assert monitor.next_deadline() == 110.0 + TAKEOVER_PROBE_INTERVAL

    out = harness.at(114.999)
    assert of_type(out, PairOutOfService) == []  # not before the window ends
    window = probes_since(harness, 110.0)
    rounds = [window[i : i + 2] for i in range(0, len(window), 2)]
    assert [r[0].sent_at for r in rounds] == [110.0 + 0.25 * i for i in range(20)]
    assert all(roles(r) == ["backup", "primary"] and r[0].sent_at == r[1].sent_at for r in rounds)
    assert monitor.state is State.TAKEOVER
    assert monitor.next_deadline() == 115.0

    out = harness.at(115.0)
    # The window's end comes first: 40001, then the oos-force alternation from the other member.
    assert kinds(out) == ["PairOutOfService", "Probe:backup"]
    assert of_type(out, PairOutOfService)[0].at == 110.0 + TAKEOVER
    assert monitor.status().state == "out-of-service"
    assert kinds(harness.at(115.0 + FORCE)) == ["Probe:primary"]
    assert kinds(harness.at(115.0 + 2 * FORCE)) == ["Probe:backup"]
    assert len(of_type(harness.events(), PairOutOfService)) == 1
    # A member answering later restores the pair; the outage counts from the loss.
    out = harness.answer(harness.last_probe(BACKUP))
    assert kinds(out) == ["MemberBecameActive:backup", "PairRestored:backup"]
    assert of_type(out, PairRestored)[0].down_since == 110.0


def test_the_backup_answering_within_the_window_becomes_active_without_40001() -> None:
    harness = active_at_105()
    harness.at(110.0)
    harness.at(111.3)  # the backup took over 1.3 s after the loss; its last probe went out at 111.25
    probe = harness.last_probe(BACKUP)
    assert probe.sent_at == 111.25
    out = harness.answer(probe)
    assert kinds(out) == ["MemberBecameActive:backup"]
    event = of_type(out, MemberBecameActive)[0]
    assert (event.member, event.reason, event.at) == (BACKUP, "options", 111.3)
    monitor = harness.monitor
    assert (monitor.state, monitor.active) == (State.ACTIVE, BACKUP)
    assert monitor.status().counters.switchovers == 1
    # The oos-check cycle restarts on it; the window is over (no deadline at 115).
    assert monitor.next_deadline() == pytest.approx(111.3 + CHECK)
    assert kinds(harness.at(111.3 + CHECK)) == ["Probe:backup"]
    harness.answer(harness.last_probe(BACKUP))
    harness.at(116.3 + CHECK)  # well past the window's end (115), the backup still answering
    assert of_type(harness.events(), PairOutOfService) == []
    assert harness.monitor.active == BACKUP


def test_the_lost_primary_answering_its_re_probe_is_active_again() -> None:
    harness = active_at_105()
    harness.at(110.0)
    harness.at(110.6)  # probed again at 110.25 and 110.5: the silence was a lost datagram
    out = harness.answer(harness.last_probe(PRIMARY))
    assert kinds(out) == ["MemberBecameActive:primary"]
    assert of_type(out, MemberBecameActive)[0].reason == "options"
    assert harness.monitor.active == PRIMARY
    assert harness.monitor.status().counters.switchovers == 0
    harness.answer(harness.last_probe(BACKUP), 503)  # the backup, in backup mode: nothing
    harness.at(110.6 + CHECK)
    harness.answer(harness.last_probe(PRIMARY))
    harness.at(110.6 + 2 * CHECK)  # past the window's end (115): it closed with the answer
    assert of_type(harness.events(), PairOutOfService) == []
    assert harness.monitor.active == PRIMARY


def test_the_late_answer_of_the_lost_members_period_probe_ends_the_window_too() -> None:
    harness = active_at_105()
    late = harness.last_probe(PRIMARY)
    harness.at(110.1)
    assert harness.monitor.state is State.TAKEOVER
    out = harness.answer(late)
    assert kinds(out) == ["MemberBecameActive:primary"]
    assert harness.monitor.next_deadline() == pytest.approx(110.1 + CHECK)


def test_a_failed_probe_of_the_backup_does_not_stop_the_fast_probing() -> None:
    harness = active_at_105()
    harness.at(110.0)
    # The backup is still binding its port: ICMP port unreachable, at once, for two rounds.
    assert harness.fail(harness.last_probe(BACKUP)) == []
    assert harness.monitor.state is State.TAKEOVER
    assert harness.monitor.next_deadline() == 110.25
    assert kinds(harness.at(110.25)) == ["Probe:backup", "Probe:primary"]
    assert harness.answer(harness.last_probe(BACKUP), 503) == []  # not alive yet: nothing either
    assert kinds(harness.at(110.5)) == ["Probe:backup", "Probe:primary"]
    out = harness.answer(harness.last_probe(BACKUP))
    assert kinds(out) == ["MemberBecameActive:backup"]
    assert harness.monitor.status().counters.probes_failed == 2


def test_suspicions_during_the_window_change_nothing() -> None:
    harness = active_at_105()
    harness.at(110.1)
    assert harness.suspect(PRIMARY) == []
    assert harness.suspect(BACKUP) == []
    assert harness.monitor.state is State.TAKEOVER
    assert harness.monitor.next_deadline() == 110.25


def lose_by_silence(harness: Harness) -> list[Output]:
    harness.at(109.9)  # asked again at each quarter of the period (tests/ha/test_loss.py)
    return harness.at(110.0)


def lose_by_not_alive(harness: Harness) -> list[Output]:
    harness.at(106.0)
    return harness.answer(harness.last_probe(PRIMARY), 503)


def lose_by_failure(harness: Harness) -> list[Output]:
    harness.at(105.2)
    return harness.fail(harness.last_probe(PRIMARY))


def lose_by_suspicion(harness: Harness) -> list[Output]:
    harness.at(106.5)
    return harness.suspect(PRIMARY)


@pytest.mark.parametrize(
    ("lose", "reason"),
    [
        (lose_by_silence, "no-answer"),
        (lose_by_not_alive, "not-alive"),
        (lose_by_failure, "probe-failed"),
        (lose_by_suspicion, "suspect"),
    ],
)
def test_every_loss_opens_a_window_of_takeover_timeout(
    lose: Callable[[Harness], list[Output]], reason: str
) -> None:
    harness = active_at_105(takeover=1.1)
    out = lose(harness)
    lost_at = harness.now
    assert kinds(out) == ["PairUnknown", "Probe:backup", "Probe:primary"]
    assert (of_type(out, PairUnknown)[0].reason, of_type(out, PairUnknown)[0].hold) == (reason, 1.1)
    harness.at(lost_at + 1.0)
    # The window's end is not on the probe grid: next_deadline() names it.
    assert harness.monitor.next_deadline() == pytest.approx(lost_at + 1.1)
    assert of_type(harness.out, PairOutOfService) == []
    out = harness.at(lost_at + 1.1)
    assert kinds(out) == ["PairOutOfService", "Probe:backup"]
    assert of_type(out, PairOutOfService)[0].at == pytest.approx(lost_at + 1.1)


def test_a_split_brain_ends_when_the_window_opens() -> None:
    harness = Harness.started(takeover=TAKEOVER)
    harness.advance(FORCE + 0.5)
    harness.answer(harness.last_probe(PRIMARY))
    harness.answer(harness.last_probe(BACKUP))  # both alive: split brain, the primary kept
    assert harness.monitor.split_brain
    out = harness.suspect(PRIMARY)
    assert kinds(out) == ["SplitBrain", "PairUnknown", "Probe:backup", "Probe:primary"]
    assert not of_type(out, SplitBrain)[0].started


def test_without_a_window_the_seed_algorithm_runs() -> None:
    harness = active_at_105(takeover=0.0)
    harness.at(109.9)
    out = harness.at(110.0)
    assert kinds(out) == ["PairUnknown", "Probe:backup"]
    assert of_type(out, PairUnknown)[0].hold is None
    assert "holding" not in of_type(out, PairUnknown)[0].message
    assert harness.monitor.state is State.UNKNOWN
    assert kinds(harness.at(110.0 + FORCE)) == ["PairOutOfService", "Probe:primary"]


def test_the_monitor_of_several_pairs_wakes_up_for_the_window() -> None:
    monitor = Monitor([(PRIMARY, BACKUP)], settings(takeover=1.1))
    monitor.start(0.0)
    monitor.probe_answered(of_type(monitor.drain(), Probe)[0], 200, 0.0)
    monitor.suspect(PRIMARY, 1.0)
    monitor.drain()
    monitor.tick(2.0)  # probes at 1.25, 1.5, 1.75 and 2.0 are due: one round per tick
    assert monitor.next_deadline() == pytest.approx(2.1)
    monitor.tick(2.1)
    assert kinds(monitor.drain()) == ["Probe:backup", "Probe:primary", "PairOutOfService", "Probe:backup"]


# ------------------------------------------------------------------ claims: requests from the other member


def test_a_request_from_the_backup_is_confirmed_by_its_probe_before_the_switch() -> None:
    harness = active_at_105()
    harness.at(106.0)
    out = harness.request(BACKUP)
    assert kinds(out) == ["Probe:backup"]
    assert harness.last_probe(BACKUP).sent_at == 106.0
    assert (harness.monitor.state, harness.monitor.active) == (State.ACTIVE, PRIMARY)
    harness.at(106.02)
    out = harness.answer(harness.last_probe(BACKUP))
    assert kinds(out) == ["MemberBecameActive:backup"]
    event = of_type(out, MemberBecameActive)[0]
    assert (event.member, event.reason, event.previous, event.at) == (BACKUP, "request", PRIMARY, 106.02)
    assert "sent a request" in event.message
    assert harness.monitor.status().counters.switchovers == 1
    assert harness.monitor.next_deadline() == pytest.approx(106.02 + CHECK)


def test_a_claim_answered_outside_alive_codes_is_rejected_and_reported() -> None:
    harness = active_at_105()
    out = harness.claim(BACKUP, 503)
    assert kinds(out) == ["Probe:backup", "ClaimRejected"]
    rejected = of_type(out, ClaimRejected)[0]
    assert (rejected.member, rejected.active, rejected.claims) == (BACKUP, PRIMARY, 1)
    assert PAIR in rejected.message
    assert "not followed" in rejected.message
    assert rejected.event_id is None
    status = harness.monitor.status()
    assert (status.active, status.counters.claims_rejected) == (PRIMARY, 1)
    assert status.as_dict()["claims_rejected"] == 1
    assert status.counters.switchovers == 0


def test_a_claim_confirmed_in_the_window_activates_its_member_by_request() -> None:
    harness = active_at_105()
    harness.at(110.1)
    out = harness.claim(BACKUP)
    assert kinds(out) == ["Probe:backup", "MemberBecameActive:backup"]
    assert of_type(out, MemberBecameActive)[0].reason == "request"
    assert of_type(out, MemberBecameActive)[0].previous is None  # none was active in the window


def test_a_claim_failing_in_the_window_is_no_rejection_and_probing_goes_on() -> None:
    harness = active_at_105()
    harness.at(110.1)
    assert harness.claim(BACKUP, 503) == [harness.last_probe(BACKUP)]
    assert harness.monitor.state is State.TAKEOVER
    assert harness.monitor.status().counters.claims_rejected == 0
    assert kinds(harness.at(110.25)) == ["Probe:backup", "Probe:primary"]


def test_claims_of_both_members_while_unknown_are_probed_each() -> None:
    harness = Harness.started(takeover=TAKEOVER)
    harness.at(100.5)
    assert kinds(harness.request(BACKUP) + harness.request(PRIMARY)) == ["Probe:backup", "Probe:primary"]
    out = harness.answer(harness.last_probe(PRIMARY))
    assert of_type(out, MemberBecameActive)[0].reason == "request"
    # The backup's claim is answered after: it sent a request and answers alive: it switches.
    out = harness.answer(harness.last_probe(BACKUP))
    event = of_type(out, MemberBecameActive)[0]
    assert (event.member, event.previous) == (BACKUP, PRIMARY)


def keep_the_primary_answering(harness: Harness) -> None:
    """The active primary answers each of its period probes (a repeated answer is ignored)."""
    harness.answer(harness.last_probe(PRIMARY))


def test_forged_requests_cost_one_probe_per_interval_and_never_switch() -> None:
    harness = Harness.started(takeover=TAKEOVER)
    harness.answer(harness.last_probe(PRIMARY))  # active on the primary at 100
    # 50 requests a second for 2 s with the backup's address; the backup never answers.
    for i in range(100):
        harness.at(100.0 + i * 0.02)
        harness.request(BACKUP)
    claims = [probe for probe in harness.probes() if probe.member == BACKUP]
    assert len(claims) == 8  # 2 s / 0.25 s; each interval starts with the next request
    gaps = [b.sent_at - a.sent_at for a, b in itertools.pairwise(claims)]
    assert min(gaps) >= TAKEOVER_PROBE_INTERVAL
    monitor = harness.monitor
    assert (monitor.state, monitor.active) == (State.ACTIVE, PRIMARY)
    assert kinds(of_type(harness.events(), MemberBecameActive)) == ["MemberBecameActive:primary"]
    assert of_type(harness.events(), SplitBrain) == []
    assert monitor.status().counters.claims_rejected == 0  # no result yet: nothing rejected

    # Then the claim probes time out: each is one rejected claim, reported once per interval.
    harness.at(102.0)
    for claim in claims:
        harness.fail(claim)
    rejected = of_type(harness.events(), ClaimRejected)
    assert monitor.status().counters.claims_rejected == 8
    assert [(event.at, event.claims) for event in rejected] == [(102.0, 1)]
    assert monitor.active == PRIMARY


def test_fast_failing_claims_are_rate_limited_too_and_reported_once_per_interval() -> None:
    harness = Harness.started(takeover=TAKEOVER)
    harness.answer(harness.last_probe(PRIMARY))  # active on the primary at 100
    # 10 forged requests a second for 25 s; each claim probe fails at once (ICMP port
    # unreachable: the backup's host has no SIP server bound).
    sent_before = len(harness.probes())
    for i in range(250):
        harness.at(100.0 + i * 0.1)
        keep_the_primary_answering(harness)
        out = harness.request(BACKUP)
        for claim in of_type(out, Probe):
            harness.fail(claim)
    claims = [probe for probe in harness.probes()[sent_before:] if probe.member == BACKUP]
    gaps = [b.sent_at - a.sent_at for a, b in itertools.pairwise(claims)]
    assert min(gaps) >= TAKEOVER_PROBE_INTERVAL  # every third request here (0.3 s), not every one
    assert len(claims) <= 25 / TAKEOVER_PROBE_INTERVAL
    monitor = harness.monitor
    assert (monitor.state, monitor.active) == (State.ACTIVE, PRIMARY)
    assert kinds(of_type(harness.events(), MemberBecameActive)) == ["MemberBecameActive:primary"]
    assert monitor.status().counters.claims_rejected == len(claims)
    rejected = of_type(harness.events(), ClaimRejected)
    assert [event.at for event in rejected] == pytest.approx([100.0, 110.2, 120.4])
    assert all(b.at - a.at >= CLAIM_REPORT_INTERVAL for a, b in itertools.pairwise(rejected))
    assert rejected[0].claims == 1
    # Each later report carries the claims rejected since the previous report; the rest wait.
    unreported = monitor.status().counters.claims_rejected - sum(event.claims for event in rejected)
    assert [event.claims for event in rejected[1:]] == [
        sum(1 for claim in claims if a.at < claim.sent_at <= b.at) for a, b in itertools.pairwise(rejected)
    ]
    assert unreported == sum(1 for claim in claims if claim.sent_at > rejected[-1].at)


def test_a_claim_ends_a_split_brain_when_rejected() -> None:
    harness = Harness.started(takeover=TAKEOVER)
    harness.advance(FORCE + 0.5)
    harness.answer(harness.last_probe(PRIMARY))  # active on the primary at 102.5
    harness.request(BACKUP)  # a claim: the backup is probed
    claim = harness.last_probe(BACKUP)
    harness.answer(harness.probes()[1])  # its earlier probe answers alive: split brain
    assert harness.monitor.split_brain
    out = harness.fail(claim)
    assert kinds(out) == ["SplitBrain", "ClaimRejected"]
    assert not harness.monitor.status().split_brain
    assert harness.monitor.active == PRIMARY


# ------------------------------------------------------------------ the table follows the settings


def test_assigning_settings_re_picks_the_table() -> None:
    harness = active_at_105(takeover=0.0)
    harness.monitor.settings = settings(takeover=6.0)
    harness.at(109.9)
    out = harness.at(110.0)
    assert kinds(out) == ["PairUnknown", "Probe:backup", "Probe:primary"]
    assert harness.monitor.state is State.TAKEOVER
    assert of_type(out, PairUnknown)[0].hold == 6.0

    harness = active_at_105(takeover=6.0)
    harness.monitor.settings = settings(takeover=0.0)
    harness.at(109.9)
    out = harness.at(110.0)
    assert kinds(out) == ["PairUnknown", "Probe:backup"]  # the classic: unknown, alternation
    assert harness.monitor.state is State.UNKNOWN
    assert harness.monitor.next_deadline() == 110.0 + FORCE


def test_turning_the_window_off_during_a_window_lets_it_end() -> None:
    harness = active_at_105(takeover=6.0)
    harness.at(110.0)  # in the window until 116
    harness.at(111.0)
    harness.monitor.settings = settings(takeover=0.0)  # a reload carries the pair over
    # The window announced goes on (fast probes), then ends in 40001 and the alternation.
    assert kinds(harness.at(111.25)) == ["Probe:backup", "Probe:primary"]
    out = harness.at(116.0)
    assert kinds(out)[-2:] == ["PairOutOfService", "Probe:backup"]
    assert harness.monitor.state is State.OUT_OF_SERVICE
    assert kinds(harness.at(116.0 + FORCE)) == ["Probe:primary"]
    out = harness.answer(harness.last_probe(PRIMARY))
    assert kinds(out) == ["MemberBecameActive:primary", "PairRestored:primary"]
    # The next loss follows the new settings: the classic algorithm.
    harness.advance(CHECK)
    harness.advance(CHECK - 0.1)
    out = harness.advance(0.1)
    assert kinds(out) == ["PairUnknown", "Probe:backup"]
    assert harness.monitor.status().state == "unknown"


def test_an_answer_at_the_very_instant_the_window_ends_is_late() -> None:
    harness = active_at_105()
    harness.at(114.9)
    probe = harness.last_probe(BACKUP)
    harness.now = 115.0  # the caller has not ticked yet: the answer call ends the window first
    out = harness.answer(probe)
    assert kinds(out) == [
        "PairOutOfService",
        "Probe:backup",
        "MemberBecameActive:backup",
        "PairRestored:backup",
    ]
