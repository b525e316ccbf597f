"""Every row of the pair table, driven through the public API, plus the table's own consistency."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from ha_support import BACKUP, CHECK, FORCE, PRIMARY, Harness, kinds

from sipha.ha import TABLE, Input, Op, Output, State
from sipha.ha.machine import Transition

Setup = Callable[[], Harness]
Action = Callable[[Harness], list[Output]]


# ------------------------------------------------------------------ setups (now = 100 at start)


def unknown() -> Harness:
    """Started: unknown, probe #1 to the primary at 100, next probe at 102."""
    return Harness.started()


def out_of_service() -> Harness:
    """Probe #2 to the backup at 102, out of service and probe #3 to the primary at 104."""
    harness = Harness.started()
    harness.advance(FORCE)
    harness.advance(FORCE)
    assert harness.monitor.state is State.OUT_OF_SERVICE
    return harness


def active() -> Harness:
    """The primary answered probe #1 at once: active, next probe at 105."""
    harness = Harness.started()
    harness.answer(harness.last_probe(PRIMARY))
    assert harness.monitor.active == PRIMARY
    return harness


def active_probing() -> Harness:
    """Active, with this period's probe (#2, sent at 105) outstanding."""
    harness = active()
    harness.advance(CHECK)
    return harness


def active_with_leftovers() -> Harness:
    """Restored on the primary at 104 (probe #3), with #1 (primary) and #2 (backup) still outstanding."""
    harness = out_of_service()
    harness.answer(harness.last_probe(PRIMARY))
    assert harness.monitor.active == PRIMARY
    return harness


def active_split() -> Harness:
    """Split brain since 106 (the backup answered #2 alive); the 109 probe already sent."""
    harness = active_with_leftovers()
    harness.advance(2.0)
    harness.answer(harness.probes()[1])
    harness.advance(3.5)
    assert harness.monitor.split_brain
    return harness


def switched_by_request() -> Harness:
    """Active on the backup, which displaced the primary by a request at 100."""
    harness = active()
    harness.request(BACKUP)
    assert harness.monitor.active == BACKUP
    return harness


def unmonitored() -> Harness:
    """oos-check 0: the primary active from the start."""
    harness = Harness.make(check=0.0)
    harness.start()
    return harness


SCENARIOS: dict[tuple[State, Input], tuple[Setup, Action]] = {
    (State.INITIAL, Input.START): (Harness.make, lambda h: h.start()),
    (State.INITIAL, Input.START_UNMONITORED): (lambda: Harness.make(check=0.0), lambda h: h.start()),
    (State.ACTIVE, Input.PERIOD_ANSWERED): (active, lambda h: h.advance(CHECK)),
    (State.ACTIVE, Input.ALIVE_ACTIVE): (active_probing, lambda h: h.answer(h.last_probe())),
    (State.ACTIVE, Input.PERIOD_SILENT): (active_probing, lambda h: h.advance(CHECK)),
    (State.ACTIVE, Input.NOT_ALIVE_CYCLE): (active_probing, lambda h: h.answer(h.last_probe(), 503)),
    (State.ACTIVE, Input.FAILED_CYCLE): (active_probing, lambda h: h.fail(h.last_probe())),
    (State.ACTIVE, Input.NEGATIVE_STALE): (active_with_leftovers, lambda h: h.fail(h.probes()[0])),
    (State.ACTIVE, Input.SUSPECT_ACTIVE): (active, lambda h: h.suspect(PRIMARY)),
    (State.ACTIVE, Input.SUSPECT_OTHER): (active, lambda h: h.suspect(BACKUP)),
    (State.ACTIVE, Input.SUSPECT_UNMONITORED): (unmonitored, lambda h: h.suspect(PRIMARY)),
    (State.ACTIVE, Input.REQUEST_ACTIVE): (active, lambda h: h.request(PRIMARY)),
    (State.ACTIVE, Input.REQUEST_OTHER): (active, lambda h: h.request(BACKUP)),
    (State.ACTIVE, Input.REQUEST_OTHER_SPLIT): (switched_by_request, lambda h: h.request(PRIMARY)),
    (State.ACTIVE, Input.ALIVE_OTHER): (active_with_leftovers, lambda h: h.answer(h.probes()[1])),
    (State.ACTIVE, Input.NEGATIVE_OTHER): (active_with_leftovers, lambda h: h.fail(h.probes()[1])),
    (State.ACTIVE, Input.SPLIT_STALE): (active_split, lambda h: h.advance(1.5)),
    (State.UNKNOWN, Input.FORCE): (unknown, lambda h: h.advance(FORCE)),
    (State.UNKNOWN, Input.FORCE_ROUND): (
        lambda: _then(unknown(), lambda h: h.advance(FORCE)),
        lambda h: h.advance(FORCE),
    ),
    (State.UNKNOWN, Input.ALIVE_OTHER): (unknown, lambda h: h.answer(h.last_probe())),
    (State.UNKNOWN, Input.REQUEST_OTHER): (unknown, lambda h: h.request(BACKUP)),
    (State.UNKNOWN, Input.NEGATIVE_OTHER): (unknown, lambda h: h.fail(h.last_probe())),
    (State.UNKNOWN, Input.SUSPECT_OTHER): (unknown, lambda h: h.suspect(PRIMARY)),
    (State.OUT_OF_SERVICE, Input.FORCE): (out_of_service, lambda h: h.advance(FORCE)),
    (State.OUT_OF_SERVICE, Input.ALIVE_OTHER): (out_of_service, lambda h: h.answer(h.last_probe())),
    (State.OUT_OF_SERVICE, Input.REQUEST_OTHER): (out_of_service, lambda h: h.request(BACKUP)),
    (State.OUT_OF_SERVICE, Input.NEGATIVE_OTHER): (out_of_service, lambda h: h.fail(h.probes()[1])),
    (State.OUT_OF_SERVICE, Input.SUSPECT_OTHER): (out_of_service, lambda h: h.suspect(BACKUP)),
}


