"""Active-active pairs in routing and in the proxy core (docs/design.md §2.2), on the fake clock.

New Call-IDs from endpoints spread over the members that answer, by a hash of the Call-ID
the same in every process; a member that fails hands everything to the other one, with the
rules of docs/design.md §2 for what was sent to it (never a second copy to a member that may
have it, a ringing INVITE moved only when its member is gone); in-dialog requests stay on
their member while it answers and reach the survivor when it does not; the member back in
the spread takes new Call-IDs only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from itertools import count

from sipha.ha import (
    ACTIVE_ACTIVE,
    AliveCodes,
    MemberBecameActive,
    Monitor,
    MonitorSettings,
    PairOutOfService,
    PairUnknown,
    Probe,
    SpreadChanged,
    State,
)
from sipha.proxy.core import ProxyCore, ProxySettings
from sipha.proxy.fallback import Fallbacks
from sipha.proxy.routing import Answer, Forward, decide, spread_member
from sipha.proxy.view import ConfiguredView, PairSpec
from sipha.sip import Request, parse_message
from sipha.sip.address import Address
from sipha.txn import SendMessage
from tests.proxy.support import (
    ALICE,
    BACKUP,
    PRIMARY,
    RECORD_ROUTE,
    HaHarness,
    cancel,
    demo_monitor,
    invite,
    requests,
    response_to,
    statuses,
)

FAILOVER = 1.0
CHECK = 1.0
MEMBERS = {PRIMARY: "primary", BACKUP: "backup"}


def aa_view() -> ConfiguredView:
    return ConfiguredView.build(
        [("127.0.0.1", 5060), ("proxy.example.com", None)],
        [PairSpec("demo", PRIMARY, BACKUP, serving=True, mode=ACTIVE_ACTIVE)],
    )


PRIMARY_MEMBER, BACKUP_MEMBER = aa_view().members("demo")


@dataclass
class AaHarness(HaHarness):
    """:class:`HaHarness`, and the INVITE branches its members answered 100 Trying to."""

    tried: set[str] = field(default_factory=set)

    def trying(self, member: Address) -> list[SendMessage]:
        """``member`` answers 100 Trying to every INVITE branch it got and has not answered yet."""
        out: list[SendMessage] = []
        for request in requests(self.sent, member):
            branch = request.top_via.branch or ""
            if request.method == "INVITE" and branch not in self.tried:
                self.tried.add(branch)
                out += self.feed(response_to(request, 100, "Trying"), member)
        return out


def aa_harness(*, takeover: float = 0.0) -> AaHarness:
    """An active-active pair, both members answering, at t = 0 (oos-check = oos-force = 1 s)."""
    tokens = count(1)
    view = aa_view()
    monitor = demo_monitor(view, oos_check=CHECK, oos_force=1.0, takeover=takeover)
    monitor.use_modes({"demo": ACTIVE_ACTIVE})
    core = ProxyCore(
        ProxySettings(record_route=RECORD_ROUTE, via={"UDP": ("127.0.0.1", 5060)}, failover_timeout=FAILOVER),
        view,
        token=lambda: f"t{next(tokens)}",
        monitor=monitor,
    )
    h = AaHarness(core)
    core.start(h.now)
    h._collect()
    h.answer_probes(PRIMARY)
    h.answer_probes(BACKUP)  # probed as soon as the primary made the pair active
    assert core.view.spread("demo") == (PRIMARY_MEMBER, BACKUP_MEMBER)
    core.drain_events()
    return h


def run(h: AaHarness, seconds: float, *alive: Address) -> list[SendMessage]:
    """Move the clock deadline by deadline; each member of ``alive`` answers its probes and INVITEs."""
    end = h.now + seconds
    out: list[SendMessage] = []
    while True:
        for member in alive:
            out += h.answer_probes(member)
            out += h.trying(member)
        deadline = h.core.next_deadline()
        if deadline is None or deadline > end:
            break
        out += h.advance(max(deadline - h.now, 0.0))
    return out + h.advance(end - h.now)


def calls(sent: list[SendMessage], method: str = "INVITE") -> dict[Address, dict[str, set[str]]]:
    """Per member: Call-ID -> the branches of ``method`` it was sent (retransmissions share theirs)."""
    seen: dict[Address, dict[str, set[str]]] = {PRIMARY: {}, BACKUP: {}}
    for destination, branches in seen.items():
        for request in requests(sent, destination):
            if request.method == method:
                branches.setdefault(request.call_id, set()).add(request.top_via.branch or "")
    return seen


def new_call(h: HaHarness, call_id: str) -> list[SendMessage]:
    return h.feed(invite(call_id=call_id, branch=f"z9hG4bK-{call_id}"))


def picked(call_id: str, *members: Address) -> Address:
    chosen = spread_member(call_id, [m for m in (PRIMARY_MEMBER, BACKUP_MEMBER) if m.address in members])
    return chosen.address


# ------------------------------------------------------------------ the spread, a pure function


def test_the_spread_is_balanced_over_a_thousand_call_ids() -> None:
    for shape in ("{i}-4242@127.0.0.1", "a84b4c76e66710{i:06x}@pc33.atlanta.com", "{i}"):
        ids = [shape.format(i=i) for i in range(1000)]
        to_primary = sum(spread_member(c, [PRIMARY_MEMBER, BACKUP_MEMBER]) == PRIMARY_MEMBER for c in ids)
        print(f"ACTIVE-ACTIVE unit spread {shape!r}: {to_primary / 10:.1f} % primary")
        assert 450 <= to_primary <= 550, (shape, to_primary)


def test_the_spread_is_the_same_in_every_process_and_needs_both_members_to_split() -> None:
    """Not Python's ``hash`` (salted per process): two instances of the pool, or two workers, agree."""
    ids = [f"call-{i}@host" for i in range(64)]
    here = "".join(
        "p" if spread_member(c, [PRIMARY_MEMBER, BACKUP_MEMBER]) == PRIMARY_MEMBER else "b" for c in ids
    )
    program = (
        "from sipha.ha import Member\nfrom sipha.sip.address import Address\n"
        "from sipha.proxy.routing import spread_member\n"
        "p = Member('demo', 'primary', Address('UDP', '127.0.0.1', 5070))\n"
        "b = Member('demo', 'backup', Address('UDP', '127.0.0.1', 5080))\n"
        f"print(''.join('p' if spread_member(c, [p, b]) == p else 'b' for c in {ids!r}))"
    )
    for seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            timeout=30,
            check=True,
        )
        assert result.stdout.strip() == here
    assert {spread_member(c, [BACKUP_MEMBER]) for c in ids} == {BACKUP_MEMBER}
    assert "p" in here
    assert "b" in here


