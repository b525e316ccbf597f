"""Every row of the pair table, driven through the public API, plus the table's own consistency."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from sipha.ha import TABLE, TAKEOVER_PROBE_INTERVAL, TAKEOVER_ROWS, Input, Op, Output, State, table_for
from sipha.ha.machine import Transition
from sipha.ha.pair import CLAIM_REPORT_INTERVAL
from sipha.ha.settings import PERIOD_REASKS
from tests.ha.support import BACKUP, CHECK, FORCE, PRIMARY, Harness, kinds

Setup = Callable[[float], Harness]
"""Builds the harness of a scenario, given takeover-timeout (0: the classic table)."""
Action = Callable[[Harness], list[Output]]

TAKEOVER = 6.0
"""takeover-timeout for the rows of ``table_for(takeover=True)``."""

TABLES: dict[str, tuple[float, Mapping[tuple[State, Input], Transition]]] = {
    "classic": (0.0, TABLE),
    "takeover": (TAKEOVER, table_for(takeover=True)),
}


# ------------------------------------------------------------------ setups (now = 100 at start)


def unknown(takeover: float) -> Harness:
    """Started: unknown, probe #1 to the primary at 100, next probe at 102."""
    return Harness.started(takeover=takeover)


def out_of_service(takeover: float) -> Harness:
    """Probe #2 to the backup at 102, out of service and probe #3 to the primary at 104."""
    harness = Harness.started(takeover=takeover)
    harness.advance(FORCE)
    harness.advance(FORCE)
    assert harness.monitor.state is State.OUT_OF_SERVICE
    return harness


def active(takeover: float) -> Harness:
    """The primary answered probe #1 at once: active, next probe at 105."""
    harness = Harness.started(takeover=takeover)
    harness.answer(harness.last_probe(PRIMARY))
    assert harness.monitor.active == PRIMARY
    return harness


def active_probing(takeover: float) -> Harness:
    """Active, with this period's probe (#2, sent at 105) outstanding."""
    harness = active(takeover)
    harness.advance(CHECK)
    return harness


def active_asked(takeover: float) -> Harness:
    """Active, this period's probe (#2, 105) unanswered and asked again at each quarter: due at 110."""
    harness = active_probing(takeover)
    harness.advance(CHECK * PERIOD_REASKS / (PERIOD_REASKS + 1))
    return harness


def active_with_leftovers(takeover: float) -> Harness:
    """Restored on the primary at 104 (probe #3), with #1 (primary) and #2 (backup) still outstanding."""
    harness = out_of_service(takeover)
    harness.answer(harness.last_probe(PRIMARY))
    assert harness.monitor.active == PRIMARY
    return harness


def active_split(takeover: float) -> Harness:
    """Split brain since 106 (the backup answered #2 alive); the 109 probe already sent and answered."""
    harness = active_with_leftovers(takeover)
    harness.advance(2.0)
    harness.answer(harness.probes()[1])
    harness.advance(3.5)
    harness.answer(harness.last_probe(PRIMARY))
    assert harness.monitor.split_brain
    return harness


def switched_by_request(takeover: float) -> Harness:
    """Active on the backup, which displaced the primary by a confirmed request at 100."""
    harness = active(takeover)
    harness.claim(BACKUP)
    assert harness.monitor.active == BACKUP
    return harness


def unmonitored(takeover: float) -> Harness:
    """oos-check 0: the primary active from the start (no takeover window without monitoring)."""
    harness = Harness.make(check=0.0, takeover=takeover)
    harness.start()
    return harness


def claimed(setup: Setup) -> Setup:
    """``setup``, then a request from the backup: its confirmation probe is outstanding."""

    def build(takeover: float) -> Harness:
        harness = setup(takeover)
        harness.request(BACKUP)
        assert harness.last_probe().member == BACKUP
        return harness

    return build


def claimed_in_split(takeover: float) -> Harness:
    """Active on the primary, a claim of the backup outstanding, then split brain (#2 answered alive)."""
    harness = claimed(active_with_leftovers)(takeover)
    harness.answer(harness.probes()[1])
    assert harness.monitor.split_brain
    return harness


