"""What the pair monitor hands back: probe actions for the caller, events for the log.

Nothing here does I/O.  The caller drains these from :meth:`PairMonitor.drain`
(or :meth:`Monitor.drain`), turns each :class:`Probe` into a real OPTIONS
(:func:`sipha.ha.options.build_options` and a client transaction), and logs the
events, with the classic event id where one exists (docs/design.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from sipha.ha.member import Member
from sipha.sip.address import Address

# The event ids of the product sipha replaces (docs/design.md §4).
EVENT_OWN_ADDRESS_NOT_FOUND: Final = 40000
EVENT_PAIR_UNAVAILABLE: Final = 40001

ActivationReason = Literal["options", "request", "start", "worker", "maintenance", "survivor"]
"""Why a member became active: it answered an OPTIONS, it sent a request, the
pair starts with OPTIONS monitoring off (the configured primary is taken),
another worker process of this instance found it active (``[proxy] workers``), the
other member is in maintenance, or (an active-active pair) the other member, which
was active, was lost while this one answered."""

SpreadReason = Literal["answered", "silent", "failed", "suspect", "maintenance", "auto", "start"]
"""Why the members an active-active pair spreads its new Call-IDs over changed
(docs/design.md, "Active-active pairs")."""

UnknownReason = Literal["start", "no-answer", "not-alive", "probe-failed", "suspect", "worker"]
"""Why a pair became unknown: it starts so (docs/design.md §2); its active member let
oos-check expire without an answer; answered with a code outside alive-codes;
its probe failed (transport error, transaction timeout); or the proxy core
suspected it (failover-timeout, docs/design.md §5); or another worker process of this
instance lost it."""


def describe(member: Member) -> str:
    """``primary udp:10.0.1.10:5060``: how log lines name a member."""
    address = member.address
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{member.role} {address.transport.lower()}:{host}:{address.port}"


@dataclass(frozen=True, slots=True)
class Probe:
    """Action: send an OPTIONS to ``member`` now.

    The caller keeps this object with the client transaction it creates and
    hands it back to :meth:`~sipha.ha.PairMonitor.probe_answered` or
    :meth:`~sipha.ha.PairMonitor.probe_failed`: one result per probe.  ``seq``
    increases by one per probe of a pair; it may serve as the CSeq number.
    """

    pair: str
    member: Member
    seq: int
    sent_at: float


@dataclass(frozen=True, slots=True)
class HaEvent:
    """Base of everything the monitor reports for the log."""

    @property
    def event_id(self) -> int | None:
        """The event id of docs/design.md §4 (40000, 40001), or None when it has none."""
        return None

    @property
    def message(self) -> str:
        """One log line."""
        raise NotImplementedError  # pragma: no cover - each subclass has its own


@dataclass(frozen=True, slots=True)
class PairEvent(HaEvent):
    """An event of one pair, at monitor time ``at``."""

    pair: str
    at: float


@dataclass(frozen=True, slots=True)
class MemberBecameActive(PairEvent):
    """``member`` is now the active member of the pair; requests for the pair go to it."""

    member: Member
    reason: ActivationReason
    previous: Member | None
    """The member active before, when the pair had one (a switch by request)."""

    @property
    def message(self) -> str:
        """One log line."""
        how = {
            "options": "answered OPTIONS",
            "request": "sent a request",
            "start": "configured primary, OPTIONS monitoring off",
            "worker": "found by another worker",
            "maintenance": "answered OPTIONS; the other member is in maintenance",
            "survivor": "active-active: it answers, the other member was lost",
        }[self.reason]
        was = "" if self.previous is None else f", was {describe(self.previous)}"
        return f"pair {self.pair}: {describe(self.member)} is active ({how}{was})"


@dataclass(frozen=True, slots=True)
class PairUnknown(PairEvent):
    """No member is known to be active: the alternating oos-force probes start."""

    reason: UnknownReason
    member: Member | None
    """The member that was active (None at start)."""
    hold: float | None = None
    """The takeover window (takeover-timeout) during which its requests are held, if one opens."""

    @property
    def message(self) -> str:
        """One log line."""
        why = {
            "start": "starting",
            "no-answer": "no answer within oos-check",
            "not-alive": "answered with a code outside alive-codes",
            "probe-failed": "OPTIONS failed (transport error or timeout)",
            "suspect": "a forwarded request got no response within failover-timeout, or a transport error",
            "worker": "lost by another worker",
        }[self.reason]
        who = "" if self.member is None else f" from {describe(self.member)}"
        hold = "" if self.hold is None else f"; holding its requests for up to {self.hold:g} s"
        return f"pair {self.pair}: no active member, probing both ({why}{who}){hold}"


@dataclass(frozen=True, slots=True)
class PairOutOfService(PairEvent):
    """Event 40001: both members were probed while unknown and neither answered."""

    members: tuple[Member, Member]

    @property
    def event_id(self) -> int | None:
        """40001, "SIP Server HA pair unavailable"."""
        return EVENT_PAIR_UNAVAILABLE

    @property
    def message(self) -> str:
        """One log line."""
        names = " and ".join(describe(member) for member in self.members)
        return f"SIP Server HA pair unavailable: pair {self.pair} ({names} do not answer OPTIONS)"


@dataclass(frozen=True, slots=True)
class PairRestored(PairEvent):
    """An out-of-service pair (40001) has an active member again."""

    member: Member
    down_since: float
    """When the pair became unknown, for the outage duration."""

    @property
    def message(self) -> str:
        """One log line."""
        return (
            f"SIP Server HA pair available again: pair {self.pair}, {describe(self.member)} "
            f"after {self.at - self.down_since:.1f} s"
        )


@dataclass(frozen=True, slots=True)
class ClaimRejected(PairEvent):
    """A request came from the member that is not active, but it did not answer its probe alive.

    The pair was not switched: the request was forged (one UDP datagram with the
    member's address is enough), or the member sent it while in backup mode.
    """

    member: Member
    active: Member
    claims: int
    """Such requests not followed since the last report (the report is rate-limited)."""

    @property
    def message(self) -> str:
        """One log line."""
        return (
            f"pair {self.pair}: a request from {describe(self.member)} was not followed: it did not "
            f"answer OPTIONS alive (forged, or sent in backup mode); keeping {describe(self.active)} "
            f"({self.claims} such request(s) since the last report)"
        )


@dataclass(frozen=True, slots=True)
class SplitBrain(PairEvent):
    """Both members behave as primary (``started``), or no longer do (not ``started``)."""

    started: bool
    active: Member
    """The member kept active: the monitor does not switch while this lasts."""
    other: Member

    @property
    def message(self) -> str:
        """One log line."""
        if self.started:
            return (
                f"pair {self.pair}: split brain: {describe(self.other)} also acts as primary; "
                f"keeping {describe(self.active)}"
            )
        return f"pair {self.pair}: split brain over, {describe(self.active)} is the only primary"


@dataclass(frozen=True, slots=True)
class ProxyAddressNotFound(HaEvent):
    """Event 40000: none of this instance's addresses is in the pool's configured list."""

    configured: tuple[Address, ...]
    listening: tuple[Address, ...]

    @property
    def event_id(self) -> int | None:
        """40000, "own proxy address not found in the configured list"."""
        return EVENT_OWN_ADDRESS_NOT_FOUND

    @property
    def message(self) -> str:
        """One log line."""
        ours = ", ".join(f"{a.host}:{a.port}" for a in self.listening) or "none"
        pool = ", ".join(f"{a.host}:{a.port}" for a in self.configured) or "none"
        return f"own proxy address not found in the configured list (ours: {ours}; pool: {pool})"


@dataclass(frozen=True, slots=True)
class SpreadChanged(PairEvent):
    """An active-active pair: the members its new Call-IDs go to changed (docs/design.md §2.2).

    ``members`` are those that take new Call-IDs now (configured order); ``member`` the one
    whose change this is, for ``reason``.
    """

    members: tuple[Member, ...]
    member: Member
    reason: SpreadReason

    @property
    def message(self) -> str:
        """One log line."""
        why = {
            "answered": "answered OPTIONS",
            "silent": "no answer within oos-check",
            "failed": "OPTIONS failed or answered outside alive-codes",
            "suspect": "a forwarded request got no response within failover-timeout, or a transport error",
            "maintenance": "in maintenance",
            "auto": "back from maintenance",
            "start": "OPTIONS monitoring off",
        }[self.reason]
        names = ", ".join(describe(member) for member in self.members) or "none"
        who = describe(self.member)
        return f"pair {self.pair} (active-active): new calls spread over {names} ({who}: {why})"


Output = Probe | PairEvent
"""What :meth:`PairMonitor.drain` returns, in the order it happened."""
