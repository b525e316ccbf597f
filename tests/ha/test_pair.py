"""The pair monitor's behaviour over time, on a fake clock (now = 100 at start, oos-check 5, oos-force 2)."""

from __future__ import annotations

import pytest

from sipha.ha import (
    EVENT_PAIR_UNAVAILABLE,
    Member,
    MemberBecameActive,
    MonitorSettings,
    PairMonitor,
    PairOutOfService,
    PairRestored,
    PairUnknown,
    Probe,
    SplitBrain,
    State,
)
from sipha.sip.address import Address
from tests.ha.support import BACKUP, CHECK, FORCE, PAIR, PRIMARY, Harness, kinds, of_type, settings

# ------------------------------------------------------------------ start


def test_start_is_unknown_and_probes_the_primary_first() -> None:
    harness = Harness.make()
    out = harness.start()
    assert kinds(out) == ["PairUnknown", "Probe:primary"]
    unknown = of_type(out, PairUnknown)[0]
    assert (unknown.reason, unknown.member, unknown.at) == ("start", None, 100.0)
    assert of_type(out, Probe)[0] == Probe(PAIR, PRIMARY, 1, 100.0)
    assert harness.monitor.active is None
    assert harness.monitor.next_deadline() == 100.0 + FORCE
    assert harness.monitor.status().state == "unknown"


def test_the_first_answer_makes_the_member_active_and_restarts_oos_check_from_the_answer() -> None:
    harness = Harness.started()
    harness.advance(0.3)
    out = harness.answer(harness.last_probe())
    event = of_type(out, MemberBecameActive)[0]
    assert (event.member, event.reason, event.previous) == (PRIMARY, "options", None)
    # docs/design.md §2.1: "When one of the SIP Servers responds ... SIP Proxy resets the oos-check timeout."
    assert harness.monitor.next_deadline() == pytest.approx(100.3 + CHECK)
    assert kinds(harness.advance(CHECK)) == ["Probe:primary"]


def test_cannot_start_twice_nor_run_before_start() -> None:
    harness = Harness.make()
    with pytest.raises(RuntimeError, match="not started"):
        harness.monitor.tick(0.0)
    harness.start()
    with pytest.raises(RuntimeError, match="already started"):
        harness.monitor.start(0.0)


def test_members_must_be_of_one_pair_at_two_addresses() -> None:
    other = Member("site-b", "backup", Address("UDP", "10.0.2.11", 5060))
    with pytest.raises(ValueError, match="different pairs"):
        PairMonitor(PRIMARY, other)
    twin = Member(PAIR, "backup", Address("TCP", "10.0.1.10", 5060))
    with pytest.raises(ValueError, match="same address"):
        PairMonitor(PRIMARY, twin)
    assert PairMonitor(PRIMARY, BACKUP).settings == MonitorSettings()


# ------------------------------------------------------------------ active: the oos-check cycle


def active_at_105() -> Harness:
    """Active on the primary since 100, its second probe sent at 105 (answer due before 110)."""
    harness = Harness.started()
    harness.answer(harness.last_probe())
    harness.advance(CHECK)
    assert harness.last_probe().sent_at == 105.0
    return harness


def test_answer_just_before_expiry_keeps_the_member_and_the_next_probe_at_the_period() -> None:
    harness = active_at_105()
    harness.at(109.999)
    assert harness.answer(harness.last_probe()) == []
    # "wait for oos-check to expire (measured from when that OPTIONS was sent)".
    assert harness.monitor.next_deadline() == 110.0
    out = harness.at(110.0)
    assert kinds(out) == ["Probe:primary"]
    assert harness.last_probe().sent_at == 110.0
    assert harness.monitor.active == PRIMARY


def test_no_answer_within_oos_check_makes_the_pair_unknown_and_probes_the_other_member_at_once() -> None:
    harness = active_at_105()
    harness.at(109.9)  # asked again at each quarter of the period meanwhile (tests/ha/test_loss.py)
    out = harness.at(110.0)
    assert kinds(out) == ["PairUnknown", "Probe:backup"]
    unknown = of_type(out, PairUnknown)[0]
    assert (unknown.reason, unknown.member, unknown.at) == ("no-answer", PRIMARY, 110.0)
    assert harness.monitor.active is None
    # Then alternately, one every oos-force: primary, backup, ...  The primary that just
    # failed counts as silent already, so the backup's silence completes the round: 40001.
    assert kinds(harness.at(112.0)) == ["PairOutOfService", "Probe:primary"]
    assert kinds(harness.at(114.0)) == ["Probe:backup"]


