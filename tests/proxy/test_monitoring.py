"""The core's link to the pair monitor (sipha.proxy.monitoring): what it ignores, on a whole core."""

from __future__ import annotations

import pytest

from sipha.ha import State
from sipha.txn import TransactionTimeout
from tests.proxy.support import BACKUP, PRIMARY, ha_harness, harness, invite, make_view

PRIMARY_MEMBER, BACKUP_MEMBER = make_view().members("demo")


@pytest.mark.parametrize(
    ("pair", "what", "role"),
    [("elsewhere", "active", "backup"), ("demo", "active", "nobody"), ("demo", "rumour", "backup")],
)
def test_news_of_an_unknown_pair_member_or_kind_is_ignored(pair: str, what: str, role: str) -> None:
    h = ha_harness(primary_active=True)
    h.core.drain_events()
    h.core.pair_news(pair, what, role, at=0.5, now=1.0)
    assert h.core.monitor is not None
    assert h.core.monitor.pairs["demo"].state is State.ACTIVE
    assert h.core.view.active["demo"] == PRIMARY_MEMBER
    assert h.core.drain_events() == []
    assert not h.core.gone(BACKUP_MEMBER)


def test_news_without_a_monitor_is_ignored() -> None:
    h = harness()
    h.core.pair_news("demo", "gone", "primary", at=0.5, now=1.0)
    assert h.core.events == []
    assert not h.core.gone(PRIMARY_MEMBER)


def test_gone_news_marks_the_member_gone_at_the_latest_time_heard() -> None:
    h = ha_harness(primary_active=True, takeover=5.0)
    h.core.pair_news("demo", "gone", "primary", at=0.5, now=1.0)
    assert h.core.gone(PRIMARY_MEMBER)
    h.core.pair_news("demo", "gone", "primary", at=0.2, now=1.1)  # older news: the latest stays
    assert h.core.failover.unreachable[PRIMARY_MEMBER] == 0.5


def test_probe_results_are_dropped_once_the_monitor_is_gone() -> None:
    """A reload without monitoring forgets the probes; a late result of one is not fed anywhere."""
    h = ha_harness()
    assert h.core._probes
    probe_key = next(iter(h.core._probes))
    transaction = h.core.txn.get(probe_key)
    assert transaction is not None
    h.core.reconfigure(h.core.settings, make_view(), None, h.now)
    assert h.core._probes == {}
    assert not h.core._link.probe_output(TransactionTimeout(transaction), h.now)
    h.feed(invite())  # routed as without monitoring: to the primary
    assert h.core.failover.held == {}
    assert [s.destination for s in h.sent if s.destination in (PRIMARY, BACKUP)][-1] == PRIMARY
