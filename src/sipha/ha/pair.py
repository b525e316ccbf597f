"""One pair's monitor: the table of :mod:`sipha.ha.machine` driven by a clock value passed in.

Sans-IO, as :mod:`sipha.txn`: every method takes ``now`` (seconds, from any
monotonic clock), queues :class:`~sipha.ha.events.Probe` actions and events
for :meth:`PairMonitor.drain`, and :meth:`PairMonitor.next_deadline` says
when :meth:`PairMonitor.tick` is due.  Every method first fires the timers
that are due at ``now``, so the outcome does not depend on whether the caller
ticked before or after an answer that arrived at the same instant: an answer
at the very moment oos-check expires is late (the window is "before oos-check
expires", docs/design.md §2).
"""

from __future__ import annotations

import math
from typing import Final

from sipha.ha.events import (
    ClaimRejected,
    MemberBecameActive,
    PairOutOfService,
    PairRestored,
    PairUnknown,
    Probe,
    SplitBrain,
    SpreadChanged,
)
from sipha.ha.machine import TAKEOVER_ROWS, Input, Op, State, Transition
from sipha.ha.member import Member
from sipha.ha.pairstate import PairState
from sipha.ha.settings import TAKEOVER_PROBE_INTERVAL

# FORCE_ROUND: both members have had one probe of their own since the pair became unknown.
_ROUND: int = 2
_LOST: Final = frozenset(
    (Input.PERIOD_SILENT, Input.NOT_ALIVE_CYCLE, Input.FAILED_CYCLE, Input.SUSPECT_ACTIVE, Input.PEER_LOST)
)
"""The inputs by which an active pair loses its member; an active-active pair whose other member
answers takes them as :attr:`Input.LOST_TO_SURVIVOR` (docs/design.md §2.2)."""
CLAIM_REPORT_INTERVAL: Final = 10.0
"""Requests from the non-active member that it did not confirm are reported at most this often
(a forger can send thousands a second; the counter has them all)."""