def test_answer_just_after_expiry_comes_too_late_but_makes_the_member_active_again() -> None:
    harness = active_at_105()
    late = harness.last_probe()
    harness.at(110.001)
    assert harness.monitor.active is None
    out = harness.answer(late)
    event = of_type(out, MemberBecameActive)[0]
    assert (event.member, event.reason) == (PRIMARY, "options")
    assert harness.monitor.next_deadline() == pytest.approx(110.001 + CHECK)
    assert kinds(harness.events()[-2:]) == ["PairUnknown", "MemberBecameActive:primary"]


def test_answer_at_the_very_instant_of_expiry_is_late() -> None:
    harness = active_at_105()
    probe = harness.last_probe()
    harness.now = 110.0  # the caller has not ticked yet: the answer call fires the timer first
    out = harness.answer(probe)
    assert kinds(out) == ["PairUnknown", "Probe:backup", "MemberBecameActive:primary"]


def test_a_non_alive_answer_to_the_current_probe_makes_the_pair_unknown_at_once() -> None:
    harness = active_at_105()
    harness.at(106.0)
    out = harness.answer(harness.last_probe(), 503)
    assert kinds(out) == ["PairUnknown", "Probe:backup"]
    assert of_type(out, PairUnknown)[0].reason == "not-alive"
    assert harness.monitor.status().counters.probes_failed == 1


def test_a_failed_current_probe_makes_the_pair_unknown_at_once() -> None:
    harness = active_at_105()
    harness.at(105.2)
    out = harness.fail(harness.last_probe())
    assert kinds(out) == ["PairUnknown", "Probe:backup"]
    assert of_type(out, PairUnknown)[0].reason == "probe-failed"
    assert harness.monitor.next_deadline() == pytest.approx(105.2 + FORCE)


def test_provisional_responses_are_ignored() -> None:
    harness = active_at_105()
    probe = harness.last_probe()
    assert harness.answer(probe, 100) == []
    assert harness.answer(probe, 183) == []
    # Still outstanding: the final answer counts.
    assert harness.answer(probe, 200) == []
    assert harness.monitor.status().counters.probes_answered == 2
    assert kinds(harness.at(110.0)) == ["Probe:primary"]


def test_a_second_result_for_a_probe_or_a_foreign_probe_is_ignored() -> None:
    harness = active_at_105()
    probe = harness.last_probe()
    harness.answer(probe)
    before = harness.monitor.status().counters
    assert harness.answer(probe, 503) == []
    assert harness.fail(probe) == []
    assert harness.answer(Probe(PAIR, PRIMARY, 99, 104.0)) == []
    assert harness.monitor.status().counters == before
    assert harness.monitor.active == PRIMARY


def test_a_late_tick_sends_one_probe_not_a_burst() -> None:
    harness = Harness.started()
    harness.now = 130.0  # the loop stalled for 30 s: one tick
    harness.monitor.tick(harness.now)
    assert kinds(harness.monitor.drain()) == ["Probe:backup"]
    assert harness.monitor.next_deadline() == 130.0 + FORCE


# ------------------------------------------------------------------ unknown: the alternation


def test_both_members_dead_alternate_every_oos_force_40001_once_then_restored() -> None:
    harness = Harness.started()
    harness.advance(30.0)
    probes = harness.probes()
    assert [p.member.role for p in probes[:4]] == ["primary", "backup", "primary", "backup"]
    assert [p.sent_at for p in probes] == [100.0 + FORCE * i for i in range(16)]
    out_of_service = of_type(harness.out, PairOutOfService)
    # Unknown at 100: primary probed at 100, backup at 102, both silent for oos-force: 104.
    assert [e.at for e in out_of_service] == [104.0]
    assert out_of_service[0].event_id == EVENT_PAIR_UNAVAILABLE == 40001
    assert "SIP Server HA pair unavailable" in out_of_service[0].message
    assert harness.monitor.status().state == "out-of-service"
    assert harness.monitor.active is None
    # The backup finally answers one of its probes: restored.
    out = harness.answer(harness.last_probe(BACKUP))
    assert kinds(out) == ["MemberBecameActive:backup", "PairRestored:backup"]
    restored = of_type(out, PairRestored)[0]
    assert (restored.down_since, restored.at) == (100.0, 130.0)
    assert "after 30.0 s" in restored.message
    assert harness.monitor.status().state == "active"
    assert harness.monitor.status().counters.switchovers == 0  # first active member: no switch
    assert harness.monitor.next_deadline() == 130.0 + CHECK


