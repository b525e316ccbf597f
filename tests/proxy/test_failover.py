"""The failover policy alone (docs/design.md §2), on a fake clock, behind a fake proxy core.

:class:`FakeHost` stands for the core: it moves a context through its table
(:data:`sipha.proxy.context.TABLE`) without sending anything, and records what
the policy asked for (inputs fed, requests forwarded, timers armed, monitor
pumps).  The pair monitor is a real :class:`sipha.ha.Monitor` for the pair
``demo``; the policy's decisions are checked one by one.  The same rules are
checked end to end, on a whole core, in test_core_ha.py and test_core_takeover.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sipha.ha import Member, Monitor, MonitorSettings, Probe, State
from sipha.proxy.context import TABLE, Input, Op, ResponseContext, Timer
from sipha.proxy.context import State as Phase
from sipha.proxy.failover import FailoverPolicy, hold_limit
from sipha.proxy.routing import Forward
from sipha.proxy.rules import RecordRoutes, prepare
from sipha.proxy.settings import Counters, ProxySettings
from sipha.proxy.view import ConfiguredView
from sipha.sip import Request, Response, make_response, parse_message
from sipha.txn import TransactionLayer
from tests.proxy.support import ALICE, BACKUP, PRIMARY, RECORD_ROUTE, demo_monitor, invite, make_view

FAILOVER = 1.0
VIA = {"UDP": ("127.0.0.1", 5060)}


@dataclass
class FakeHost:
    """The proxy core as the policy sees it: contexts move through their table, nothing is sent."""

    view: ConfiguredView
    monitor: Monitor
    policy: FailoverPolicy | None = None
    steps: list[tuple[Phase, Input]] = field(default_factory=list)
    forwards: list[tuple[ResponseContext, Forward]] = field(default_factory=list)
    armed: list[tuple[Timer, float]] = field(default_factory=list)
    live: list[ResponseContext] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    pumps: int = 0

    def step(
        self, context: ResponseContext, event: Input, now: float, message: Response | None = None
    ) -> bool:
        self.steps.append((context.state, event))
        row = TABLE.get((context.state, event))
        if row is None:
            return False
        context.state = row.target
        assert self.policy is not None
        for op in row.ops:
            if op is Op.UNHOLD:
                self.policy.unhold(context)
            elif op is Op.GIVE_UP_BRANCH and context.client is not None:
                context.client = None
                self.policy.given_up(context, now)
                context.attempt += 1
        return True

    def forward(self, context: ResponseContext, decision: Forward, now: float) -> None:
        self.forwards.append((context, decision))
        self.step(context, Input.FORWARDED, now)
        context.member = self.view.active_member(decision.pair or "")

    def arm(self, context: ResponseContext, timer: Timer, deadline: float) -> None:
        context.set_deadline(timer, deadline)
        self.armed.append((timer, deadline))

    def branches(self) -> list[ResponseContext]:
        return list(self.live)

    def pump(self, now: float) -> None:
        self.pumps += 1
        self.probes += [output for output in self.monitor.drain() if isinstance(output, Probe)]
        self.view.active.update(self.monitor.active_table())

    def inputs(self) -> list[Input]:
        return [event for _, event in self.steps]


@dataclass
class Setup:
    """A policy for the pair ``demo``, its monitor and fake core, at ``now``."""

    policy: FailoverPolicy
    host: FakeHost
    monitor: Monitor
    view: ConfiguredView
    layer: TransactionLayer
    now: float = 0.0

    @property
    def primary(self) -> Member:
        return self.view.members("demo")[0]

    @property
    def backup(self) -> Member:
        return self.view.members("demo")[1]

    def answer(self, member: Member) -> None:
        """``member`` answers every probe sent to it so far (alive)."""
        self.host.pump(self.now)
        for probe in [probe for probe in self.host.probes if probe.member == member]:
            self.host.probes.remove(probe)
            self.monitor.probe_answered(probe, 200, self.now)
        self.view.active.update(self.monitor.active_table())

    def request(self, *, method: str = "INVITE", call: int = 1) -> ResponseContext:
        """A request forwarded to the active member (Calling), as the core leaves it."""
        request = parse_message(invite(method=method, call_id=f"c{call}", branch=f"z9hG4bK-c{call}"))
        assert isinstance(request, Request)
        server = self.layer.receive_request(request, ALICE, self.now)
        assert server is not None
        context = ResponseContext(server, request)
        member = self.view.active_member("demo")
        assert member is not None
        record_routes = RecordRoutes.build(RECORD_ROUTE, {}, VIA)
        forwarded = prepare(
            request,
            member.address,
            inbound=ALICE.transport,
            record_routes=record_routes,
            via=VIA,
            branch_tag="",
            fork=0,
        )
        context.forwarded = forwarded
        context.client = self.layer.send_request(forwarded, member.address, self.now)
        context.destination = member.address
        context.pair = "demo"
        context.member = member
        self.host.step(context, Input.FORWARDED, self.now)
        self.host.live.append(context)
        return context


def setup(
    *, oos_check: float = 5.0, oos_force: float = 5.0, takeover: float = 0.0, **settings: object
) -> Setup:
    """The pair active on the primary at t = 0."""
    view = make_view()
    monitor = demo_monitor(view, oos_check=oos_check, oos_force=oos_force, takeover=takeover)
    host = FakeHost(view, monitor)
    policy = FailoverPolicy(
        host,
        ProxySettings(record_route=RECORD_ROUTE, via=VIA, **{"failover_timeout": FAILOVER, **settings}),  # type: ignore[arg-type]
        view,
        monitor,
        Counters(),
    )
    host.policy = policy
    s = Setup(policy, host, monitor, view, TransactionLayer())
    monitor.start(0.0)
    s.answer(s.primary)
    assert view.active_member("demo") == s.primary
    return s


def phase(context: ResponseContext) -> Phase:
    """The context's state, read anew (mypy keeps what an earlier assert narrowed it to)."""
    return context.state