class PairMonitor(PairState):
    """The active member of one primary/backup pair, found with OPTIONS (docs/design.md §2).

    With ``oos-check`` = 0 OPTIONS monitoring is off: no probe is ever sent;
    the configured primary is taken as active from :meth:`start` until a
    request from the backup arrives (then the backup is, until a request from
    the primary arrives).  :meth:`suspect` changes nothing then, since no
    probe could find the member to use instead.

    In an active-active pair (:attr:`mode`, docs/design.md §2.2) the member that is not
    active is probed every period too, and takes new Call-IDs while it answers
    (:meth:`spread`); losing the active member while it answers makes it active at once.
    """

    # ------------------------------------------------------------------ inputs

    def start(self, now: float) -> None:
        """Start monitoring: unknown and a first probe to the primary, or (oos-check 0) the primary active."""
        if self._state is not State.INITIAL:
            raise RuntimeError(f"pair {self.name}: already started")
        self._run(Input.START if self.monitoring else Input.START_UNMONITORED, now)

    def tick(self, now: float) -> None:
        """Fire the timers due at ``now`` (call at :meth:`next_deadline`; earlier or later is harmless)."""
        self._advance(now)

    def probe_answered(self, probe: Probe, status: int, now: float, rtt: float | None = None) -> None:
        """A response to ``probe``'s OPTIONS; provisional ones (1xx) are ignored.

        ``rtt`` defaults to ``now - probe.sent_at``.  A final response outside
        alive-codes counts as no answer (docs/design.md §2).
        """
        self._advance(now)
        if status < 200:  # noqa: PLR2004 - provisional: the OPTIONS is still pending
            return
        if not self._settle(probe):
            return
        self._last_rtt[probe.member.role] = now - probe.sent_at if rtt is None else rtt
        alive = self.settings.alive_codes.matches(status)
        if alive:
            self.counters.probes_answered += 1
        else:
            self.counters.probes_failed += 1
        self._run(
            self._classify_result(probe, alive=alive, failed_input=Input.NOT_ALIVE_CYCLE), now, probe.member
        )

    def probe_failed(self, probe: Probe, now: float) -> None:
        """``probe``'s OPTIONS got no final response: transport error (ICMP, refused) or timeout."""
        self._advance(now)
        if not self._settle(probe):
            return
        self.counters.probes_failed += 1
        self._run(
            self._classify_result(probe, alive=False, failed_input=Input.FAILED_CYCLE), now, probe.member
        )

    def request_from(self, host: str, port: int, now: float) -> Member | None:
        """A request arrived from ``host``/``port``; returns the member it is from, if any.

        ``port`` is the one docs/design.md §2 compares: the UDP source port, the top
        Via sent-by port on TCP/TLS (the proxy core computes it).  A request from
        the member that is not active makes it active as soon as it answers the
        OPTIONS sent to it now (with monitoring off: at once); nothing else does.
        """
        member = self.member_at(host, port)
        if member is None:
            return None
        self._advance(now)
        if self._state is State.ACTIVE and self.active_active:
            self._run(Input.REQUEST_SPREAD, now, member)
        elif self._state is State.ACTIVE and member == self._active:
            self._run(Input.REQUEST_ACTIVE, now, member)
        elif self._state is State.ACTIVE and member.role in self.maintenance:
            self._run(Input.REQUEST_MAINTENANCE, now, member)
        elif self._state is State.ACTIVE and (self._split or self._displaced_recently(member, now)):
            self._run(Input.REQUEST_OTHER_SPLIT, now, member)
        elif not self.monitoring:
            self._run(Input.REQUEST_OTHER, now, member)
        else:
            self._run(Input.REQUEST_CLAIM, now, member)
        return member

    def suspect(self, member: Member, now: float) -> None:
        """The proxy core got no response from ``member`` within failover-timeout (docs/design.md §5).

        If ``member`` is the active one, the pair becomes unknown now and the
        first probe goes out now, to the other member; the alternation then
        goes on every oos-force.  Otherwise (or with monitoring off) nothing.
        """
        if member not in (self.primary, self.backup):
            raise ValueError(f"{member!r} is not a member of pair {self.name}")
        self._advance(now)
        if not self.monitoring:
            self._run(Input.SUSPECT_UNMONITORED, now, member)
        elif self._state is State.ACTIVE and member == self._active:
            self._run(Input.SUSPECT_ACTIVE, now, member)
        elif self._state is State.ACTIVE and self._partner_up and member == self._partner():
            self._run(Input.SUSPECT_PARTNER, now, member)
        else:
            self._run(Input.SUSPECT_OTHER, now, member)

    def set_maintenance(self, role: str, on: bool, now: float) -> None:  # noqa: FBT001
        """The operator puts member ``role`` in maintenance (``on``) or returns it to the algorithm.

        docs/design.md §2, maintenance: new transactions stop going to that member, and the
        other takes them once it answers an OPTIONS alive (asked now, then once per period);
        until then, and whenever the other member is down, the pair keeps the member it has:
        a call that can be saved is never refused for a maintenance.  Returning to ``auto``
        changes nothing at once.  ValueError for a role that is not one of the pair's.
        """
        if role not in (self.primary.role, self.backup.role):
            raise ValueError(f"pair {self.name} has no member {role!r} (primary or backup)")
        self._advance(now)
        if self.active_active:
            changed = (role in self.maintenance) != on
            (self.maintenance.add if on else self.maintenance.discard)(role)
            if changed and self._state is State.ACTIVE:
                member = self.primary if role == self.primary.role else self.backup
                self._run(Input.MAINTENANCE_SPREAD if on else Input.AUTO_SPREAD, now, member)
            return
        if not on:
            self.maintenance.discard(role)
            return
        self.maintenance.add(role)
        active = self._active
        if self._state is State.ACTIVE and active is not None and active.role == role and self.monitoring:
            self._run(Input.MAINTENANCE_ACTIVE, now, active)

    def peer_active(self, member: Member, at: float, now: float) -> None:
        """Another worker of this instance found ``member`` active at ``at`` (``[proxy] workers``).

        Taken unless ``member`` is already active here, or this monitor changed state
        after ``at`` (its own later news wins; the other worker hears of it too).
        """
        self._advance(now)
        if self._state is State.ACTIVE and member == self._active:
            return
        if self._since is not None and self._since > at:
            return
        self._run(Input.PEER_ACTIVE, now, member)

    def peer_lost(self, member: Member, at: float, now: float) -> None:
        """Another worker of this instance lost the active member ``member`` at ``at``.

        Taken when ``member`` is the active one here and became so before ``at``: the
        pair loses it here too (the takeover window opens, probes go out).
        """
        self._advance(now)
        if self._state is not State.ACTIVE or member != self._active:
            return
        if self._since is not None and self._since > at:
            return
        self._run(Input.PEER_LOST, now, member)

    # ------------------------------------------------------------------ classification

    def _advance(self, now: float) -> None:
        if self._state is State.INITIAL:
            raise RuntimeError(f"pair {self.name}: not started")
        if self._window is not None and self._window <= now:
            self._window = self._timer = None
            self._run(Input.TAKEOVER_END, now)
        elif self._timer is not None and self._timer <= now:
            self._timer = None
            if self._state is State.ACTIVE:
                if self._partner_waiting():
                    self._run(Input.PARTNER_SILENT, now, self._partner())
                self._run(self._period_end(), now)
            elif self._state is State.TAKEOVER:
                self._run(Input.TAKEOVER_PROBE, now)
            elif self._state is State.UNKNOWN and self._round_probes >= _ROUND:
                self._run(Input.FORCE_ROUND, now)
            else:
                self._run(Input.FORCE, now)
        elif self._reask is not None and self._reask <= now:
            self._reask = None
            if not self._answered:
                self._run(Input.PERIOD_UNANSWERED, now)
            if self._partner_waiting() and self._partner_reasks_left > 0:
                self._run(Input.PARTNER_UNANSWERED, now, self._partner())
        split_deadline = self._split_deadline()
        if split_deadline is not None and split_deadline <= now:
            self._run(Input.SPLIT_STALE, now)
        lifetime = self.settings.probe_lifetime
        for seq, probe in list(self._outstanding.items()):
            # This period's probes stay until their result, whatever the lifetime.
            current = seq in self._cycle_seqs or seq in self._partner_seqs
            if probe.sent_at + lifetime <= now and not current:
                del self._outstanding[seq]
                self._claims.pop(seq, None)
                self._handovers.pop(seq, None)

    def _settle(self, probe: Probe) -> bool:
        """Take ``probe`` off the outstanding ones; False if it is not one of them (late, repeated)."""
        if self._outstanding.get(probe.seq) != probe:
            return False
        del self._outstanding[probe.seq]
        return True

    def _classify_result(self, probe: Probe, *, alive: bool, failed_input: Input) -> Input:
        """The input a probe result is, seen from the current state."""
        member = probe.member
        handover = self._handovers.pop(probe.seq, None) is not None
        if handover and alive and self._state is State.ACTIVE and self._in_maintenance(self._active):
            return Input.HANDOVER_CONFIRMED
        if self._state is not State.ACTIVE or member != self._active:
            # While unknown no member is active: every member is "the other" one.
            claim = self._claims.pop(probe.seq, None) is not None
            if self._state is State.ACTIVE and self.active_active:
                # docs/design.md §2.2: the other member's answer sets or clears its flag only;
                # a claim probe sent while the pair was unknown is just one more answer.
                if alive:
                    return Input.CLAIM_CONFIRMED if claim else Input.ALIVE_OTHER
                if self._partner_up and probe.seq in self._partner_seqs:
                    return Input.PARTNER_FAILED
                return Input.CLAIM_REJECTED if claim else Input.NEGATIVE_OTHER
            if claim:
                if alive:
                    return Input.CLAIM_CONFIRMED
                if self._state is State.ACTIVE:
                    return Input.CLAIM_REJECTED
            return Input.ALIVE_OTHER if alive else Input.NEGATIVE_OTHER
        if alive:
            return Input.ALIVE_ACTIVE
        return failed_input if probe.seq in self._cycle_seqs else Input.NEGATIVE_STALE

    def _period_end(self) -> Input:
        if not self._answered:
            return Input.PERIOD_SILENT
        if self._in_maintenance(self._active) and not self.active_active:
            return Input.PERIOD_ANSWERED_MAINTENANCE
        return Input.PERIOD_ANSWERED

    # ------------------------------------------------------------------ the table

    def _run(self, event: Input, now: float, source: Member | None = None) -> None:
        if self.trace is not None:
            self.trace.append((self._state, event))
        if event in _LOST and self._partner_up and self._state is State.ACTIVE:
            # docs/design.md §2.2: the other member answers; it takes everything, nothing is held.
            self._run(Input.LOST_TO_SURVIVOR, now, self._partner())
            return
        row = self._table.get((self._state, event))
        if row is None and self._state is State.TAKEOVER:
            # The settings turned the window off during one: the window opened runs to its end.
            row = TAKEOVER_ROWS.get((self._state, event))
        if row is None:
            return  # an input this state ignores (the table lists what it does not)
        active_before = self._active
        for op in row.ops:
            self._do(op, row, now, source)
        if row.target is not State.TAKEOVER:
            self._window = None
        if row.target is not State.ACTIVE:
            self._active = None
            self._displaced = None
            self._cycle_seqs = set()
            self._reask = None
            self._partner_up = False
            self._partner_seqs = set()
        if row.target is not self._state or self._active != active_before:
            self._since = now
        self._state = row.target

    def _do(self, op: Op, row: Transition, now: float, source: Member | None) -> None:
        if op is Op.PROBE_PRIMARY:
            self._round_probes = 0
            self._probe_alternate(self.primary, now)
        elif op is Op.PROBE_OTHER_FIRST:
            # The member that was active has just failed (no answer within oos-check, or
            # the core's failover-timeout / transport error): it counts as the first silent
            # member of the round, so once the other one stays silent for oos-force the
            # pair is out of service (40001) and callers get 503 at failover-timeout +
            # oos-force at worst, not after a second probe of a member known to be dead.
            self._round_probes = 1
            self._probe_alternate(self._other(self._require_active()), now)
        elif op is Op.PROBE_NEXT:
            self._probe_alternate(self._next_target, now)
        elif op is Op.START_TAKEOVER:
            # Both members, the one that was not active first (the likelier new primary);
            # the lost one too, since one unanswered request is not an outage.  After the
            # window, the oos-force alternation starts with the member that was not active.
            self._window = now + self.settings.takeover_timeout
            self._next_target = self._other(self._require_active())
            self._probe_both(now)
        elif op is Op.PROBE_BOTH:
            self._probe_both(now)
        elif op is Op.PROBE_CLAIMANT:
            assert source is not None  # noqa: S101 - a claim comes from a member
            self._probe_claimant(source, now)
        elif op is Op.PROBE_ACTIVE:
            probe = self._send(self._require_active(), now)
            self._cycle_seqs = {probe.seq}
            self._answered = False
            self._timer = now + self.settings.oos_check
            self._reasks_left = self.settings.period_reasks
            self._reask = now + self._reask_interval
        elif op is Op.PROBE_HANDOVER:
            probe = self._send(self._other(self._require_active()), now)
            self._handovers[probe.seq] = probe
        elif op is Op.PROBE_AGAIN:
            self._cycle_seqs.add(self._send(self._require_active(), now).seq)
            self._reasks_left -= 1
            self._reask = now + self._reask_interval if self._reasks_left > 0 else None
        elif op is Op.MARK_ANSWERED:
            self._answered = True
            if not self._partner_waiting():
                self._reask = None
        elif op is Op.ACTIVATE_PRIMARY:
            self._activate(self.primary, row, now)
        elif op is Op.ACTIVATE_SOURCE:
            assert source is not None  # noqa: S101 - answers and requests name their member
            self._activate(source, row, now)
        elif op is Op.WAIT_PERIOD:
            self._answered = True
            self._cycle_seqs = set()
            self._reask = None
            self._timer = now + self.settings.oos_check if self.monitoring else None
        elif op is Op.EMIT_UNKNOWN:
            assert row.unknown is not None  # noqa: S101 - every EMIT_UNKNOWN row names a reason
            self._down_since = now
            hold = self.settings.takeover_timeout if row.target is State.TAKEOVER else None
            self._out.append(PairUnknown(self.name, now, row.unknown, self._active, hold))
        elif op is Op.EMIT_OUT_OF_SERVICE:
            self._out.append(PairOutOfService(self.name, now, (self.primary, self.backup)))
        elif op is Op.EMIT_RESTORED:
            self._out.append(PairRestored(self.name, now, self._require_active(), self._down_since))
        elif op is Op.EMIT_CLAIM_REJECTED:
            assert source is not None  # noqa: S101 - a probe result names its member
            self.counters.claims_rejected += 1
            self._claims_unreported += 1
            if now - self._claims_reported_at >= CLAIM_REPORT_INTERVAL:
                active = self._require_active()
                self._out.append(ClaimRejected(self.name, now, source, active, self._claims_unreported))
                self._claims_unreported = 0
                self._claims_reported_at = now
        elif op is Op.SPLIT_EVIDENCE:
            assert source is not None  # noqa: S101 - evidence comes from a member
            self._other_seen = now
            if not self._split:
                self._split = True
                self._split_since = now
                self._out.append(SplitBrain(self.name, now, True, self._require_active(), source))  # noqa: FBT003
        elif op is Op.PROBE_PARTNER or op is Op.PARTNER_AGAIN:
            self._probe_partner(now, again=op is Op.PARTNER_AGAIN)
        elif op is Op.PARTNER_UP or op is Op.PARTNER_DOWN:
            up = op is Op.PARTNER_UP
            self._partner_answered = up
            if self._partner_up != up:
                self._partner_up = up
                assert row.spread is not None  # noqa: S101 - every PARTNER_* row names a reason
                self._out.append(SpreadChanged(self.name, now, self.spread(), self._partner(), row.spread))
        elif op is Op.PARTNER_CLEAR:
            self._partner_up = self._partner_answered = False
        elif op is Op.SPREAD_REPORT:
            assert source is not None  # noqa: S101 - the operator named a member
            assert row.spread is not None  # noqa: S101 - every SPREAD_REPORT row names a reason
            self._out.append(SpreadChanged(self.name, now, self.spread(), source, row.spread))
        elif op is Op.SPLIT_END and self._split:
            active = self._require_active()
            self._split = False
            self._split_since = None
            self._out.append(SplitBrain(self.name, now, False, active, self._other(active)))  # noqa: FBT003

    # ------------------------------------------------------------------ operations

    def _activate(self, member: Member, row: Transition, now: float) -> None:
        assert row.activation is not None  # noqa: S101 - every ACTIVATE row names a reason
        previous = self._active
        if previous is not None and row.activation == "request":
            self._displaced = (previous, now)
        if self._last_active is not None and self._last_active != member:
            self.counters.switchovers += 1
        self._active = member
        self._last_active = member
        # Its pending claims are settled: it is active now, whatever their probes say later.
        self._claims = {seq: claim for seq, claim in self._claims.items() if claim.member != member}
        self._out.append(MemberBecameActive(self.name, now, member, row.activation, previous))

    def _probe_partner(self, now: float, *, again: bool) -> None:
        """Active-active: the other member's probe of this period, or (``again``) one more while silent."""
        probe = self._send(self._partner(), now)
        if again:
            self._partner_seqs.add(probe.seq)
            self._partner_reasks_left -= 1
        else:
            self._partner_seqs = {probe.seq}
            self._partner_answered = False
            self._partner_reasks_left = self.settings.period_reasks if self._partner_up else 0
        if self._partner_reasks_left > 0 and self._reask is None and self.monitoring:
            self._reask = now + self._reask_interval

    def _probe_alternate(self, target: Member, now: float) -> None:
        """One probe of the oos-force alternation (docs/design.md §2, "While unknown")."""
        self._send(target, now)
        self._round_probes += 1
        self._next_target = self._other(target)
        self._timer = now + self.settings.oos_force

    def _probe_both(self, now: float) -> None:
        """One round of the takeover window: both members now, the next round one interval later."""
        first = self._next_target
        self._send(first, now)
        self._send(self._other(first), now)
        self._timer = now + TAKEOVER_PROBE_INTERVAL

    def _probe_claimant(self, member: Member, now: float) -> None:
        """Probe ``member`` to confirm its request, unless a claim probe of it went out within an interval."""
        if now - self._claimed_at.get(member, -math.inf) < TAKEOVER_PROBE_INTERVAL:
            return  # a burst of requests (or of forged datagrams) costs one probe per interval
        probe = self._send(member, now)
        self._claims[probe.seq] = probe
        self._claimed_at[member] = now

    def _send(self, member: Member, now: float) -> Probe:
        self._seq += 1
        probe = Probe(self.name, member, self._seq, now)
        self._outstanding[probe.seq] = probe
        self.counters.probes_sent += 1
        self._out.append(probe)
        return probe

    @property
    def _reask_interval(self) -> float:
        return self.settings.oos_check / (self.settings.period_reasks + 1)