def test_an_answer_to_a_probe_sent_before_the_last_change_of_target_counts() -> None:
    harness = Harness.started()
    first = harness.last_probe(PRIMARY)
    harness.advance(FORCE + 0.5)  # the backup has been probed since
    assert harness.last_probe().member == BACKUP
    out = harness.answer(first)
    assert of_type(out, MemberBecameActive)[0].member == PRIMARY


def test_a_non_alive_answer_while_unknown_changes_nothing() -> None:
    harness = Harness.started()
    harness.advance(FORCE)
    assert harness.answer(harness.last_probe(BACKUP), 503) == []
    assert harness.fail(harness.last_probe(PRIMARY)) == []
    assert harness.monitor.state is State.UNKNOWN
    assert harness.monitor.next_deadline() == 100.0 + 2 * FORCE  # the cadence is unchanged


def test_flapping_reports_every_change_once() -> None:
    harness = Harness.started()
    harness.answer(harness.last_probe())  # 100: active
    for _ in range(3):
        harness.advance(CHECK)  # probe
        harness.advance(CHECK)  # silent: unknown, probe backup
        harness.answer(harness.last_probe(PRIMARY))  # the late answer: active again
    names = kinds(harness.events())
    assert (
        names
        == ["PairUnknown", "MemberBecameActive:primary"]
        + [
            "PairUnknown",
            "MemberBecameActive:primary",
        ]
        * 3
    )
    assert [e.reason for e in of_type(harness.events(), PairUnknown)] == ["start"] + ["no-answer"] * 3
    assert harness.monitor.status().counters.switchovers == 0


def test_flapping_between_members_counts_switchovers() -> None:
    harness = Harness.started()
    harness.answer(harness.last_probe())  # primary active
    harness.advance(CHECK)
    harness.advance(CHECK)  # unknown at 110, probe backup
    harness.answer(harness.last_probe(BACKUP))
    harness.advance(CHECK)
    harness.advance(CHECK)  # unknown at 120, probe primary
    harness.answer(harness.last_probe(PRIMARY))
    assert kinds(harness.events()) == [
        "PairUnknown",
        "MemberBecameActive:primary",
        "PairUnknown",
        "MemberBecameActive:backup",
        "PairUnknown",
        "MemberBecameActive:primary",
    ]
    assert harness.monitor.status().counters.switchovers == 2


# ------------------------------------------------------------------ requests from members


def test_a_request_from_the_inactive_member_switches_once_it_answers_even_mid_probe() -> None:
    harness = active_at_105()
    harness.at(106.0)
    # The request is a claim: the backup is probed now and becomes active on its alive answer.
    assert kinds(harness.request(BACKUP)) == ["Probe:backup"]
    assert harness.monitor.active == PRIMARY
    out = harness.answer(harness.last_probe(BACKUP))
    assert kinds(out) == ["MemberBecameActive:backup"]
    event = of_type(out, MemberBecameActive)[0]
    assert (event.member, event.reason, event.previous) == (BACKUP, "request", PRIMARY)
    assert harness.monitor.active == BACKUP
    assert harness.monitor.next_deadline() == 106.0 + CHECK
    # The primary's probe in flight answers 503 (it is in backup mode now): nothing changes.
    assert harness.answer(harness.last_probe(PRIMARY), 503) == []
    assert kinds(harness.at(111.0)) == ["Probe:backup"]
    assert harness.monitor.status().counters.switchovers == 1


def test_a_request_from_the_active_member_changes_nothing() -> None:
    harness = active_at_105()
    assert harness.request(PRIMARY) == []
    assert harness.monitor.active == PRIMARY
    assert harness.monitor.next_deadline() == 105.0 + CHECK / 4  # the unanswered period's re-ask


