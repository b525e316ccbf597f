"""What a pair monitor shows the admin surface: its counters and a snapshot of its state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sipha.ha.member import Member


@dataclass(slots=True)
class PairCounters:
    """What one pair counts, for /status and /metrics."""

    probes_sent: int = 0
    probes_answered: int = 0
    """Final responses with an alive code."""
    probes_failed: int = 0
    """Final responses outside alive-codes, transport errors and timeouts (all "no answer")."""
    switchovers: int = 0
    """Times the active member became a different member than the one active before."""
    claims_rejected: int = 0
    """Requests from the member that was not active, not followed: it did not answer its probe alive."""


@dataclass(frozen=True, slots=True)
class PairStatus:
    """A snapshot of one pair, for the admin surface."""

    pair: str
    state: str
    """``active``, ``takeover``, ``unknown`` or ``out-of-service`` (``initial`` before start)."""
    active: Member | None
    monitoring: bool
    """False when oos-check is 0: no OPTIONS are sent."""
    since: float | None
    """Monitor time of the last change of state or of active member."""
    last_rtt: dict[str, float | None]
    """Per role (primary, backup): the round trip of the last final answer to an OPTIONS."""
    split_brain: bool
    split_brain_since: float | None
    counters: PairCounters
    next_deadline: float | None
    maintenance: tuple[str, ...] = ()
    """The roles the operator put in maintenance (docs/design.md §2)."""
    mode: str = "primary-backup"
    """``primary-backup`` or ``active-active`` (docs/design.md §2.2)."""
    answering: tuple[str, ...] = ()
    """Active-active: the roles that answer now (none while the pair has no active member)."""
    spread: tuple[str, ...] = ()
    """Active-active: the roles new Call-IDs go to (those answering, less maintenance)."""

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (members as ``role``/``transport``/``host``/``port``)."""
        active = self.active
        return {
            "pair": self.pair,
            "state": self.state,
            "active": None
            if active is None
            else {
                "role": active.role,
                "transport": active.address.transport,
                "host": active.address.host,
                "port": active.address.port,
            },
            "monitoring": self.monitoring,
            "since": self.since,
            "last_rtt": dict(self.last_rtt),
            "split_brain": self.split_brain,
            "split_brain_since": self.split_brain_since,
            "probes_sent": self.counters.probes_sent,
            "probes_answered": self.counters.probes_answered,
            "probes_failed": self.counters.probes_failed,
            "switchovers": self.counters.switchovers,
            "claims_rejected": self.counters.claims_rejected,
            "next_deadline": self.next_deadline,
            "maintenance": list(self.maintenance),
            "mode": self.mode,
            "answering": list(self.answering),
            "spread": list(self.spread),
        }
