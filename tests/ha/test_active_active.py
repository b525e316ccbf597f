"""Active-active pairs in the pair monitor (docs/design.md §2.2), on the fake clock.

Both members serve: the member that is not active is probed every period too and, while it
answers, takes new Call-IDs (the pair's *spread*).  Every row an active-active pair adds to
the table, or changes, is driven here through the public API; then the stories: start,
a member lost and back, both lost, loss that is not death, maintenance, a reload that
changes the mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from sipha.ha import (
    ACTIVE_ACTIVE,
    ACTIVE_ACTIVE_TABLE,
    ACTIVE_ACTIVE_TAKEOVER_TABLE,
    PRIMARY_BACKUP,
    TABLE,
    TAKEOVER_PROBE_INTERVAL,
    TAKEOVER_ROWS,
    Input,
    MemberBecameActive,
    Monitor,
    Op,
    Output,
    PairOutOfService,
    PairUnknown,
    SpreadChanged,
    State,
    Transition,
)
from sipha.ha.machine import NOT_ACTIVE_ACTIVE
from tests.ha import test_table
from tests.ha.support import BACKUP, CHECK, PRIMARY, Harness, kinds, of_type, settings

Setup = Callable[[float], Harness]
Action = Callable[[Harness], list[Output]]

TAKEOVER = 6.0
QUARTER = CHECK / 4

AA_OP_OUTPUT: dict[Op, tuple[str, ...]] = {
    Op.PROBE_PARTNER: ("Probe",),
    Op.PARTNER_AGAIN: ("Probe",),
    Op.PARTNER_CLEAR: (),
    Op.PARTNER_UP: ("SpreadChanged",),  # when the flag changes (the scenarios make it change)
    Op.PARTNER_DOWN: ("SpreadChanged",),
    Op.SPREAD_REPORT: ("SpreadChanged",),
}
"""What each operation of docs/design.md §2.2 outputs."""

TABLES: dict[
    str, tuple[float, Mapping[tuple[State, Input], Transition], Mapping[tuple[State, Input], Transition]]
] = {
    "classic": (0.0, ACTIVE_ACTIVE_TABLE, TABLE),
    "takeover": (TAKEOVER, ACTIVE_ACTIVE_TAKEOVER_TABLE, {**TABLE, **TAKEOVER_ROWS}),
}


# ------------------------------------------------------------------ setups (now = 100 at start)


def made(takeover: float = 0.0, check: float = CHECK) -> Harness:
    harness = Harness.make(check=check, takeover=takeover)
    harness.monitor.mode = ACTIVE_ACTIVE
    return harness


def started(takeover: float = 0.0) -> Harness:
    """Unknown, probe #1 to the primary."""
    harness = made(takeover)
    harness.start()
    return harness


def one_up(takeover: float = 0.0) -> Harness:
    """The primary answered at 100: active; the backup probed at once (#2), not answered yet."""
    harness = started(takeover)
    harness.answer(harness.last_probe(PRIMARY))
    assert harness.monitor.state is State.ACTIVE
    assert harness.monitor.spread() == (PRIMARY,)
    return harness


def both_up(takeover: float = 0.0) -> Harness:
    """Both answer: the spread is (primary, backup); the next period starts at 105."""
    harness = one_up(takeover)
    harness.answer(harness.last_probe(BACKUP))
    assert harness.monitor.spread() == (PRIMARY, BACKUP)
    return harness


def both_probed(takeover: float = 0.0) -> Harness:
    """Both up, the period of 105 started: one probe each outstanding."""
    harness = both_up(takeover)
    harness.advance(CHECK)
    return harness


def backup_silent(takeover: float = 0.0) -> Harness:
    """Both probed at 105, only the primary answered."""
    harness = both_probed(takeover)
    harness.answer(harness.last_probe(PRIMARY))
    return harness


def backup_down(takeover: float = 0.0) -> Harness:
    """Active on the primary, the backup failed its first probe: out of the spread."""
    harness = one_up(takeover)
    harness.fail(harness.last_probe(BACKUP))
    return harness


def claim_pending(takeover: float = 0.0) -> Harness:
    """Unknown; a request from the backup was probed (#2), then the primary answered: active."""
    harness = started(takeover)
    harness.request(BACKUP)
    claim = harness.last_probe(BACKUP)
    harness.answer(harness.probes()[0])
    assert harness.monitor.active == PRIMARY
    harness.trace.clear()
    harness.claim_probe = claim  # type: ignore[attr-defined]
    return harness