def test_a_request_from_another_port_of_a_member_ip_is_not_from_the_member() -> None:
    harness = active_at_105()
    assert harness.monitor.request_from("10.0.1.11", 5062, harness.now) is None
    assert harness.monitor.request_from("10.0.1.99", 5060, harness.now) is None
    assert harness.monitor.drain() == []
    assert harness.monitor.active == PRIMARY


def test_a_request_while_unknown_or_out_of_service_makes_its_member_active() -> None:
    harness = Harness.started()
    out = harness.claim(BACKUP)
    assert kinds(out) == ["Probe:backup", "MemberBecameActive:backup"]
    assert of_type(out, MemberBecameActive)[0].reason == "request"
    harness = Harness.started()
    harness.advance(2 * FORCE)
    out = harness.claim(PRIMARY)
    assert kinds(out) == ["Probe:primary", "MemberBecameActive:primary", "PairRestored:primary"]


def test_ipv6_members_match_with_or_without_brackets() -> None:
    primary = Member("v6", "primary", Address("UDP", "2001:db8::10", 5060))
    backup = Member("v6", "backup", Address("UDP", "[2001:DB8::11]", 5060))
    monitor = PairMonitor(primary, backup, settings())
    monitor.start(0.0)
    monitor.drain()
    assert monitor.request_from("[2001:db8::11]", 5060, 0.1) == backup
    monitor.probe_answered(of_type(monitor.drain(), Probe)[-1], 200, 0.1)  # the claim confirmed
    assert monitor.active == backup
    assert monitor.request_from("2001:db8::10", 5060, 10.0) == primary
    claim = of_type(monitor.drain(), Probe)[-1]
    assert claim.member == primary
    monitor.probe_answered(claim, 200, 10.0)
    assert monitor.active == primary
    assert "[2001:db8::10]:5060" in of_type(monitor.drain(), MemberBecameActive)[-1].message


# ------------------------------------------------------------------ oos-check = 0


def test_monitoring_off_takes_the_primary_and_never_probes() -> None:
    harness = Harness.make(check=0.0)
    out = harness.start()
    event = of_type(out, MemberBecameActive)[0]
    assert (event.member, event.reason) == (PRIMARY, "start")
    assert "monitoring off" in event.message
    assert harness.monitor.next_deadline() is None
    assert harness.advance(1000.0) == []
    assert harness.suspect(PRIMARY) == []  # no probe could decide
    assert harness.monitor.active == PRIMARY
    assert not harness.monitor.status().monitoring
    # A request from the backup still switches, and one from the primary later switches back.
    assert kinds(harness.request(BACKUP)) == ["MemberBecameActive:backup"]
    harness.advance(10.0)
    assert kinds(harness.request(PRIMARY)) == ["MemberBecameActive:primary"]
    assert harness.probes() == []
    assert harness.monitor.status().counters.switchovers == 2


# ------------------------------------------------------------------ suspect (failover-timeout)


def test_suspect_makes_the_pair_unknown_and_probes_the_other_member_now() -> None:
    harness = active_at_105()
    harness.at(106.5)
    out = harness.suspect(PRIMARY)
    assert kinds(out) == ["PairUnknown", "Probe:backup"]
    assert of_type(out, PairUnknown)[0].reason == "suspect"
    assert harness.last_probe().sent_at == 106.5
    # The suspected primary counts as silent: the backup's silence completes the round.
    assert kinds(harness.at(106.5 + FORCE)) == ["PairOutOfService", "Probe:primary"]
    # The backup, now primary, answers: active.
    out = harness.answer(harness.last_probe(BACKUP))
    assert of_type(out, MemberBecameActive)[0].member == BACKUP


def test_suspect_of_a_member_that_is_not_active_or_while_unknown_changes_nothing() -> None:
    harness = active_at_105()
    assert harness.suspect(BACKUP) == []
    harness = Harness.started()
    assert harness.suspect(PRIMARY) == []
    assert harness.monitor.next_deadline() == 100.0 + FORCE