def in_takeover(takeover: float) -> Harness:
    """The primary silent at 110: the window (until 110 + takeover), backup and primary probed at 110."""
    assert takeover > 0
    harness = active_probing(takeover)
    harness.advance(CHECK)
    assert harness.monitor.state is State.TAKEOVER
    return harness


def takeover_ending(takeover: float) -> Harness:
    """In the window, a quarter of a second before it ends (its last probes just sent)."""
    harness = in_takeover(takeover)
    harness.advance(takeover - TAKEOVER_PROBE_INTERVAL)
    assert harness.monitor.state is State.TAKEOVER
    return harness


def in_maintenance(takeover: float) -> Harness:
    """Active on the primary, put in maintenance: the handover probe to the backup outstanding."""
    harness = active(takeover)
    harness.maintenance(PRIMARY)
    assert harness.last_probe().member == BACKUP
    return harness


def backup_in_maintenance(takeover: float) -> Harness:
    """Active on the primary; the backup (not active) put in maintenance: nothing sent."""
    harness = active(takeover)
    assert harness.maintenance(BACKUP) == []
    return harness


SCENARIOS: dict[tuple[State, Input], tuple[Setup, Action]] = {
    (State.ACTIVE, Input.MAINTENANCE_ACTIVE): (active, lambda h: h.maintenance(PRIMARY)),
    (State.ACTIVE, Input.PERIOD_ANSWERED_MAINTENANCE): (in_maintenance, lambda h: h.advance(CHECK)),
    (State.ACTIVE, Input.HANDOVER_CONFIRMED): (in_maintenance, lambda h: h.answer(h.last_probe(BACKUP))),
    (State.ACTIVE, Input.REQUEST_MAINTENANCE): (backup_in_maintenance, lambda h: h.request(BACKUP)),
    (State.INITIAL, Input.START): (lambda t: Harness.make(takeover=t), lambda h: h.start()),
    (State.INITIAL, Input.START_UNMONITORED): (
        lambda t: Harness.make(check=0.0, takeover=t),
        lambda h: h.start(),
    ),
    (State.ACTIVE, Input.PERIOD_ANSWERED): (active, lambda h: h.advance(CHECK)),
    (State.ACTIVE, Input.ALIVE_ACTIVE): (active_probing, lambda h: h.answer(h.last_probe())),
    (State.ACTIVE, Input.PERIOD_UNANSWERED): (
        active_probing,
        lambda h: h.advance(CHECK / (PERIOD_REASKS + 1)),
    ),
    (State.ACTIVE, Input.PERIOD_SILENT): (
        active_asked,
        lambda h: h.advance(CHECK / (PERIOD_REASKS + 1)),
    ),
    (State.ACTIVE, Input.NOT_ALIVE_CYCLE): (active_probing, lambda h: h.answer(h.last_probe(), 503)),
    (State.ACTIVE, Input.FAILED_CYCLE): (active_probing, lambda h: h.fail(h.last_probe())),
    (State.ACTIVE, Input.NEGATIVE_STALE): (active_with_leftovers, lambda h: h.fail(h.probes()[0])),
    (State.ACTIVE, Input.SUSPECT_ACTIVE): (active, lambda h: h.suspect(PRIMARY)),
    (State.ACTIVE, Input.SUSPECT_OTHER): (active, lambda h: h.suspect(BACKUP)),
    (State.ACTIVE, Input.SUSPECT_UNMONITORED): (unmonitored, lambda h: h.suspect(PRIMARY)),
    (State.ACTIVE, Input.REQUEST_ACTIVE): (active, lambda h: h.request(PRIMARY)),
    (State.ACTIVE, Input.REQUEST_OTHER): (unmonitored, lambda h: h.request(BACKUP)),
    (State.ACTIVE, Input.REQUEST_CLAIM): (active, lambda h: h.request(BACKUP)),
    (State.ACTIVE, Input.CLAIM_CONFIRMED): (claimed(active), lambda h: h.answer(h.last_probe(BACKUP))),
    (State.ACTIVE, Input.CLAIM_REJECTED): (claimed_in_split, lambda h: h.fail(h.last_probe(BACKUP))),
    (State.ACTIVE, Input.PEER_ACTIVE): (active, lambda h: h.peer_active(BACKUP)),
    (State.ACTIVE, Input.PEER_LOST): (active, lambda h: h.peer_lost(PRIMARY)),
    (State.UNKNOWN, Input.PEER_ACTIVE): (unknown, lambda h: h.peer_active(BACKUP)),
    (State.OUT_OF_SERVICE, Input.PEER_ACTIVE): (out_of_service, lambda h: h.peer_active(BACKUP)),
    (State.TAKEOVER, Input.PEER_ACTIVE): (in_takeover, lambda h: h.peer_active(BACKUP)),
    (State.ACTIVE, Input.REQUEST_OTHER_SPLIT): (switched_by_request, lambda h: h.request(PRIMARY)),
    (State.ACTIVE, Input.ALIVE_OTHER): (active_with_leftovers, lambda h: h.answer(h.probes()[1])),
    (State.ACTIVE, Input.NEGATIVE_OTHER): (active_with_leftovers, lambda h: h.fail(h.probes()[1])),
    (State.ACTIVE, Input.SPLIT_STALE): (active_split, lambda h: h.advance(1.5)),
    (State.UNKNOWN, Input.FORCE): (unknown, lambda h: h.advance(FORCE)),
    (State.UNKNOWN, Input.FORCE_ROUND): (
        lambda t: _then(unknown(t), lambda h: h.advance(FORCE)),
        lambda h: h.advance(FORCE),
    ),
    (State.UNKNOWN, Input.ALIVE_OTHER): (unknown, lambda h: h.answer(h.last_probe())),
    (State.UNKNOWN, Input.REQUEST_CLAIM): (unknown, lambda h: h.request(BACKUP)),
    (State.UNKNOWN, Input.CLAIM_CONFIRMED): (claimed(unknown), lambda h: h.answer(h.last_probe(BACKUP))),
    (State.UNKNOWN, Input.NEGATIVE_OTHER): (unknown, lambda h: h.fail(h.last_probe())),
    (State.UNKNOWN, Input.SUSPECT_OTHER): (unknown, lambda h: h.suspect(PRIMARY)),
    (State.OUT_OF_SERVICE, Input.FORCE): (out_of_service, lambda h: h.advance(FORCE)),
    (State.OUT_OF_SERVICE, Input.ALIVE_OTHER): (out_of_service, lambda h: h.answer(h.last_probe())),
    (State.OUT_OF_SERVICE, Input.REQUEST_CLAIM): (out_of_service, lambda h: h.request(BACKUP)),
    (State.OUT_OF_SERVICE, Input.CLAIM_CONFIRMED): (
        claimed(out_of_service),
        lambda h: h.answer(h.last_probe(BACKUP)),
    ),
    (State.OUT_OF_SERVICE, Input.NEGATIVE_OTHER): (out_of_service, lambda h: h.fail(h.probes()[1])),
    (State.OUT_OF_SERVICE, Input.SUSPECT_OTHER): (out_of_service, lambda h: h.suspect(BACKUP)),
    # ------------------------------------------------------------------ the takeover window's own rows
    (State.TAKEOVER, Input.TAKEOVER_PROBE): (in_takeover, lambda h: h.advance(TAKEOVER_PROBE_INTERVAL)),
    (State.TAKEOVER, Input.TAKEOVER_END): (takeover_ending, lambda h: h.advance(TAKEOVER_PROBE_INTERVAL)),
    (State.TAKEOVER, Input.ALIVE_OTHER): (in_takeover, lambda h: h.answer(h.last_probe(BACKUP))),
    (State.TAKEOVER, Input.REQUEST_CLAIM): (in_takeover, lambda h: h.request(BACKUP)),
    (State.TAKEOVER, Input.CLAIM_CONFIRMED): (
        claimed(in_takeover),
        lambda h: h.answer(h.last_probe(BACKUP)),
    ),
    (State.TAKEOVER, Input.NEGATIVE_OTHER): (in_takeover, lambda h: h.fail(h.last_probe(BACKUP))),
    (State.TAKEOVER, Input.SUSPECT_OTHER): (in_takeover, lambda h: h.suspect(PRIMARY)),
}