def in_maintenance(takeover: float = 0.0) -> Harness:
    harness = both_up(takeover)
    harness.maintenance(PRIMARY)
    return harness


def unmonitored(takeover: float = 0.0) -> Harness:
    return made(takeover, check=0.0)


EXPLICIT: dict[tuple[State, Input], tuple[Setup, Action, list[str]]] = {
    (State.INITIAL, Input.START_UNMONITORED): (
        unmonitored,
        lambda h: h.start(),
        ["MemberBecameActive:primary", "SpreadChanged"],
    ),
    (State.ACTIVE, Input.PERIOD_ANSWERED): (
        both_up,
        lambda h: h.advance(CHECK),
        ["Probe:primary", "Probe:backup"],
    ),
    (State.ACTIVE, Input.PARTNER_UNANSWERED): (backup_silent, lambda h: h.advance(QUARTER), ["Probe:backup"]),
    (State.ACTIVE, Input.PARTNER_SILENT): (
        backup_silent,
        lambda h: h.at(105 + CHECK),
        ["Probe:backup", "Probe:backup", "Probe:backup", "SpreadChanged", "Probe:primary", "Probe:backup"],
    ),
    (State.ACTIVE, Input.PARTNER_FAILED): (
        both_probed,
        lambda h: h.fail(h.last_probe(BACKUP)),
        ["SpreadChanged"],
    ),
    (State.ACTIVE, Input.ALIVE_OTHER): (one_up, lambda h: h.answer(h.last_probe(BACKUP)), ["SpreadChanged"]),
    (State.ACTIVE, Input.CLAIM_CONFIRMED): (
        claim_pending,
        lambda h: h.answer(h.claim_probe),  # type: ignore[attr-defined]
        ["SpreadChanged"],
    ),
    (State.ACTIVE, Input.CLAIM_REJECTED): (
        claim_pending,
        lambda h: h.fail(h.claim_probe),  # type: ignore[attr-defined]
        [],
    ),
    (State.ACTIVE, Input.NEGATIVE_OTHER): (one_up, lambda h: h.fail(h.last_probe(BACKUP)), []),
    (State.ACTIVE, Input.SUSPECT_PARTNER): (
        both_up,
        lambda h: h.suspect(BACKUP),
        ["SpreadChanged", "Probe:backup"],
    ),
    (State.ACTIVE, Input.SUSPECT_OTHER): (backup_down, lambda h: h.suspect(BACKUP), []),
    (State.ACTIVE, Input.REQUEST_SPREAD): (both_up, lambda h: h.request(BACKUP), []),
    (State.ACTIVE, Input.LOST_TO_SURVIVOR): (
        both_up,
        lambda h: h.suspect(PRIMARY),
        ["MemberBecameActive:backup", "Probe:primary"],
    ),
    (State.ACTIVE, Input.MAINTENANCE_SPREAD): (both_up, lambda h: h.maintenance(PRIMARY), ["SpreadChanged"]),
    (State.ACTIVE, Input.AUTO_SPREAD): (
        in_maintenance,
        lambda h: h.maintenance(PRIMARY, on=False),
        ["SpreadChanged"],
    ),
}
"""The rows of docs/design.md §2.2 that are not derived: setup, action, what comes out."""


def _switched(setup: test_table.Setup) -> Setup:
    """A scenario of the primary-backup table, the pair switched to active-active once set up."""

    def build(takeover: float) -> Harness:
        harness = setup(takeover)
        harness.monitor.mode = ACTIVE_ACTIVE
        return harness

    return build


def _changed(
    table: Mapping[tuple[State, Input], Transition], base: Mapping[tuple[State, Input], Transition]
) -> list[tuple[State, Input]]:
    return [key for key, row in table.items() if base.get(key) != row]


ROWS = [(name, key) for name, (_, table, base) in TABLES.items() for key in _changed(table, base)]


def test_every_changed_row_has_a_scenario_and_every_op_an_output() -> None:
    for _, table, base in TABLES.values():
        for key in _changed(table, base):
            assert key in EXPLICIT or key in test_table.SCENARIOS, key
    assert {op for op in Op if op.name.startswith(("PARTNER_", "PROBE_PARTNER", "SPREAD_"))} == set(
        AA_OP_OUTPUT
    )