def test_suspect_of_a_stranger_is_an_error() -> None:
    harness = Harness.started()
    stranger = Member("site-b", "primary", Address("UDP", "10.0.2.10", 5060))
    with pytest.raises(ValueError, match="not a member"):
        harness.suspect(stranger)


def test_after_suspect_the_suspected_members_own_answer_still_counts() -> None:
    harness = active_at_105()
    in_flight = harness.last_probe(PRIMARY)
    harness.suspect(PRIMARY)
    out = harness.answer(in_flight)
    assert of_type(out, MemberBecameActive)[0].member == PRIMARY


# ------------------------------------------------------------------ split brain


def both_answering() -> Harness:
    """Unknown; the primary answers at 102.5 (probe of 100), then the backup (probe of 102) alive."""
    harness = Harness.started()
    harness.advance(FORCE + 0.5)
    harness.answer(harness.last_probe(PRIMARY))
    harness.answer(harness.last_probe(BACKUP))
    return harness


def test_both_members_answering_alive_is_split_brain_and_the_active_member_is_kept() -> None:
    harness = both_answering()
    split = of_type(harness.events(), SplitBrain)
    assert len(split) == 1
    assert (split[0].started, split[0].active, split[0].other) == (True, PRIMARY, BACKUP)
    assert "split brain" in split[0].message
    status = harness.monitor.status()
    assert (status.split_brain, status.split_brain_since, status.active) == (True, 102.5, PRIMARY)
    # The window is max(oos-check, oos-force): the flag would end at 107.5 without news.
    assert harness.monitor.next_deadline() == 102.5 + CHECK
    # While it lasts, requests from the other member do not switch; the flag is not re-reported.
    harness.advance(1.0)
    assert harness.request(BACKUP) == []
    assert harness.monitor.active == PRIMARY
    assert len(of_type(harness.events(), SplitBrain)) == 1


def test_split_brain_ends_once_when_the_other_member_goes_quiet() -> None:
    harness = both_answering()
    out = harness.advance(CHECK)  # 107.5: the primary's next probe and the end of the window
    assert kinds(out) == ["Probe:primary", "SplitBrain"]
    ended = of_type(out, SplitBrain)[0]
    assert not ended.started
    assert "over" in ended.message
    assert not harness.monitor.status().split_brain
    assert harness.monitor.status().split_brain_since is None
    harness.advance(30.0)
    assert len(of_type(harness.events(), SplitBrain)) == 2


def test_split_brain_evidence_refreshes_the_window() -> None:
    harness = both_answering()  # split since 102.5
    harness.at(106.0)
    assert harness.request(BACKUP) == []  # the backup still acts as primary: evidence at 106
    out = harness.at(107.5)  # the primary's next probe; the flag holds until 111
    assert kinds(out) == ["Probe:primary"]
    harness.answer(harness.last_probe(PRIMARY))
    assert harness.monitor.next_deadline() == 111.0
    assert kinds(harness.at(111.0)) == ["SplitBrain"]
    assert not harness.monitor.split_brain


def test_a_stale_negative_of_the_active_member_keeps_split_brain() -> None:
    harness = Harness.started()
    harness.advance(2 * FORCE + 0.1)  # primary 100, backup 102, primary 104 (out of service)
    harness.answer(harness.last_probe(PRIMARY))  # restored on the primary at 104.1
    backup_probe = harness.probes()[1]
    harness.claim(BACKUP)  # a confirmed request from the backup switches (no split yet)...
    assert harness.monitor.active == BACKUP
    harness.request(PRIMARY)  # ...and the displaced primary's request at once is split brain
    assert harness.monitor.active == BACKUP
    assert harness.monitor.status().split_brain
    assert kinds(harness.fail(harness.probes()[0])) == ["SplitBrain"]  # the primary is not primary now
    assert not harness.monitor.split_brain
    harness.request(PRIMARY)
    assert harness.monitor.status().split_brain
    assert harness.answer(backup_probe, 503) == []  # the active member's older probe: ignored
    assert harness.monitor.status().split_brain