def _then(harness: Harness, action: Action) -> Harness:
    action(harness)
    return harness


OP_OUTPUT: dict[Op, tuple[str, ...]] = {
    Op.PROBE_PRIMARY: ("Probe",),
    Op.PROBE_OTHER_FIRST: ("Probe",),
    Op.PROBE_NEXT: ("Probe",),
    Op.PROBE_ACTIVE: ("Probe",),
    Op.PROBE_AGAIN: ("Probe",),
    Op.PROBE_CLAIMANT: ("Probe",),
    Op.PROBE_HANDOVER: ("Probe",),  # the scenarios send no claim within a probe interval before
    Op.START_TAKEOVER: ("Probe", "Probe"),
    Op.PROBE_BOTH: ("Probe", "Probe"),
    Op.MARK_ANSWERED: (),
    Op.ACTIVATE_PRIMARY: ("MemberBecameActive",),
    Op.ACTIVATE_SOURCE: ("MemberBecameActive",),
    Op.WAIT_PERIOD: (),
    Op.EMIT_UNKNOWN: ("PairUnknown",),
    Op.EMIT_OUT_OF_SERVICE: ("PairOutOfService",),
    Op.EMIT_RESTORED: ("PairRestored",),
}
"""What each operation outputs; the split-brain ones and EMIT_CLAIM_REJECTED depend on the pair."""