def test_the_inputs_of_one_active_member_are_absent() -> None:
    for table in (ACTIVE_ACTIVE_TABLE, ACTIVE_ACTIVE_TAKEOVER_TABLE):
        assert not [key for key in table if key[0] is State.ACTIVE and key[1] in NOT_ACTIVE_ACTIVE]
        for key, row in table.items():
            assert len(row.source) > 40, key
            if any(
                op in AA_OP_OUTPUT and op not in (Op.PROBE_PARTNER, Op.PARTNER_AGAIN, Op.PARTNER_CLEAR)
                for op in row.ops
            ):
                assert row.spread is not None, key


@pytest.mark.parametrize(("table_name", "key"), ROWS, ids=[f"{n}:{k[0].value}/{k[1].name}" for n, k in ROWS])
def test_row(table_name: str, key: tuple[State, Input]) -> None:
    takeover, table, base = TABLES[table_name]
    row = table[key]
    if key in EXPLICIT:
        setup, action, expected = EXPLICIT[key]
    else:  # an activation row of the primary-backup table, with the other member probed now
        base_setup, action = test_table.SCENARIOS[key]
        setup = _switched(base_setup)
        expected = None
    harness = setup(takeover)
    harness.trace.clear()
    outputs = action(harness)
    assert key in harness.trace
    assert harness.monitor.state is row.target
    if expected is None:
        base_row = base[key]
        names = [n.partition(":")[0] for n in kinds(outputs)]
        assert names == [
            *test_table.expected_outputs(base_row, split_before=False, claim_report_due=True),
            "Probe",
        ]
        active = harness.monitor.active
        assert active is not None
        other = BACKUP if active == PRIMARY else PRIMARY
        assert kinds(outputs)[-1] == f"Probe:{other.role}"
    else:
        assert kinds(outputs) == expected


# ------------------------------------------------------------------ the stories


def test_start_spreads_over_both_members_once_each_answers() -> None:
    harness = started()
    assert harness.monitor.answering() == ()
    harness.answer(harness.last_probe(PRIMARY))
    assert harness.monitor.answering() == (PRIMARY,)
    assert kinds(harness.out)[-2:] == ["MemberBecameActive:primary", "Probe:backup"]  # asked at once
    out = harness.answer(harness.last_probe(BACKUP))
    [event] = of_type(out, SpreadChanged)
    assert event.members == (PRIMARY, BACKUP)
    assert event.member == BACKUP
    assert "new calls spread over primary udp:10.0.1.10:5060, backup udp:10.0.1.11:5060" in event.message
    status = harness.monitor.status().as_dict()
    assert status["mode"] == "active-active"
    assert status["answering"] == ["primary", "backup"]
    assert status["spread"] == ["primary", "backup"]
    assert status["state"] == "active"


def test_a_lost_member_moves_everything_to_the_survivor_then_spreads_again_when_it_answers() -> None:
    harness = both_up(takeover=TAKEOVER)
    harness.advance(CHECK)  # 105: both probed
    harness.answer(harness.last_probe(BACKUP))
    out = harness.fail(harness.last_probe(PRIMARY))  # ICMP: the active member is gone
    [became] = of_type(out, MemberBecameActive)
    assert became.member == BACKUP
    assert became.previous == PRIMARY
    assert became.reason == "survivor"
    assert "the other member was lost" in became.message
    assert not of_type(out, PairUnknown)  # nothing held: the survivor answers already
    assert harness.monitor.state is State.ACTIVE
    assert harness.monitor.spread() == (BACKUP,)
    harness.fail(harness.last_probe(PRIMARY))  # still dead
    for _ in range(3):  # three periods: the survivor answers, the lost member does not
        harness.advance(CHECK)
        harness.answer(harness.last_probe(BACKUP))
        harness.fail(harness.last_probe(PRIMARY))
        assert harness.monitor.spread() == (BACKUP,)
    harness.advance(CHECK)  # the lost member is back: it answers the period's probe
    out = harness.answer(harness.last_probe(PRIMARY))
    [spread] = of_type(out, SpreadChanged)
    assert spread.members == (PRIMARY, BACKUP)
    assert spread.reason == "answered"
    assert harness.monitor.active == BACKUP  # existing dialogs and the state stay where they are