def test_a_negative_from_the_other_member_ends_split_brain() -> None:
    harness = Harness.started()
    harness.advance(FORCE)  # probes: primary 100, backup 102
    harness.advance(FORCE)  # 104: out of service, primary probed again
    harness.advance(FORCE)  # 106: backup probed again
    harness.answer(harness.probes()[0])  # primary active (restored)
    harness.answer(harness.probes()[1])  # backup alive: split brain
    assert harness.monitor.split_brain
    out = harness.fail(harness.probes()[3])  # the backup's other probe fails: it is not primary
    assert kinds(out) == ["SplitBrain"]
    assert not harness.monitor.split_brain


def test_split_brain_ends_when_the_active_member_stops_answering() -> None:
    harness = both_answering()
    harness.advance(CHECK)  # 107.5: probe; the window ends too
    harness.answer(harness.last_probe(PRIMARY))
    harness.claim(BACKUP)  # the backup... switches now, the flag being clear
    assert harness.monitor.active == BACKUP
    harness.request(PRIMARY)  # flip back within the window: split brain, the backup is kept
    assert harness.monitor.active == BACKUP
    assert harness.monitor.split_brain
    out = harness.suspect(BACKUP)
    assert kinds(out) == ["SplitBrain", "PairUnknown", "Probe:primary"]
    assert not harness.monitor.split_brain


def test_two_primaries_sending_requests_do_not_flip_the_pair() -> None:
    harness = active_at_105()
    harness.claim(BACKUP)  # 105: the backup took over (the first confirmed request always switches)
    for step in range(20):
        harness.advance(0.5)
        harness.request(PRIMARY if step % 2 == 0 else BACKUP)
        latest = harness.last_probe()
        if latest.member == BACKUP and latest.sent_at == harness.now:
            harness.answer(latest)  # the backup keeps answering its OPTIONS
    assert harness.monitor.active == BACKUP
    assert [e.started for e in of_type(harness.events(), SplitBrain)] == [True]
    assert kinds(of_type(harness.events(), MemberBecameActive)) == [
        "MemberBecameActive:primary",
        "MemberBecameActive:backup",
    ]


def test_a_request_from_the_displaced_member_after_the_window_switches_back() -> None:
    harness = active_at_105()
    harness.claim(BACKUP)
    harness.advance(CHECK)  # the window (max(5, 2)) has passed
    harness.answer(harness.last_probe(BACKUP))
    out = harness.claim(PRIMARY)
    assert kinds(out) == ["Probe:primary", "MemberBecameActive:primary"]
    assert not harness.monitor.split_brain


# ------------------------------------------------------------------ alive codes through the monitor


def test_only_the_configured_alive_codes_count() -> None:
    harness = Harness.started(codes=("200", "486"))
    assert harness.answer(harness.last_probe(), 202) == []
    harness.advance(FORCE)
    out = harness.answer(harness.last_probe(BACKUP), 486)
    assert of_type(out, MemberBecameActive)[0].member == BACKUP


# ------------------------------------------------------------------ bookkeeping


def test_status_reports_rtt_counters_and_changes() -> None:
    harness = Harness.started()
    harness.advance(0.25)
    harness.answer(harness.last_probe())  # rtt computed: 0.25
    harness.advance(CHECK)
    harness.answer(harness.last_probe(), rtt=0.01)  # rtt given by the caller
    status = harness.monitor.status()
    assert status.last_rtt == {"primary": 0.01, "backup": None}
    assert status.since == 100.25
    assert status.active == PRIMARY
    assert (status.counters.probes_sent, status.counters.probes_answered) == (2, 2)
    assert status.next_deadline == 100.25 + 2 * CHECK
    data = status.as_dict()
    assert data["state"] == "active"
    assert data["active"] == {"role": "primary", "transport": "UDP", "host": "10.0.1.10", "port": 5060}
    assert data["probes_sent"] == 2
    assert data["last_rtt"] == {"primary": 0.01, "backup": None}
    harness.advance(CHECK)
    harness.advance(CHECK)
    data = harness.monitor.status().as_dict()
    assert (data["state"], data["active"], data["since"]) == ("unknown", None, 115.25)