def expected_outputs(row: Transition, *, split_before: bool, claim_report_due: bool) -> list[str]:
    names: list[str] = []
    for op in row.ops:
        if op is Op.SPLIT_EVIDENCE:
            names += [] if split_before else ["SplitBrain"]
        elif op is Op.SPLIT_END:
            names += ["SplitBrain"] if split_before else []
        elif op is Op.EMIT_CLAIM_REJECTED:
            names += ["ClaimRejected"] if claim_report_due else []
        else:
            names += OP_OUTPUT[op]
    return names


def test_every_row_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(TABLE) | set(table_for(takeover=True))


def test_every_op_has_its_output() -> None:
    # The active-active operations (docs/design.md §2.2): tests/ha/test_active_active.py.
    active_active = {op for op in Op if op.name.startswith(("PARTNER_", "PROBE_PARTNER", "SPREAD_"))}
    assert set(OP_OUTPUT) | {Op.SPLIT_EVIDENCE, Op.SPLIT_END, Op.EMIT_CLAIM_REJECTED} | active_active == set(
        Op
    )


ROWS = [(name, key) for name, (_, table) in TABLES.items() for key in table]


@pytest.mark.parametrize(
    ("table_name", "key"), ROWS, ids=[f"{name}:{key[0].value}/{key[1].name}" for name, key in ROWS]
)
def test_row(table_name: str, key: tuple[State, Input]) -> None:
    takeover, table = TABLES[table_name]
    setup, action = SCENARIOS[key]
    harness = setup(takeover)
    monitor = harness.monitor
    harness.trace.clear()
    split_before = monitor.split_brain
    claim_report_due = harness.now - monitor._claims_reported_at >= CLAIM_REPORT_INTERVAL
    outputs = action(harness)
    row = table[key]
    assert harness.trace == [key]
    assert monitor.state is row.target
    assert [name.partition(":")[0] for name in kinds(outputs)] == expected_outputs(
        row, split_before=split_before, claim_report_due=claim_report_due
    )


