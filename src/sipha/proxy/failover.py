"""What the proxy does with a request when a pair member fails (docs/design.md §2).

:class:`FailoverPolicy` keeps the evidence about each member (when it last
answered a forwarded request, when a transport error last came from it), the
requests held for a pair with no active member, and the branches given up on.
It decides: hold a request, suspend a silent branch while the pair is
re-probed, resume it when its member is found active again, move it to the
member that took over, give it 503 when the hold limit is reached, re-offer a
ringing INVITE whose member is gone.  It acts on a response context only by
feeding it inputs (:mod:`sipha.proxy.context`), and on the network only
through the proxy core (:class:`Host`): forward, arm a timer, apply the pair
monitor's news.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from sipha.ha import HaEvent, Member, Monitor, MonitorSettings, State
from sipha.proxy.context import Input, ResponseContext, Timer
from sipha.proxy.context import State as Phase
from sipha.proxy.fallback import Fallbacks
from sipha.proxy.routing import Answer, Forward, decide
from sipha.proxy.settings import Counters, ProxySettings
from sipha.proxy.view import ConfiguredView
from sipha.sip import Response
from sipha.sip.address import Address

HOLD_MARGIN: Final = 1.0
"""s the hold limit leaves after the pair monitor's own bound (it ends the holds itself)."""
RELEASE_SLICE: Final = 100
"""Held requests forwarded per step once their pair has an active member; the rest go in the
next steps (the core's next deadline is then at once), with the sockets read between them.
Released in one step, the 2,000 requests a 5 s takeover holds at 400 calls/s kept the event
loop from reading for a second (interpreted: half a millisecond each), and new calls met the
overload level that burst of the proxy's own had raised (tests/chaos/test_takeover.py shed
24 calls once, on a busy machine)."""
PRUNE_EVERY: Final = 1.0
"""s between two prunings of the branches given up on."""
NOT_A_MEMBER: Final = Address("UDP", "0.0.0.0", 0)  # noqa: S104 - an address, not a bind
"""The source a held request is routed again from at 40001: from a member, it would not have been
held (rule 3 sends it outside the pairs), so which endpoint sent it does not change the route."""


def _unreported(event: HaEvent) -> None:
    """No core to log ``event`` (a policy alone, in tests)."""


def hold_limit(failover_timeout: float, monitor: MonitorSettings) -> float:
    """How long a held request may wait for its pair to get an active member (docs/design.md §2).

    ``failover-timeout + max(oos-force, takeover-timeout) + 1``: a request held at its
    failover-timeout waits until the pair is out of service (40001: the other member
    silent for oos-force, or the takeover window over) at the latest; the monitor ends
    the holds itself then, this is the bound behind it.
    """
    return failover_timeout + max(monitor.oos_force, monitor.takeover_timeout) + HOLD_MARGIN


class Host(Protocol):
    """What the policy needs of the proxy core."""

    def step(
        self, context: ResponseContext, event: Input, now: float, message: Response | None = None
    ) -> bool:
        """Feed ``event`` to ``context`` (its table row); False when its state ignores it."""
        ...

    def forward(self, context: ResponseContext, decision: Forward, now: float) -> None:
        """Send the request of ``context`` on a new branch (§16.6)."""
        ...

    def arm(self, context: ResponseContext, timer: Timer, deadline: float) -> None:
        """Arm one of the context's timers."""
        ...

    def branches(self) -> list[ResponseContext]:
        """The contexts with a live branch (a copy: the policy may change them)."""
        ...

    def pump(self, now: float) -> None:
        """Send the pair monitor's probes and apply its news to the routing view, now."""
        ...