def test_routing_rule_4_by_call_id_and_rule_2_to_the_member_while_it_answers() -> None:
    view = aa_view()
    for index in range(20):
        call_id = f"c{index}@alice"
        request = _request(invite(call_id=call_id))
        decision = decide(request, ALICE, view)
        assert decision == Forward(picked(call_id, PRIMARY, BACKUP), "demo")
    bye = _request(invite(method="BYE", uri="sip:srv@127.0.0.1:5080", to_tag="x", body=b""))
    assert decide(bye, ALICE, view) == Forward(BACKUP, "demo")  # its member answers: it stays there
    view.answering["demo"] = view.spreads["demo"] = (PRIMARY_MEMBER,)  # the backup stopped answering
    assert decide(bye, ALICE, view) == Forward(PRIMARY, "demo")  # to the survivor
    for index in range(20):
        assert decide(_request(invite(call_id=f"c{index}@alice")), ALICE, view) == Forward(PRIMARY, "demo")
    view.active["demo"] = None
    view.answering["demo"] = view.spreads["demo"] = ()
    decision = decide(_request(invite()), ALICE, view)
    assert isinstance(decision, Answer)
    assert (decision.status, decision.pair) == (503, "demo")


def _request(data: bytes) -> Request:
    request = parse_message(data)
    assert isinstance(request, Request)
    return request


# ------------------------------------------------------------------ the core


def test_new_call_ids_spread_and_a_dialog_meets_its_member() -> None:
    h = aa_harness()
    sent: list[SendMessage] = []
    for index in range(40):
        sent += new_call(h, f"c{index}")
    seen = calls(sent)
    for member in (PRIMARY, BACKUP):
        assert seen[member], member
        for call_id in seen[member]:
            assert picked(call_id, PRIMARY, BACKUP) == member
    # A retransmission and the CANCEL of a call meet the member its INVITE went to.
    target = next(iter(seen[BACKUP]))
    assert requests(h.feed(invite(call_id=target, branch=f"z9hG4bK-{target}"))) == []  # absorbed
    [forwarded] = [r for r in requests(h.sent, BACKUP) if r.call_id == target and r.method == "INVITE"][:1]
    h.feed(response_to(forwarded, 180, "Ringing", to_tag="b1"), BACKUP)
    sent = h.feed(cancel(call_id=target, branch=f"z9hG4bK-{target}"))
    assert [r.method for r in requests(sent, BACKUP)] == ["CANCEL"]
    assert requests(sent, PRIMARY) == []
    # A CANCEL that reaches another instance of the pool (no context here): the same member.
    other = aa_harness()
    sent = other.feed(cancel(call_id=target, branch="z9hG4bK-elsewhere"))
    assert [r.method for r in requests(sent, BACKUP)] == ["CANCEL"]