def late(context: ResponseContext, status: int) -> Response:
    assert context.forwarded is not None
    return make_response(context.forwarded, status, "Late", to_tag="late")


# ---------------------------------------------------------------------- hold limit


@pytest.mark.parametrize(
    ("failover", "force", "takeover", "expected"),
    [(1.0, 5.0, 5.0, 7.0), (1.0, 5.0, 0.0, 7.0), (2.0, 3.0, 10.0, 13.0), (0.0, 32.0, 0.0, 33.0)],
)
def test_hold_limit_is_failover_timeout_plus_the_monitors_bound_plus_one(
    failover: float, force: float, takeover: float, expected: float
) -> None:
    """docs/design.md §2: "failover-timeout + max(oos-force, takeover-timeout) + 1"."""
    settings = MonitorSettings(oos_force=force, takeover_timeout=takeover)
    assert hold_limit(failover, settings) == expected


def test_hold_limit_derived_from_the_pairs_monitor_unless_configured() -> None:
    s = setup(oos_force=3.0, takeover=6.0)
    assert s.policy.hold_limit("demo") == FAILOVER + 6.0 + 1.0
    assert s.policy.hold_limit("elsewhere") == hold_limit(FAILOVER, MonitorSettings())
    configured = setup(hold_limit=2.5)
    assert configured.policy.hold_limit("demo") == 2.5


# ---------------------------------------------------------------------- failover-timeout


def test_a_member_heard_lately_keeps_its_branch_judged_again_later() -> None:
    s = setup()
    context = s.request()
    s.policy.heard[s.primary] = 0.5  # it answered another request meanwhile
    s.policy.failover_due(context, FAILOVER)
    assert s.host.inputs() == [Input.FORWARDED]
    assert context.state is Phase.CALLING
    assert s.host.armed[-1] == (Timer.FAILOVER, 2 * FAILOVER)


def test_a_silent_member_is_suspected_and_the_request_held_with_its_branch() -> None:
    s = setup()
    context = s.request()
    pumps = s.host.pumps
    s.policy.failover_due(context, FAILOVER)
    assert context.state is Phase.SUSPENDED
    assert context.client is not None  # still retransmitting
    assert s.monitor.pairs["demo"].state is State.UNKNOWN  # re-probed at once
    assert s.host.pumps == pumps + 1  # the routing view first
    assert s.policy.held == {"demo": [context]}
    assert context.hold_deadline == FAILOVER + hold_limit(
        FAILOVER, MonitorSettings(oos_force=5.0, takeover_timeout=0.0)
    )
    assert s.host.armed[-1] == (Timer.HOLD, context.hold_deadline)


