"""Several pairs behind one Monitor: routing of inputs, merged outputs and deadlines, the active table."""

from __future__ import annotations

import pytest

from sipha.ha import Member, MemberBecameActive, Monitor, MonitorSettings, PairMonitor, PairUnknown, Probe
from sipha.proxy.view import ConfiguredView, PairSpec
from sipha.sip.address import Address
from tests.ha.support import BACKUP, FORCE, PRIMARY, kinds, of_type, settings

B_PRIMARY = Member("site-b", "primary", Address("TCP", "10.0.2.10", 5060))
B_BACKUP = Member("site-b", "backup", Address("TCP", "10.0.2.11", 5070))


def two_pairs(check: float = 5.0) -> Monitor:
    monitor = Monitor([(PRIMARY, BACKUP), (B_PRIMARY, B_BACKUP)], settings(check=check))
    monitor.start(0.0)
    return monitor


def test_start_probes_the_primary_of_every_pair() -> None:
    monitor = two_pairs()
    out = monitor.drain()
    assert kinds(out) == ["PairUnknown", "Probe:primary", "PairUnknown", "Probe:primary"]
    assert [p.member for p in of_type(out, Probe)] == [PRIMARY, B_PRIMARY]
    assert monitor.active_table() == {"site-a": None, "site-b": None}
    assert monitor.next_deadline() == FORCE


def test_pending_says_whether_drain_has_anything() -> None:
    monitor = Monitor([(PRIMARY, BACKUP), (B_PRIMARY, B_BACKUP)], settings())
    assert not monitor.pending()
    monitor.start(0.0)
    assert monitor.pending()
    _, probe_b = of_type(monitor.drain(), Probe)
    assert not monitor.pending()
    assert monitor.request_from("192.0.2.1", 5060, 0.1) is None  # not a member: nothing to say
    assert not monitor.pending()
    monitor.probe_answered(probe_b, 200, 0.2)  # the second pair only
    assert monitor.pending()
    assert monitor.drain()
    assert not monitor.pending()


def test_results_and_requests_reach_their_pair() -> None:
    monitor = two_pairs()
    probe_a, probe_b = of_type(monitor.drain(), Probe)
    monitor.probe_answered(probe_a, 200, 0.1)
    monitor.probe_failed(probe_b, 0.2)
    assert monitor.active_table() == {"site-a": PRIMARY, "site-b": None}
    assert monitor.request_from("10.0.2.11", 5070, 0.3) == B_BACKUP
    assert monitor.request_from("10.0.2.11", 5060, 0.3) is None  # not its port
    assert monitor.request_from("192.0.2.1", 5060, 0.3) is None
    out = monitor.drain()
    claim = of_type(out, Probe)[-1]  # the request is confirmed by a probe of its member
    assert claim.member == B_BACKUP
    monitor.probe_answered(claim, 200, 0.35)
    assert monitor.active_table() == {"site-a": PRIMARY, "site-b": B_BACKUP}
    events = of_type(out + monitor.drain(), MemberBecameActive)
    assert [(e.pair, e.reason) for e in events] == [("site-a", "options"), ("site-b", "request")]
    monitor.suspect(PRIMARY, 1.0)
    out = monitor.drain()
    assert kinds(out) == ["PairUnknown", "Probe:backup"]
    assert of_type(out, PairUnknown)[0].pair == "site-a"
    assert monitor.active_table()["site-a"] is None


def test_next_deadline_is_the_earliest_and_tick_reaches_every_pair() -> None:
    monitor = two_pairs()
    probe_a, _ = of_type(monitor.drain(), Probe)
    monitor.probe_answered(probe_a, 200, 0.5)  # site-a: next probe at 5.5; site-b: at 2.0
    assert monitor.next_deadline() == FORCE
    monitor.tick(FORCE)
    assert [p.member for p in of_type(monitor.drain(), Probe)] == [B_BACKUP]
    assert monitor.next_deadline() == 2 * FORCE


def test_no_deadline_when_monitoring_is_off() -> None:
    monitor = two_pairs(check=0.0)
    assert monitor.next_deadline() is None
    assert monitor.active_table() == {"site-a": PRIMARY, "site-b": B_PRIMARY}


def test_status_per_pair() -> None:
    monitor = two_pairs()
    status = monitor.status()
    assert set(status) == {"site-a", "site-b"}
    assert status["site-b"].state == "unknown"
    assert status["site-b"].counters.probes_sent == 1


def test_bad_pair_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        Monitor([(PRIMARY, BACKUP), (PRIMARY, BACKUP)])
    shared = Member("site-b", "primary", PRIMARY.address)
    with pytest.raises(ValueError, match="member of pairs"):
        Monitor([(PRIMARY, BACKUP), (shared, B_BACKUP)])
    monitor = two_pairs()
    with pytest.raises(KeyError, match="site-z"):
        monitor.probe_failed(Probe("site-z", PRIMARY, 1, 0.0), 1.0)


def test_built_from_the_routing_view() -> None:
    view = ConfiguredView.build(
        [("127.0.0.1", 5060)],
        [PairSpec("site-a", PRIMARY.address, BACKUP.address, serving=True)],
    )
    monitor = Monitor([view.members(name) for name in view.pairs], MonitorSettings())
    monitor.start(0.0)
    probe = of_type(monitor.drain(), Probe)[0]
    monitor.probe_answered(probe, 200, 0.01)
    view.active.update(monitor.active_table())
    assert view.active_member("site-a") == PRIMARY
    assert monitor.request_from("10.0.1.11", 5060, 1.0) == BACKUP
    view.active.update(monitor.active_table())
    assert view.active_member("site-a") == PRIMARY  # a claim, until the backup answers its probe
    monitor.probe_answered(of_type(monitor.drain(), Probe)[-1], 200, 1.01)
    view.active.update(monitor.active_table())
    assert view.active_member("site-a") == BACKUP


def test_adopt_keeps_a_running_pair_and_refuses_other_members() -> None:
    old = Monitor([(PRIMARY, BACKUP)], settings())
    old.start(0.0)
    running = old.pairs[PRIMARY.pair]
    new = Monitor([(PRIMARY, BACKUP)], settings())
    new.adopt(running)
    assert new.pairs[PRIMARY.pair] is running
    assert new.request_from(BACKUP.address.host, BACKUP.address.port, 1.0) == BACKUP
    stranger = Member(PRIMARY.pair, "backup", Address("UDP", "192.0.2.99", 5060))
    with pytest.raises(ValueError, match="other members"):
        new.adopt(PairMonitor(PRIMARY, stranger, settings()))


def test_each_answered_probe_reports_its_round_trip() -> None:
    """``on_rtt`` (the /metrics histogram): the pair, the member's role, the round trip
    measured by the transport when given, else from the probe's sending time."""
    seen: list[tuple[str, str, float]] = []
    monitor = Monitor(
        [(PRIMARY, BACKUP), (B_PRIMARY, B_BACKUP)], settings(), on_rtt=lambda *rtt: seen.append(rtt)
    )
    monitor.start(0.0)
    probe_a, probe_b = of_type(monitor.drain(), Probe)
    monitor.probe_answered(probe_a, 200, probe_a.sent_at + 0.25)
    monitor.probe_answered(probe_b, 503, 0.9, rtt=0.004)  # refused: a round trip all the same
    assert seen == [("site-a", "primary", 0.25), ("site-b", "primary", 0.004)]
    assert monitor.pairs["site-a"].active == PRIMARY