def test_a_silent_member_hands_its_requests_and_the_new_calls_to_the_other_and_never_gets_a_second_copy() -> (
    None
):
    h = aa_harness()
    ids = [f"c{index}" for index in range(30)]
    for call_id in ids:
        new_call(h, call_id)
    to_primary = set(calls(h.sent)[PRIMARY])
    to_backup = set(calls(h.sent)[BACKUP])
    assert to_primary
    assert to_backup
    # The backup answers everything; the primary (the active member) has died silently.
    run(h, FAILOVER + 0.1, BACKUP)
    events = h.core.drain_events()
    became = [e for e in events if isinstance(e, MemberBecameActive)]
    assert [(e.member.role, e.reason) for e in became] == [("backup", "survivor")]
    assert not [e for e in events if isinstance(e, PairUnknown)]  # nothing held for a takeover
    seen = calls(h.sent)
    for call_id in to_primary:
        assert len(seen[PRIMARY][call_id]) == 1  # one branch there: retransmissions only
        assert call_id in seen[BACKUP]  # and a new branch to the survivor
        assert seen[BACKUP][call_id].isdisjoint(seen[PRIMARY][call_id])
    for call_id in to_backup:
        assert len(seen[BACKUP][call_id]) == 1
        assert call_id not in seen[PRIMARY]
    assert 503 not in statuses(h.sent)
    before = {c: set(b) for c, b in calls(h.sent)[PRIMARY].items()}
    sent: list[SendMessage] = []
    for index in range(30, 50):
        sent += new_call(h, f"c{index}")
    assert set(calls(sent)[BACKUP]) == {f"c{index}" for index in range(30, 50)}
    assert calls(sent)[PRIMARY] == {}
    sent = run(h, 4.0, BACKUP)  # the primary's given-up branches stay silent
    assert calls(h.sent)[PRIMARY] == before
    assert calls(sent)[PRIMARY] == {}


def test_a_killed_member_is_left_at_once_and_spreads_again_when_it_answers() -> None:
    h = aa_harness()
    for index in range(20):
        new_call(h, f"c{index}")
    to_backup = set(calls(h.sent)[BACKUP])
    h.trying(PRIMARY)
    h.advance(0.05)
    h.transport_error(BACKUP)  # ICMP: the backup's port is closed
    events = h.core.drain_events()
    [spread] = [e for e in events if isinstance(e, SpreadChanged)]
    assert spread.members == (PRIMARY_MEMBER,)
    assert spread.reason == "suspect"
    assert h.core.view.spread("demo") == (PRIMARY_MEMBER,)
    seen = calls(h.sent)
    for call_id in to_backup:
        assert call_id in seen[PRIMARY]  # moved to the member that answers, a new branch
    for index in range(20, 40):
        assert set(calls(new_call(h, f"c{index}"))[PRIMARY]) == {f"c{index}"}
    h.trying(PRIMARY)
    # An in-dialog request to the dead member's Contact reaches the survivor.
    bye = invite(method="BYE", uri="sip:srv@127.0.0.1:5080", to_tag="b1", body=b"", branch="z9hG4bK-bye")
    sent = h.feed(bye)
    assert [r.method for r in requests(sent, PRIMARY)] == ["BYE"]
    # Back: it answers its probe of the next period; new Call-IDs spread again.
    h.transport_error(BACKUP)  # the probe sent when it was suspected fails too
    run(h, CHECK + 0.1, PRIMARY, BACKUP)
    assert h.core.view.spread("demo") == (PRIMARY_MEMBER, BACKUP_MEMBER)
    assert [e.reason for e in h.core.drain_events() if isinstance(e, SpreadChanged)] == ["answered"]
    sent = []
    for index in range(40, 80):
        sent += new_call(h, f"c{index}")
    assert calls(sent)[BACKUP]
    for member in (PRIMARY, BACKUP):
        for call_id in calls(sent)[member]:
            assert picked(call_id, PRIMARY, BACKUP) == member
    # The dialog set up on the survivor stays there (rule 2: its member answers).
    bye = invite(method="BYE", uri="sip:srv@127.0.0.1:5070", to_tag="p1", body=b"", branch="z9hG4bK-bye2")
    assert [r.method for r in requests(h.feed(bye), PRIMARY)] == ["BYE"]