class FailoverPolicy:
    """Failover of the requests forwarded to pair members (docs/design.md §2)."""

    def __init__(
        self,
        host: Host,
        settings: ProxySettings,
        view: ConfiguredView,
        monitor: Monitor | None,
        counters: Counters,
    ) -> None:
        self.host = host
        self.settings = settings
        self.view = view
        self.monitor = monitor
        self.counters = counters
        self.heard: dict[Member | None, float] = {}
        """When each member last answered a request forwarded to it (any response; the key None
        gathers the next hops outside the pairs, never failed over)."""
        self.unreachable: dict[Member, float] = {}
        """When a transport error (ICMP, refused or reset connection) last came from each member:
        later than anything heard from it, it confirms the member is gone (not just silent)."""
        self.held: dict[str, list[ResponseContext]] = {}
        """Per pair, the requests held until it has an active member."""
        self.releasing: deque[tuple[str, ResponseContext]] = deque()
        """Held requests whose pair has an active member, to forward :data:`RELEASE_SLICE` a step."""
        self.release_due: float | None = None
        """When the next slice of :attr:`releasing` goes (the step after the last one), or None."""
        self.abandoned: dict[str, tuple[float, ResponseContext, Member | None]] = {}
        """Branches given up on: branch -> (forget after, context, member).  Their late responses
        are dropped, or carry the call when the request is still held."""
        self._pruned = 0.0
        self.fallbacks = Fallbacks()
        self.report: Callable[[HaEvent], None] = _unreported
        """Where the log lines of the fallback go (set by the core: its events)."""
        self.behind = False
        """sipha is behind on a receive queue (``ProxyCore.overloaded``): nobody is suspected."""

    def reconfigure(self, settings: ProxySettings, view: ConfiguredView, monitor: Monitor | None) -> None:
        """SIGHUP: new settings, routing view and monitor; held requests and evidence are kept."""
        self.settings = settings
        self.view = view
        self.monitor = monitor
        if monitor is not None:  # the pairs carried over keep their spread (docs/design.md §2.2)
            for pair, (answering, spread) in monitor.spread_table().items():
                view.answering[pair], view.spreads[pair] = answering, spread

    # ------------------------------------------------------------------ evidence

    def gone(self, member: Member) -> bool:
        """Whether ``member`` is known to be gone, not just silent (a transport error came last)."""
        return self.unreachable.get(member, -math.inf) > self.heard.get(member, -math.inf)

    def heard_lately(self, member: Member | None, now: float) -> bool:
        """Whether ``member`` answered a forwarded request within the last failover-timeout."""
        return self.heard.get(member, -math.inf) > now - self.settings.failover_timeout

    def probing(self, pair: str) -> bool:
        """Whether ``pair`` has no active member but is still being probed (not yet 40001)."""
        monitor = self.monitor
        if monitor is None or pair not in monitor.pairs:
            return False
        state = monitor.pairs[pair].state
        return state is State.UNKNOWN or state is State.TAKEOVER

    def can_fail_over(self, context: ResponseContext) -> bool:
        """A branch to a pair member that never answered: its request can still be saved.

        Only with OPTIONS monitoring on (oos-check > 0): without probes nothing could pick
        the member to hold the request for, so a slow member is simply waited for.
        """
        monitor = self.monitor
        state = context.state
        return (
            (state is Phase.CALLING or state is Phase.SUSPENDED)
            and monitor is not None
            and context.pair is not None
            and context.pair in monitor.pairs
            and monitor.pairs[context.pair].monitoring
            and context.request.method != "CANCEL"
        )

    def hold_limit(self, pair: str) -> float:
        """The hold limit of ``pair``: the configured one, or the one derived from its monitor."""
        configured = self.settings.hold_limit
        if configured is not None:
            return configured
        pair_monitor = None if self.monitor is None else self.monitor.pairs.get(pair)
        monitor_settings = MonitorSettings() if pair_monitor is None else pair_monitor.settings
        return hold_limit(self.settings.failover_timeout, monitor_settings)

    # ------------------------------------------------------------------ a branch without an answer

    def forwarded(self, context: ResponseContext, now: float) -> None:
        """A request went to a pair member: failover-timeout starts (with a monitor).

        The branch's member is the one at its destination: an active-active pair's request
        goes to either member (docs/design.md §2.2), not only to the active one.
        """
        destination = context.destination
        member = None if destination is None else self.view.member_at(destination.host, destination.port)
        if member is not None and member.address == destination:
            context.member = member
        if self.monitor is not None and self.settings.failover_timeout > 0:
            self.host.arm(context, Timer.FAILOVER, now + self.settings.failover_timeout)

    def failover_due(self, context: ResponseContext, now: float) -> None:
        """failover-timeout fired: no response on the branch since it was sent (or resumed)."""
        if self.behind or self.heard_lately(context.member, now):
            # failover-timeout is "without any response from the active member": this one
            # answered other requests within it, so this answer is late or lost (an
            # overloaded proxy drops datagrams too) and the branch stays, its transaction
            # retransmitting.  Judged again one failover-timeout later: a member that stops
            # answering altogether is still failed over, at most one failover-timeout later
            # than a silent one.  Likewise while sipha is behind on its own receive queue
            # (:attr:`behind`): the answer may be waiting there, and the lateness is ours; a
            # dead member is still found by its OPTIONS (their own socket) or Timer B/F.
            self.host.arm(context, Timer.FAILOVER, now + self.settings.failover_timeout)
            return
        self.fail_over(context, now, dead=False)

    def fail_over(self, context: ResponseContext, now: float, *, dead: bool) -> None:
        """No response from the member within failover-timeout, or its branch failed (``dead``).

        The pair is re-probed at once and the request held for the member that answers: it is
        never sent to both members at once.  A branch that failed (transport error, Timer B/F)
        is given up now (its late responses are dropped, never relayed).  A branch that is only
        late stays live, retransmitting, while the request is held (Suspended): if the same
        member is found active again the branch simply goes on, so a member that received the
        request never gets a second copy of it.
        """
        context.failover_at = None
        if not self.can_fail_over(context):
            return
        if context.state is Phase.SUSPENDED:
            if dead:
                self.host.step(context, Input.GIVE_UP, now)  # still held: the member is gone after all
            return
        self.host.step(context, Input.GIVE_UP if dead else Input.SUSPEND, now)
        if context.member is not None and self.monitor is not None:
            self.monitor.suspect(context.member, now)
        self.host.pump(now)  # the routing view first: the pair has no active member now
        self.hold(context, now)

    def given_up(self, context: ResponseContext, now: float) -> None:
        """The context's branch was given up: remember it, so that its late responses are known."""
        forwarded = context.forwarded
        if forwarded is None:  # pragma: no cover - a branch is a forwarded request
            return
        branch = forwarded.top_via.branch
        if branch:
            # Remembered for as long as the request can live (Timer C, then 64*T1).
            forget = now + self.settings.timer_c + 64 * self.settings.timers.t1
            self.abandoned[branch] = (forget, context, context.member)
            context.abandoned.append(branch)

    # ------------------------------------------------------------------ holding

    def fallback(self, decision: Answer, now: float) -> Forward | None:
        """A 503 for a pair out of service: its fallback's active member instead (docs/deployment.md)."""
        routed = self.fallbacks.route(decision, self.view, self.monitor, now)
        if routed is None:
            return None
        forward, lines = routed
        self.counters.fallback_routed += 1
        for line in lines:
            self.report(line)
        return forward

    def hold(self, context: ResponseContext, now: float) -> None:
        """Keep ``context`` until its pair has an active member (bounded by hold-limit)."""
        pair = context.pair
        if pair is None:  # pragma: no cover - only pair traffic is held
            return
        self.host.step(context, Input.HOLD, now)
        if context.hold_deadline is None:
            context.hold_deadline = now + self.hold_limit(pair)
        if now >= context.hold_deadline:
            self.expire(context, now)
            return
        active = self.view.active_member(pair)
        if active is not None and active not in context.responded_members:
            if context.client is not None and active == context.member:
                self.resume(context, now)  # suspended, and its member is still the active one
                return
            if active != context.member:
                self.host.step(context, Input.GIVE_UP, now)
                self.host.forward(context, Forward(active.address, pair), now)
                return
        self.host.arm(context, Timer.HOLD, context.hold_deadline)
        self.held.setdefault(pair, []).append(context)

    def resume(self, context: ResponseContext, now: float) -> None:
        """A suspended branch's member is active (again): the branch goes on, judged again later."""
        self.host.step(context, Input.RESUME, now)
        context.held_until = None
        if self.settings.failover_timeout > 0:
            self.host.arm(context, Timer.FAILOVER, now + self.settings.failover_timeout)

    def unhold(self, context: ResponseContext) -> None:
        """Stop holding ``context`` (a no-op when it is not held)."""
        context.held_until = None
        held = self.held.get(context.pair or "")
        if held is not None and context in held:
            held.remove(context)
        if self.releasing and any(entry[1] is context for entry in self.releasing):
            self.releasing = deque(entry for entry in self.releasing if entry[1] is not context)

    def follow_spread(self, now: float) -> None:
        """Active-active pairs (docs/design.md §2.2): the view takes the members that answer and spread.

        A member that stopped answering while the other still does is lost as an active member
        is when the other takes over: the INVITEs ringing on it are re-offered to the active
        member when it is gone, else ended (:meth:`end_ringing_on`).  While no member answers
        the pair is re-probed as any pair, and the pair monitor's news say what ends.
        """
        monitor = self.monitor
        if monitor is None:
            return
        view = self.view
        left: list[Member] = []
        for pair, (answering, spread) in monitor.spread_table().items():
            if answering:
                left += [member for member in view.answering.get(pair, ()) if member not in answering]
            view.answering[pair], view.spreads[pair] = answering, spread
        for member in left:
            self.end_ringing_on(member, now, gone=self.gone(member))

    def release_held(self, now: float) -> None:
        """A pair got an active member: forward what waited for it (or let a live branch go on).

        Called on every news of the pair monitor: active-active pairs' spread first.
        """
        self.follow_spread(now)
        for pair, contexts in list(self.held.items()):
            active = self.view.active_member(pair)
            if active is None or not contexts:
                continue
            kept = [context for context in contexts if active in context.responded_members]
            if kept:
                self.held[pair] = kept  # they wait for the other member, or the hold limit
            else:
                del self.held[pair]
            self.releasing.extend((pair, context) for context in contexts if context not in kept)
        self.release_more(now)

    def release_more(self, now: float) -> None:
        """Forward the next :data:`RELEASE_SLICE` released requests (the core's timers, at once)."""
        releasing = self.releasing
        for _ in range(min(RELEASE_SLICE, len(releasing))):
            pair, context = releasing.popleft()
            state = context.state
            waiting = state is Phase.HELD or state is Phase.SUSPENDED
            active = self.view.active_member(pair)
            if waiting and (active is None or active in context.responded_members):
                self.held.setdefault(pair, []).append(context)  # the member went again meanwhile
                continue
            context.held_until = None
            if not waiting or active is None:
                continue  # answered meanwhile (Timer C, a CANCEL, the hold limit)
            if context.client is not None and active == context.member:
                self.resume(context, now)
                continue
            self.host.step(context, Input.GIVE_UP, now)
            self.host.forward(context, Forward(active.address, pair), now)
        self.release_due = now if releasing else None

    def expire(self, context: ResponseContext, now: float) -> None:
        """No member became active in time: only now does the caller get 503 (§21.5.4)."""
        self.host.step(context, Input.HOLD_EXPIRED, now)

    def out_of_service(self, pair: str, now: float) -> None:
        """The pair went out of service (40001): every request held for it gets 503 now.

        Unless it may go to the pair's fallback (docs/deployment.md): then it goes there, as it
        would have gone to the member taking over (:meth:`release_held`), its branch to the
        member lost given up on.
        """
        if self.releasing:  # released a moment ago, not forwarded yet: held for the pair still
            self.held.setdefault(pair, []).extend(c for p, c in self.releasing if p == pair)
            self.releasing = deque(entry for entry in self.releasing if entry[0] != pair)
            self.release_due = self.release_due if self.releasing else None
        for context in list(self.held.get(pair, ())):
            forward = None
            if context.state is Phase.HELD or context.state is Phase.SUSPENDED:
                decision = decide(context.request, NOT_A_MEMBER, self.view)  # its routes already taken
                if isinstance(decision, Answer) and decision.pair == pair:
                    forward = self.fallback(decision, now)
            if forward is not None:
                self.unhold(context)
                self.host.step(context, Input.GIVE_UP, now)
                self.host.forward(context, forward, now)
                continue
            self.expire(context, now)

    # ------------------------------------------------------------------ late answers, ringing calls

    def late_response(self, branch: str, response: Response, now: float) -> bool:
        """A response on ``branch``; False when it is not a branch given up on.

        The member was alive after all.  While the request is still held (sent nowhere
        else), the call goes on with that member: its responses are relayed, and a non-2xx
        final one is ACKed here, as its client transaction would have (§17.1.1.3).  Once the
        request went to the other member, the late response is dropped, and the request is
        never sent back to it.
        """
        entry = self.abandoned.get(branch)
        if entry is None:
            return False
        _, context, member = entry
        if member is not None:
            context.responded_members.add(member)
        if context.resumed is None and context.state is Phase.HELD:
            context.resumed = branch
        elif context.resumed != branch:
            self.counters.stray_responses_dropped += 1
            return True
        status = response.status
        if status == 100:  # noqa: PLR2004
            event = Input.LATE_100
        elif status < 200:  # noqa: PLR2004
            event = Input.LATE_1XX
        elif status < 300:  # noqa: PLR2004
            event = Input.LATE_2XX
        else:
            event = Input.LATE_3XX_6XX
        if not self.host.step(context, event, now, response):
            self.counters.stray_responses_dropped += 1  # the request was answered meanwhile
        return True

    def end_ringing_on(self, member: Member, now: float, *, gone: bool) -> None:
        """The INVITEs ringing on a member that lost its pair (taken over, or both down).

        The member got them and said so with a provisional response.  When it is known to be
        ``gone`` (a transport error is the last we heard of it, or the other member took over
        by a request) and the pair has an active member, each is re-offered there: the dead
        branch gets a CANCEL (in case), a new branch goes to the active member, and the caller
        sees a new early dialog (serial forking, RFC 3261 §16.6, §16.7).  When it is only
        silent (a partition: it may still have the call, and answer it), a second copy could
        make two calls: the caller gets the 408 Timer C would give (§16.8), now rather than
        three minutes later, and the branch a CANCEL.
        """
        for context in self.host.branches():
            if context.member != member:
                continue
            pair = context.pair
            active = None if pair is None else self.view.active_member(pair)
            if (
                gone
                and context.state is Phase.PROCEEDING
                and pair is not None
                and active not in (None, member)
            ):
                assert active is not None  # noqa: S101 - checked just above
                self.host.step(context, Input.REOFFER, now)
                self.counters.reoffered += 1
                self.host.forward(context, Forward(active.address, pair), now)
            else:
                self.host.step(context, Input.MEMBER_LOST, now)  # ignored unless it rings

    # ------------------------------------------------------------------ housekeeping

    def forget(self, context: ResponseContext) -> None:
        """The context is gone: so are its branches given up on."""
        for branch in context.abandoned:
            self.abandoned.pop(branch, None)

    def prune(self, now: float) -> None:
        """Forget the branches given up on past their lifetime (at most once a second)."""
        if self.abandoned and now >= self._pruned + PRUNE_EVERY:
            # The set is small (branches given up in the last 32 s).
            self.abandoned = {b: entry for b, entry in self.abandoned.items() if entry[0] > now}
            self._pruned = now