def test_a_failed_branch_is_given_up_and_remembered() -> None:
    s = setup()
    context = s.request()
    branch = context.forwarded.top_via.branch if context.forwarded else None
    s.policy.fail_over(context, 0.2, dead=True)
    assert context.state is Phase.HELD
    assert context.client is None
    assert branch is not None
    assert context.abandoned == [branch]
    forget, remembered, member = s.policy.abandoned[branch]
    assert (remembered, member) == (context, s.primary)
    assert forget == 0.2 + 181.0 + 64 * 0.5


def test_a_suspended_branch_that_fails_is_given_up_but_stays_held() -> None:
    s = setup()
    context = s.request()
    s.policy.failover_due(context, FAILOVER)
    s.policy.fail_over(context, 1.5, dead=True)
    assert context.state is Phase.HELD
    assert s.policy.held == {"demo": [context]}
    s.policy.fail_over(context, 1.6, dead=True)  # nothing left to give up
    assert s.host.inputs()[-1] is Input.GIVE_UP


def test_a_suspended_branch_is_suspended_once() -> None:
    s = setup()
    context = s.request()
    s.policy.failover_due(context, FAILOVER)
    steps = len(s.host.steps)
    s.policy.fail_over(context, 1.5, dead=False)
    assert len(s.host.steps) == steps
    assert context.state is Phase.SUSPENDED


def test_a_branch_without_a_known_member_suspects_nobody() -> None:
    """Forwarded while the pair had no active member: the one active now gets a new branch."""
    s = setup()
    context = s.request()
    context.member = None
    s.policy.failover_due(context, FAILOVER)
    assert s.monitor.pairs["demo"].state is State.ACTIVE  # nobody to suspect
    assert s.host.inputs()[-3:] == [Input.HOLD, Input.GIVE_UP, Input.FORWARDED]
    assert [decision for _, decision in s.host.forwards] == [Forward(PRIMARY, "demo")]
    assert context.attempt == 1


@pytest.mark.parametrize("failover_timeout", [FAILOVER, 0.0])
def test_holding_a_suspended_branch_whose_member_is_active_resumes_it(failover_timeout: float) -> None:
    s = setup(failover_timeout=failover_timeout) if failover_timeout == 0.0 else setup()
    context = s.request()
    s.host.step(context, Input.SUSPEND, 0.5)
    armed = len(s.host.armed)
    s.policy.hold(context, 0.5)
    assert context.state is Phase.CALLING
    assert s.policy.held == {}
    assert len(s.host.armed) == armed + (failover_timeout > 0)


@pytest.mark.parametrize("case", ["no-monitor", "monitoring-off", "cancel", "ringing", "other-pair"])
def test_what_cannot_fail_over(case: str) -> None:
    s = setup(oos_check=0.0) if case == "monitoring-off" else setup()
    context = s.request(method="CANCEL" if case == "cancel" else "INVITE")
    if case == "no-monitor":
        s.policy.reconfigure(s.policy.settings, s.view, None)
    elif case == "ringing":
        s.host.step(context, Input.RESP_1XX, 0.1)
    elif case == "other-pair":
        context.pair = "elsewhere"
    assert not s.policy.can_fail_over(context)
    state = context.state
    s.policy.fail_over(context, FAILOVER, dead=False)
    assert context.state is state
    assert s.policy.held == {}


# ---------------------------------------------------------------------- holding and releasing


def test_the_same_member_found_active_again_resumes_the_branch() -> None:
    s = setup(takeover=5.0)  # both members probed at once
    context = s.request()
    s.policy.failover_due(context, FAILOVER)
    s.now = 1.2
    s.answer(s.primary)
    s.policy.release_held(s.now)
    assert context.state is Phase.CALLING
    assert context.held_until is None
    assert s.policy.held == {}
    assert s.host.forwards == []  # never a second copy
    assert s.host.armed[-1] == (Timer.FAILOVER, 1.2 + FAILOVER)


def test_the_other_member_found_active_gets_the_request_on_a_new_branch() -> None:
    s = setup()
    context = s.request()
    s.policy.failover_due(context, FAILOVER)
    s.now = 1.2
    s.answer(s.backup)
    s.policy.release_held(s.now)
    assert s.host.inputs()[-2:] == [Input.GIVE_UP, Input.FORWARDED]
    assert [decision for _, decision in s.host.forwards] == [Forward(BACKUP, "demo")]
    assert context.attempt == 1  # a new branch
    assert s.policy.held == {}