def _then(harness: Harness, action: Action) -> Harness:
    action(harness)
    return harness


OP_OUTPUT: dict[Op, str | None] = {
    Op.PROBE_PRIMARY: "Probe",
    Op.PROBE_OTHER_FIRST: "Probe",
    Op.PROBE_NEXT: "Probe",
    Op.PROBE_ACTIVE: "Probe",
    Op.MARK_ANSWERED: None,
    Op.ACTIVATE_PRIMARY: "MemberBecameActive",
    Op.ACTIVATE_SOURCE: "MemberBecameActive",
    Op.WAIT_PERIOD: None,
    Op.EMIT_UNKNOWN: "PairUnknown",
    Op.EMIT_OUT_OF_SERVICE: "PairOutOfService",
    Op.EMIT_RESTORED: "PairRestored",
}


def expected_outputs(row: Transition, *, split_before: bool) -> list[str]:
    names: list[str] = []
    for op in row.ops:
        if op is Op.SPLIT_EVIDENCE:
            names += [] if split_before else ["SplitBrain"]
        elif op is Op.SPLIT_END:
            names += ["SplitBrain"] if split_before else []
        else:
            name = OP_OUTPUT[op]
            names += [] if name is None else [name]
    return names


def test_every_row_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(TABLE)


@pytest.mark.parametrize("key", list(TABLE), ids=lambda key: f"{key[0].value}/{key[1].name}")
def test_row(key: tuple[State, Input]) -> None:
    setup, action = SCENARIOS[key]
    harness = setup()
    harness.monitor.trace.clear()
    split_before = harness.monitor.split_brain
    outputs = action(harness)
    row = TABLE[key]
    assert harness.monitor.trace == [key]
    assert harness.monitor.state is row.target
    assert [name.partition(":")[0] for name in kinds(outputs)] == expected_outputs(
        row, split_before=split_before
    )


def test_rows_cite_their_source_and_name_their_reasons() -> None:
    for key, row in TABLE.items():
        assert len(row.source) > 40, key
        activates = {Op.ACTIVATE_PRIMARY, Op.ACTIVATE_SOURCE} & set(row.ops)
        assert (row.activation is not None) == bool(activates), key
        assert (row.unknown is not None) == (Op.EMIT_UNKNOWN in row.ops), key
        if row.target is not State.ACTIVE:
            # Leaving ACTIVE ends a split brain (reported) before the state is left.
            assert key[0] is not State.ACTIVE or row.ops[0] is Op.SPLIT_END, key


def test_an_absent_row_is_ignored() -> None:
    harness = unknown()
    harness.monitor._run(Input.REQUEST_ACTIVE, harness.now, PRIMARY)
    assert harness.monitor.state is State.UNKNOWN
    assert harness.monitor.drain() == []