@pytest.mark.parametrize("takeover", [0.0, 5.0], ids=["classic", "takeover"])
def test_forgotten_probes_no_longer_count_but_the_current_period_probe_is_kept(takeover: float) -> None:
    # The lifetime is the same with or without a takeover window (the losing input differs only
    # in where it leads: unknown, or the window).
    monitor_settings = MonitorSettings(oos_check=100.0, probe_lifetime=64.0, takeover_timeout=takeover)
    harness = Harness(type(Harness.make().monitor)(PRIMARY, BACKUP, monitor_settings))
    harness.start()
    first = harness.last_probe(PRIMARY)
    harness.advance(70.0)  # the alternation went on; the first probe is older than its lifetime
    assert harness.answer(first) == []
    assert harness.monitor.state is State.OUT_OF_SERVICE
    harness.answer(harness.last_probe())
    harness.advance(100.0)  # period probe sent
    current = harness.last_probe()
    harness.advance(70.0)
    harness.monitor.tick(harness.now)  # prune runs: the period's probe stays
    out = harness.fail(current)
    assert kinds(out)[0] == "PairUnknown"
    assert harness.monitor.state is (State.TAKEOVER if takeover else State.UNKNOWN)


def test_the_members_and_name_are_exposed() -> None:
    monitor = PairMonitor(PRIMARY, BACKUP)
    assert monitor.name == PAIR
    assert monitor.members() == (PRIMARY, BACKUP)
    assert monitor.member_at("10.0.1.10", 5060) == PRIMARY
    assert monitor.state is State.INITIAL
    assert monitor.status().state == "initial"
    assert monitor.next_deadline() is None


def test_every_event_has_a_message_and_only_out_of_service_has_an_id() -> None:
    harness = both_answering()
    harness.advance(60.0)
    harness.suspect(PRIMARY)
    harness.advance(60.0)
    harness.claim(BACKUP)  # restored by a confirmed request
    harness.claim(PRIMARY, 503)  # a request from the primary, now in backup mode: not followed
    events = harness.events()
    assert {type(e).__name__ for e in events} >= {
        "PairUnknown",
        "MemberBecameActive",
        "SplitBrain",
        "PairOutOfService",
        "PairRestored",
        "ClaimRejected",
    }
    for event in events:
        assert event.pair in event.message
        assert event.event_id == (40001 if isinstance(event, PairOutOfService) else None)


@pytest.mark.parametrize(
    ("check", "force"),
    [(-1.0, 5.0), (301.0, 5.0), (5.0, 0.5), (5.0, 33.0)],
)
def test_settings_ranges(check: float, force: float) -> None:
    with pytest.raises(ValueError, match="oos-"):
        MonitorSettings(oos_check=check, oos_force=force)


def test_settings_lifetime_and_window() -> None:
    with pytest.raises(ValueError, match="probe_lifetime"):
        MonitorSettings(probe_lifetime=0.0)
    assert MonitorSettings(oos_check=0.0, oos_force=3.0).split_brain_window == 3.0
    assert MonitorSettings(oos_check=30.0, oos_force=3.0).split_brain_window == 30.0
    assert not MonitorSettings(oos_check=0.0).monitoring


def test_next_deadline_follows_the_state() -> None:
    harness = Harness.started()
    monitor = harness.monitor
    assert monitor.next_deadline() == 102.0  # unknown: the next alternate probe
    harness.at(101.0)
    harness.answer(harness.last_probe())
    assert monitor.next_deadline() == 106.0  # active: oos-check from the answer
    harness.at(106.0)
    assert monitor.next_deadline() == 107.25  # unanswered: asked again at each quarter of the period
    harness.at(107.0)
    harness.answer(harness.last_probe())
    assert monitor.next_deadline() == 111.0  # answered: the next probe still at the period
    harness.at(111.0)
    harness.at(116.0)  # silent: unknown
    assert monitor.next_deadline() == 118.0
    harness.answer(harness.last_probe(PRIMARY))  # the late answer: active again at 116
    harness.answer(harness.probes()[-1])  # and the backup alive: split brain until 121
    assert monitor.split_brain
    assert monitor.next_deadline() == 121.0  # both the probe and the window end at 121
    harness.at(119.0)
    harness.request(BACKUP)  # evidence at 119: the window now ends at 124
    assert monitor.next_deadline() == 121.0
    harness.at(121.0)
    harness.answer(harness.last_probe(PRIMARY))
    assert monitor.next_deadline() == 124.0  # the window now comes first (the probe is due at 126)
    harness.at(124.0)
    assert monitor.next_deadline() == 126.0