def test_a_request_is_never_sent_back_to_a_member_that_answered_a_given_up_branch() -> None:
    s = setup()
    context = s.request()
    s.policy.failover_due(context, FAILOVER)
    context.responded_members.add(s.backup)
    s.answer(s.backup)
    s.policy.release_held(1.2)
    assert s.host.forwards == []
    assert s.policy.held == {"demo": [context]}  # waits for the other member, or the hold limit


def test_a_held_request_answered_meanwhile_is_only_dropped_from_the_hold() -> None:
    s = setup()
    context = s.request()
    s.policy.failover_due(context, FAILOVER)
    s.host.step(context, Input.TIMER_C, 1.1)  # answered here (408)
    s.answer(s.backup)
    s.policy.release_held(1.2)
    assert s.host.forwards == []
    assert s.policy.held == {}


def test_a_request_held_when_its_pair_has_another_active_member_goes_there_at_once() -> None:
    s = setup()
    context = s.request()
    s.host.step(context, Input.GIVE_UP, 0.1)  # its member failed, and the backup took over
    s.monitor.suspect(s.primary, 0.1)
    s.answer(s.backup)
    s.policy.hold(context, 0.2)
    assert [decision for _, decision in s.host.forwards] == [Forward(BACKUP, "demo")]
    assert s.policy.held == {}


def test_a_request_whose_dead_member_is_still_active_waits() -> None:
    """Its branch failed, but the monitor still has the member active: held until it decides."""
    s = setup()
    context = s.request()
    s.host.step(context, Input.GIVE_UP, 0.1)
    s.policy.hold(context, 0.1)
    assert s.host.forwards == []
    assert s.policy.held == {"demo": [context]}
    assert context.destination == PRIMARY


def test_the_hold_limit_answers_503_and_40001_ends_every_hold() -> None:
    s = setup(hold_limit=3.0)
    first, second = s.request(call=1), s.request(call=2)
    s.policy.failover_due(first, FAILOVER)
    s.policy.failover_due(second, FAILOVER)
    assert first.hold_deadline == FAILOVER + 3.0
    s.policy.expire(first, FAILOVER + 3.0)
    assert first.state is Phase.COMPLETED
    assert first.client is None  # its branch given up: the member is not coming back
    assert s.policy.held == {"demo": [second]}
    s.policy.out_of_service("demo", 2.0)
    assert second.state is Phase.COMPLETED
    assert s.policy.held == {"demo": []}


def test_a_hold_past_its_deadline_expires_at_once() -> None:
    s = setup(hold_limit=0.0)
    context = s.request()
    s.policy.failover_due(context, FAILOVER)
    assert context.state is Phase.COMPLETED
    assert s.host.inputs()[-1] is Input.HOLD_EXPIRED


def test_probing_is_unknown_or_takeover_of_a_monitored_pair() -> None:
    s = setup()
    assert not s.policy.probing("demo")
    assert not s.policy.probing("elsewhere")
    s.monitor.suspect(s.primary, 0.5)
    assert s.policy.probing("demo")
    s.policy.reconfigure(s.policy.settings, s.view, None)
    assert not s.policy.probing("demo")


# ---------------------------------------------------------------------- late answers


def test_a_late_answer_while_held_carries_the_call() -> None:
    s = setup()
    context = s.request()
    branch = context.forwarded.top_via.branch if context.forwarded else ""
    assert branch
    s.policy.fail_over(context, 0.2, dead=True)
    assert not s.policy.late_response("z9hG4bK-unknown", late(context, 180), 0.3)
    assert s.policy.late_response(branch, late(context, 180), 0.3)
    assert context.state is Phase.RESUMED
    assert context.resumed == branch
    assert s.primary in context.responded_members
    assert not any(s.policy.held.values())
    assert s.policy.late_response(branch, late(context, 486), 0.4)
    assert phase(context) is Phase.COMPLETED
    assert s.policy.late_response(branch, late(context, 486), 0.5)  # a retransmission: dropped
    assert s.policy.counters.stray_responses_dropped == 1


