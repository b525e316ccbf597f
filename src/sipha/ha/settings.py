"""The monitor's settings: the two timers and the alive codes (docs/design.md §2, §5 ``[monitor]``)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

# docs/design.md §2 table: the classic algorithm's ranges.
OOS_CHECK_MAX: Final = 300.0
OOS_FORCE_MIN: Final = 1.0
OOS_FORCE_MAX: Final = 32.0
PERIOD_REASKS: Final = 3
"""While the active member has not answered its period's probe, it is probed again this many times,
at each quarter of oos-check (docs/design.md §2, "loss is not death"): with oos-check = 1 s and
Timer E's retransmission at 0.5 s, six OPTIONS reach out before the period ends instead of two, so
5 % random loss on each datagram leaves a period unanswered about once in a million periods
(0.0975^6), not once in a hundred (0.0975^2)."""
# RFC 3261 §17.1.2.2: a non-INVITE client transaction gives up after Timer F = 64*T1 = 32 s
# (T1 = 500 ms).  A probe is forgotten after twice that: by then its transaction has ended
# and the caller has reported it, so only a caller that lost the result is covered.
PROBE_LIFETIME: Final = 64.0
TAKEOVER_MAX: Final = 32.0
"""takeover-timeout's ceiling: a caller gives an INVITE up after Timer B = 64*T1 = 32 s
(RFC 3261 §17.1.1.2), so a request held longer is lost anyway."""
TAKEOVER_PROBE_INTERVAL: Final = 0.25
"""During a takeover window, both members are probed this often: the backup is found within
a quarter of a second of answering, and a member still binding its port (ICMP port
unreachable, connection refused) is asked again a quarter of a second later, not one
oos-force period later."""
PairMode = Literal["primary-backup", "active-active"]
"""``[[pair]] mode``: one active member at a time (docs/design.md §2), or both members serving at
once, new Call-IDs spread over those that answer (docs/design.md §2.2)."""
PRIMARY_BACKUP: Final = "primary-backup"
ACTIVE_ACTIVE: Final = "active-active"
PAIR_MODES: Final[tuple[PairMode, ...]] = (PRIMARY_BACKUP, ACTIVE_ACTIVE)
# RFC 3261 §21: status codes are 100-699; only final ones (200-699) answer an OPTIONS.
_FINAL_MIN: Final = 200
_CODE_RE: Final = re.compile(r"([1-6])([0-9]{2}|xx)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class AliveCodes:
    """The ``alive-codes`` list: exact codes ("200", "486") and classes ("2xx")."""

    exact: frozenset[int]
    classes: frozenset[int]

    @classmethod
    def parse(cls, codes: Iterable[str]) -> AliveCodes:
        """Parse ``["2xx", "486"]``; raises ValueError naming a bad entry (as the config does)."""
        exact: set[int] = set()
        classes: set[int] = set()
        for code in codes:
            match = _CODE_RE.fullmatch(code.strip())
            if match is None:
                raise ValueError(f"alive-codes: {code!r}: expected a status code (200) or class (2xx)")
            if match.group(2).lower() == "xx":
                classes.add(int(match.group(1)))
            else:
                exact.add(int(code))
        if not exact and not classes:
            raise ValueError("alive-codes: empty: no answer could ever mean alive")
        return cls(frozenset(exact), frozenset(classes))

    def matches(self, status: int) -> bool:
        """Whether a *final* response with ``status`` means alive.

        Provisional responses never do, even if the list names one ("1xx",
        "180"): docs/design.md §2 says they are ignored, and an OPTIONS is answered only
        by its final response (RFC 3261 §11.2).
        """
        if status < _FINAL_MIN:
            return False
        return status in self.exact or status // 100 in self.classes


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """``[monitor]`` as the pair monitor uses it; the app builds it from :class:`sipha.config.Config`."""

    oos_check: float = 5.0
    """While a member is active: the OPTIONS period and answer timeout; 0 = monitoring off."""
    oos_force: float = 5.0
    """While no member is known active: the period of the alternating OPTIONS."""
    alive_codes: AliveCodes = field(default_factory=lambda: AliveCodes.parse(["2xx"]))
    probe_lifetime: float = PROBE_LIFETIME
    """How long an unanswered probe may still bring an answer (then it is forgotten)."""
    period_reasks: int = PERIOD_REASKS
    """Re-asks of a silent active member per period (:data:`PERIOD_REASKS`; not an option: the
    loss tests set 0 for the control run)."""
    takeover_timeout: float = 5.0
    """How long a pair that lost its active member holds its requests while both members are
    probed every :data:`TAKEOVER_PROBE_INTERVAL`, before event 40001; 0 = the classic
    algorithm (the oos-force alternation, 503 at once)."""

    def __post_init__(self) -> None:
        if not 0 <= self.oos_check <= OOS_CHECK_MAX:
            raise ValueError(f"oos-check = {self.oos_check}: expected 0 to 300 s (0 = no OPTIONS)")
        if not OOS_FORCE_MIN <= self.oos_force <= OOS_FORCE_MAX:
            raise ValueError(f"oos-force = {self.oos_force}: expected 1 to 32 s")
        if not 0 <= self.takeover_timeout <= TAKEOVER_MAX:
            raise ValueError(f"takeover-timeout = {self.takeover_timeout}: expected 0 to 32 s (0: none)")
        if self.period_reasks < 0:
            raise ValueError(f"period_reasks = {self.period_reasks}: expected >= 0")
        if self.probe_lifetime <= 0:
            raise ValueError(f"probe_lifetime = {self.probe_lifetime}: expected > 0 s")

    @property
    def monitoring(self) -> bool:
        """Whether OPTIONS monitoring is on (docs/design.md §2: "0 turns OPTIONS monitoring off")."""
        return self.oos_check > 0

    @property
    def takeover(self) -> bool:
        """Whether a pair that loses its active member holds its requests for a takeover window."""
        return self.monitoring and self.takeover_timeout > 0

    @property
    def split_brain_window(self) -> float:
        """How long evidence that the non-active member acts as primary stays fresh.

        The longer of the algorithm's two periods: within one period the monitor
        would have heard again from a member that still behaves so.
        """
        return max(self.oos_check, self.oos_force)
