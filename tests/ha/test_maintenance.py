"""A member in maintenance (docs/design.md §2): the other takes new transactions once it answers."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from sipha.ha import MemberBecameActive, Probe, State
from tests.ha.support import BACKUP, CHECK, PRIMARY, Harness


def active_on_primary() -> Harness:
    harness = Harness.started()
    harness.answer(harness.last_probe(PRIMARY))
    assert harness.monitor.active == PRIMARY
    return harness


def activations(outputs: Sequence[object]) -> list[tuple[str, str]]:
    return [(o.member.role, o.reason) for o in outputs if isinstance(o, MemberBecameActive)]


def test_the_active_member_in_maintenance_hands_over_when_the_other_answers() -> None:
    h = active_on_primary()
    out = h.maintenance(PRIMARY)
    assert [p.member for p in out if isinstance(p, Probe)] == [BACKUP]  # the handover probe, now
    assert h.monitor.active == PRIMARY  # until the backup answers
    out = h.answer(h.last_probe(BACKUP))
    assert activations(out) == [("backup", "maintenance")]
    assert h.monitor.state is State.ACTIVE
    assert h.monitor.status().maintenance == ("primary",)
    # The member in maintenance does not claim the pair back with a request.
    assert h.request(PRIMARY) == []
    assert h.monitor.active == BACKUP
    # Back to the algorithm: nothing moves at once.
    assert h.maintenance(PRIMARY, on=False) == []
    assert h.monitor.active == BACKUP
    assert h.monitor.status().maintenance == ()


def test_while_the_other_does_not_answer_the_pair_keeps_its_member_and_asks_each_period() -> None:
    """Never a pair without a member that answers: the backup is asked again every period."""
    h = active_on_primary()
    h.maintenance(PRIMARY)
    h.answer(h.last_probe(BACKUP), 503)  # not in primary mode yet
    assert h.monitor.active == PRIMARY
    out = h.advance(CHECK)
    assert sorted(p.member.role for p in out if isinstance(p, Probe)) == ["backup", "primary"]
    h.answer(h.last_probe(PRIMARY))
    assert h.monitor.active == PRIMARY
    out = h.answer(h.last_probe(BACKUP))
    assert activations(out) == [("backup", "maintenance")]


def test_the_member_in_maintenance_is_still_used_when_it_is_the_only_one_answering() -> None:
    h = Harness.started()
    h.maintenance(PRIMARY)  # while unknown: nothing to hand over
    h.answer(h.last_probe(PRIMARY))
    assert h.monitor.active == PRIMARY  # better than 503 for every call
    out = h.advance(CHECK)
    assert BACKUP in [p.member for p in out if isinstance(p, Probe)]  # the handover, at the period's end


def test_an_unknown_role_is_refused() -> None:
    h = active_on_primary()
    with pytest.raises(ValueError, match="no member 'tertiary'"):
        h.maintenance(PRIMARY.__class__("ha", "tertiary", PRIMARY.address))