def test_a_late_answer_after_the_request_went_elsewhere_is_dropped() -> None:
    s = setup()
    context = s.request()
    branch = context.forwarded.top_via.branch if context.forwarded else ""
    s.policy.fail_over(context, 0.2, dead=True)
    s.answer(s.backup)
    s.policy.release_held(0.3)
    assert s.policy.late_response(branch or "", late(context, 200), 0.4)
    assert context.state is Phase.CALLING  # the backup's branch goes on
    assert s.policy.counters.stray_responses_dropped == 1
    assert s.primary in context.responded_members


@pytest.mark.parametrize(("status", "event"), [(100, Input.LATE_100), (200, Input.LATE_2XX)])
def test_late_answers_are_fed_by_class(status: int, event: Input) -> None:
    s = setup()
    context = s.request()
    s.policy.fail_over(context, 0.2, dead=True)
    s.policy.abandoned = {b: (f, c, None) for b, (f, c, _) in s.policy.abandoned.items()}  # no member
    assert context.forwarded is not None
    s.policy.late_response(context.forwarded.top_via.branch or "", late(context, status), 0.3)
    assert s.host.inputs()[-1] is event


# ---------------------------------------------------------------------- ringing calls


def test_a_ringing_call_on_a_gone_member_is_reoffered_to_the_new_one() -> None:
    s = setup()
    ringing, silent = s.request(call=1), s.request(call=2)
    s.host.step(ringing, Input.RESP_1XX, 0.1)
    s.monitor.suspect(s.primary, 0.5)
    s.answer(s.backup)
    s.policy.end_ringing_on(s.primary, 0.6, gone=True)
    assert [decision for _, decision in s.host.forwards] == [Forward(BACKUP, "demo")]
    assert ringing.state is Phase.CALLING  # a new branch, its own Timer C
    assert s.policy.counters.reoffered == 1
    assert silent.state is Phase.CALLING  # not ringing: left to failover-timeout
    assert (Phase.CALLING, Input.MEMBER_LOST) in s.host.steps


@pytest.mark.parametrize("case", ["silent", "no-member"])
def test_a_ringing_call_on_a_member_that_may_be_alive_gets_408(case: str) -> None:
    s = setup()
    ringing = s.request()
    s.host.step(ringing, Input.RESP_1XX, 0.1)
    s.monitor.suspect(s.primary, 0.5)
    s.host.pump(0.5)
    if case == "silent":
        s.answer(s.backup)
    s.policy.end_ringing_on(s.primary, 0.6, gone=case == "no-member")
    assert s.host.forwards == []
    assert ringing.state is Phase.COMPLETED
    assert s.host.steps[-1] == (Phase.PROCEEDING, Input.MEMBER_LOST)


def test_the_other_members_calls_are_left_alone() -> None:
    s = setup()
    ringing = s.request()
    s.host.step(ringing, Input.RESP_1XX, 0.1)
    s.policy.end_ringing_on(s.backup, 0.6, gone=True)
    assert ringing.state is Phase.PROCEEDING


# ---------------------------------------------------------------------- evidence and housekeeping


def test_a_member_is_gone_when_a_transport_error_is_the_last_thing_heard_from_it() -> None:
    s = setup()
    assert not s.policy.gone(s.primary)
    s.policy.unreachable[s.primary] = 2.0
    assert s.policy.gone(s.primary)
    s.policy.heard[s.primary] = 3.0
    assert not s.policy.gone(s.primary)
    assert s.policy.heard_lately(s.primary, 3.5)
    assert not s.policy.heard_lately(s.primary, 4.0)


def test_given_up_branches_are_forgotten_with_their_context_or_after_their_lifetime() -> None:
    s = setup()
    first, second = s.request(call=1), s.request(call=2)
    s.policy.fail_over(first, 0.2, dead=True)
    s.policy.fail_over(second, 0.2, dead=True)
    assert len(s.policy.abandoned) == 2
    s.policy.forget(first)
    assert len(s.policy.abandoned) == 1
    lifetime = 0.2 + 181.0 + 64 * 0.5  # Timer C, then 64*T1
    s.policy.prune(lifetime - 0.5)  # not past its lifetime yet
    assert len(s.policy.abandoned) == 1
    s.policy.prune(lifetime + 0.1)  # past it, but pruned less than a second ago
    assert len(s.policy.abandoned) == 1
    s.policy.prune(lifetime + 0.5)
    assert s.policy.abandoned == {}