def test_both_lost_is_the_takeover_window_then_40001() -> None:
    harness = both_up(takeover=TAKEOVER)
    harness.suspect(BACKUP)  # out of the spread, probed again
    harness.fail(harness.last_probe(BACKUP))
    out = harness.suspect(PRIMARY)
    [unknown] = of_type(out, PairUnknown)
    assert unknown.hold == TAKEOVER
    assert harness.monitor.state is State.TAKEOVER
    assert harness.monitor.answering() == ()
    out = harness.advance(TAKEOVER + TAKEOVER_PROBE_INTERVAL)
    assert of_type(out, PairOutOfService)
    assert harness.monitor.status().state == "out-of-service"
    assert harness.monitor.status().as_dict()["answering"] == []


def test_one_lost_answer_of_the_other_member_is_not_its_death() -> None:
    """docs/design.md §2, loss is not death: the other member is asked again at each quarter."""
    harness = backup_silent()
    out = harness.advance(QUARTER)
    assert kinds(out) == ["Probe:backup"]
    out = harness.answer(harness.last_probe(BACKUP))
    assert out == []
    harness.at(105 + CHECK)
    assert harness.monitor.spread() == (PRIMARY, BACKUP)
    assert not [e for e in of_type(harness.out, SpreadChanged) if e.reason == "silent"]


def test_maintenance_leaves_the_spread_only_while_the_other_member_answers() -> None:
    harness = in_maintenance()
    [event] = of_type(harness.out, SpreadChanged)[-1:]
    assert event.members == (BACKUP,)
    assert event.reason == "maintenance"
    assert harness.monitor.answering() == (PRIMARY, BACKUP)
    harness.suspect(BACKUP)  # the other one stops answering: the member in maintenance keeps the calls
    assert harness.monitor.spread() == (PRIMARY,)
    assert harness.monitor.active == PRIMARY  # maintenance never moves an active-active pair
    harness.answer(harness.last_probe(BACKUP))
    assert harness.monitor.spread() == (BACKUP,)
    harness.maintenance(PRIMARY, on=False)
    assert harness.monitor.spread() == (PRIMARY, BACKUP)
    assert harness.monitor.status().maintenance == ()


def test_requests_from_either_member_switch_nothing() -> None:
    harness = both_up()
    for _ in range(5):
        harness.request(BACKUP)
        harness.request(PRIMARY)
    assert harness.monitor.active == PRIMARY
    assert harness.monitor.split_brain is False
    assert not of_type(harness.out, MemberBecameActive)[1:]


def test_unmonitored_takes_both_members_as_answering() -> None:
    harness = unmonitored()
    harness.start()
    assert harness.monitor.spread() == (PRIMARY, BACKUP)
    harness.suspect(BACKUP)
    harness.request(BACKUP)
    assert harness.monitor.spread() == (PRIMARY, BACKUP)


def test_a_reload_that_changes_the_mode_keeps_the_state() -> None:
    running = both_up()
    new = Monitor([(PRIMARY, BACKUP)], settings())
    new.use_modes({PRIMARY.pair: PRIMARY_BACKUP})
    new.adopt(running.monitor)
    assert new.pairs[PRIMARY.pair] is running.monitor
    assert running.monitor.mode == PRIMARY_BACKUP
    assert running.monitor.active == PRIMARY
    assert running.monitor.answering() == ()
    assert new.spread_table() == {}
    out = running.advance(CHECK)
    assert kinds(out) == ["Probe:primary"]  # primary-backup again: the backup is not probed


def test_a_primary_backup_pair_never_probes_the_backup_while_active() -> None:
    harness = Harness.started()
    harness.answer(harness.last_probe(PRIMARY))
    for _ in range(4):
        out = harness.advance(CHECK)
        harness.answer(harness.last_probe(PRIMARY))
        assert kinds(out) == ["Probe:primary"]
    assert harness.monitor.status().as_dict()["mode"] == "primary-backup"
    assert harness.monitor.spread() == ()


def test_a_split_brain_ends_when_the_mode_becomes_active_active() -> None:
    """A primary-backup pair in split brain switched to active-active: no stale split deadline."""
    harness = Harness.started()
    harness.answer(harness.last_probe(PRIMARY))
    harness.request(BACKUP)
    harness.answer(harness.last_probe(BACKUP))  # the claim confirmed: the backup is active
    harness.request(PRIMARY)  # the displaced primary acts as primary too: split brain
    assert harness.monitor.split_brain
    harness.monitor.mode = ACTIVE_ACTIVE
    assert harness.monitor.status().split_brain is False
    deadline = harness.monitor.next_deadline()
    assert deadline is not None
    assert deadline > harness.now