@pytest.mark.parametrize("table_name", list(TABLES))
def test_rows_cite_their_source_and_name_their_reasons(table_name: str) -> None:
    _, table = TABLES[table_name]
    for key, row in table.items():
        assert len(row.source) > 40, key
        activates = {Op.ACTIVATE_PRIMARY, Op.ACTIVATE_SOURCE} & set(row.ops)
        assert (row.activation is not None) == bool(activates), key
        assert (row.unknown is not None) == (Op.EMIT_UNKNOWN in row.ops), key
        if row.target is not State.ACTIVE:
            # Leaving ACTIVE ends a split brain (reported) before the state is left.
            assert key[0] is not State.ACTIVE or row.ops[0] is Op.SPLIT_END, key


LOSSES = {
    Input.PERIOD_SILENT,
    Input.NOT_ALIVE_CYCLE,
    Input.FAILED_CYCLE,
    Input.SUSPECT_ACTIVE,
    Input.PEER_LOST,
}
TAKEOVER_OPS = {Op.START_TAKEOVER, Op.PROBE_BOTH}


def test_the_takeover_rows_replace_the_losses_and_add_the_window() -> None:
    assert table_for(takeover=False) is TABLE
    assert table_for(takeover=True) == {**TABLE, **TAKEOVER_ROWS}
    # Only the four ways an active pair loses its member are replaced; the rest are new.
    replaced = set(TAKEOVER_ROWS) & set(TABLE)
    assert replaced == {(State.ACTIVE, lost) for lost in LOSSES}
    assert {key[0] for key in set(TAKEOVER_ROWS) - replaced} == {State.TAKEOVER}
    for key in replaced:
        classic, row = TABLE[key], TAKEOVER_ROWS[key]
        assert classic.target is State.UNKNOWN
        assert row.target is State.TAKEOVER
        assert row.ops == (Op.SPLIT_END, Op.EMIT_UNKNOWN, Op.START_TAKEOVER)
        assert row.unknown == classic.unknown
        assert row.source.startswith(classic.source)
    # The window ends in one of two ways: a member found, or out of service.
    assert {row.target for row in TAKEOVER_ROWS.values()} == {
        State.TAKEOVER,
        State.ACTIVE,
        State.OUT_OF_SERVICE,
    }


def test_the_classic_table_never_enters_the_window() -> None:
    for key, row in TABLE.items():
        assert key[0] is not State.TAKEOVER, key
        assert row.target is not State.TAKEOVER, key
        assert not TAKEOVER_OPS & set(row.ops), key
        assert key[1] not in {Input.TAKEOVER_PROBE, Input.TAKEOVER_END}, key


def test_requests_switch_at_once_only_when_unmonitored_and_otherwise_are_confirmed() -> None:
    for _, table in TABLES.values():
        # An unmonitored pair never leaves ACTIVE: REQUEST_OTHER has no other source state.
        assert [key for key in table if key[1] is Input.REQUEST_OTHER] == [
            (State.ACTIVE, Input.REQUEST_OTHER)
        ]
        for key, row in table.items():
            if key[1] is Input.REQUEST_CLAIM:
                assert (row.target, row.ops) == (key[0], (Op.PROBE_CLAIMANT,)), key
            if key[1] is Input.CLAIM_CONFIRMED:
                assert (row.target, row.activation) == (State.ACTIVE, "request"), key
        claim_states = {key[0] for key in table if key[1] is Input.REQUEST_CLAIM}
        assert claim_states == {key[0] for key in table if key[1] is Input.CLAIM_CONFIRMED}
        # Only an active pair rejects a claim; elsewhere a negative result is NEGATIVE_OTHER.
        assert [key for key in table if key[1] is Input.CLAIM_REJECTED] == [
            (State.ACTIVE, Input.CLAIM_REJECTED)
        ]
        assert {(state, Input.NEGATIVE_OTHER) for state in claim_states} <= set(table)


def test_an_absent_row_is_ignored() -> None:
    harness = unknown(0.0)
    harness.monitor._run(Input.REQUEST_ACTIVE, harness.now, PRIMARY)
    assert harness.monitor.state is State.UNKNOWN
    assert harness.monitor.drain() == []