def test_a_ringing_invite_on_a_member_that_is_gone_is_offered_to_the_other() -> None:
    """docs/design.md §2, ringing calls: its member is gone (a transport error came last)."""
    h = aa_harness()
    call_id = next(f"r{i}" for i in range(100) if picked(f"r{i}", PRIMARY, BACKUP) == BACKUP)
    [forwarded] = [r for r in requests(new_call(h, call_id), BACKUP) if r.method == "INVITE"]
    assert statuses(h.feed(response_to(forwarded, 180, "Ringing", to_tag="b1"), BACKUP)) == [180]
    h.advance(0.1)
    h.transport_error(BACKUP)  # ICMP: gone (no transaction fails: the INVITE had its 180)
    assert h.core.view.spread("demo") == (PRIMARY_MEMBER, BACKUP_MEMBER)
    run(h, 2 * CHECK + 0.1, PRIMARY)  # the backup misses its period: out of the spread
    assert h.core.view.spread("demo") == (PRIMARY_MEMBER,)
    moved = [r for r in requests(h.sent, PRIMARY) if r.method == "INVITE" and r.call_id == call_id]
    assert len(moved) == 1
    assert [r.method for r in requests(h.sent, BACKUP) if r.call_id == call_id][-1] == "CANCEL"
    assert h.core.counters.reoffered == 1


def test_both_members_lost_hold_then_503_as_any_pair() -> None:
    h = aa_harness(takeover=2.0)
    h.advance(CHECK)  # t = 1: the period's probes are out
    h.transport_error(BACKUP)
    h.transport_error(PRIMARY)
    events = h.core.drain_events()
    assert [type(e) for e in events] == [SpreadChanged, PairUnknown]
    sent = new_call(h, "held")
    assert statuses(sent) == [100]  # held for the takeover window, not refused
    for _ in range(12):
        h.transport_error(PRIMARY)
        h.transport_error(BACKUP)
        h.advance(0.25)
    assert any(isinstance(e, PairOutOfService) for e in h.core.drain_events())
    assert statuses(h.sent)[-1] == 503


def test_an_active_active_fallback_pair_spreads_what_it_takes() -> None:
    """docs/deployment.md §4: pair a out of service (40001), its rule-4 requests go to pair b,
    active-active: each to the member of b its Call-ID hashes to."""
    a_primary, a_backup = Address("UDP", "10.0.1.10", 5060), Address("UDP", "10.0.1.11", 5060)
    view = ConfiguredView.build(
        [("127.0.0.1", 5060)],
        [
            PairSpec("a", a_primary, a_backup, serving=True, fallback="demo"),
            PairSpec("demo", PRIMARY, BACKUP, mode=ACTIVE_ACTIVE),
        ],
    )
    monitor = Monitor(
        [view.members("a"), view.members("demo")],
        MonitorSettings(
            oos_check=1.0, oos_force=1.0, alive_codes=AliveCodes.parse(["2xx"]), takeover_timeout=0
        ),
    )
    monitor.use_modes({"demo": ACTIVE_ACTIVE})
    monitor.start(0.0)
    now = 0.0
    while monitor.pairs["a"].state is not State.OUT_OF_SERVICE:
        for output in monitor.drain():
            if isinstance(output, Probe) and output.pair == "a":
                monitor.probe_failed(output, now)
        now += 0.5
        monitor.tick(now)
        assert now < 10
    view.active["a"] = None
    fallbacks = Fallbacks()
    picks = set()
    for index in range(40):
        call_id = f"f{index}@alice"
        decision = decide(_request(invite(call_id=call_id)), ALICE, view)
        assert isinstance(decision, Answer)
        assert decision.may_fall_back
        routed = fallbacks.route(decision, view, monitor, now)
        assert routed is not None
        forward, _ = routed
        assert forward == Forward(picked(call_id, PRIMARY, BACKUP), "demo")
        picks.add(forward.destination)
    assert picks == {PRIMARY, BACKUP}
