"""Transaction timers (RFC 3261 §17, Table 4; RFC 6026 §8.11 for Timer L).

Every timer is derived from three base values, T1, T2 and T4 (§17.1.1.1):

* T1, the round-trip time estimate, 500 ms by default;
* T2, "the maximum retransmit interval for non-INVITE requests and INVITE
  responses", 4 s by default;
* T4, "maximum duration a message will remain in the network", 5 s by default.

Table 4 of RFC 3261 (summarised; "UDP" means any unreliable transport):

======  =========================  ============================================
Timer   Value                      Meaning
======  =========================  ============================================
A       initially T1               INVITE request retransmit interval, UDP only
B       64*T1                      INVITE transaction timeout timer
D       > 32 s for UDP, 0 for TCP  wait time for response retransmits
E       initially T1               non-INVITE request retransmit interval, UDP
F       64*T1                      non-INVITE transaction timeout timer
G       initially T1               INVITE response retransmit interval
H       64*T1                      wait time for ACK receipt
I       T4 for UDP, 0 for TCP      wait time for ACK retransmits
J       64*T1 for UDP, 0 for TCP   wait time for non-INVITE request retransmits
K       T4 for UDP, 0 for TCP      wait time for response retransmits
L       64*T1                      RFC 6026: wait time for INVITE retransmits
                                   after a 2xx (server Accepted state)
======  =========================  ============================================

This module knows values only; which state starts or stops which timer is in
the tables of :mod:`sipha.txn.machines`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

# RFC 3261 Table 4: Timer D is "> 32s for UDP"; 32 s is the value used everywhere.
TIMER_D_UNRELIABLE: Final = 32.0


class Timer(Enum):
    """The RFC 3261 §17 transaction timers, plus RFC 6026 Timer L."""

    __hash__ = object.__hash__  # members are singletons: hash by identity, in C

    A = "A"
    B = "B"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    I = "I"  # noqa: E741 - the RFC's name for it
    J = "J"
    K = "K"
    L = "L"


# Timers that exist only to retransmit, so only on unreliable transports (§17.1.1.2:
# "If an unreliable transport is being used, the client transaction MUST start timer A";
# §17.1.2.2 for E, §17.2.1 for G: "If an unreliable transport is being used ... timer G").
RETRANSMIT_TIMERS: Final = frozenset({Timer.A, Timer.E, Timer.G})


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """The base timer values, in seconds, and the timers derived from them.

    ``t1``, ``t2`` and ``t4`` are the only knobs (RFC 3261 §17.1.1.1 lets T1 be
    raised, and smaller values be used on private networks); every other timer
    is computed from them as Table 4 says.
    """

    t1: float = 0.5
    """RTT estimate (§17.1.1.1)."""
    t2: float = 4.0
    """Maximum retransmit interval for non-INVITE requests and INVITE responses."""
    t4: float = 5.0
    """Maximum duration a message remains in the network."""

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2):
            raise ValueError(f"timers need 0 < T1 <= T2, got T1={self.t1} T2={self.t2}")
        if self.t4 < 0:
            raise ValueError(f"T4 must not be negative, got {self.t4}")

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J (unreliable) and L."""
        return 64 * self.t1

    def initial(self, timer: Timer, *, reliable: bool) -> float | None:
        """The first interval of ``timer``, or None when it does not run on this transport.

        Zero means "fire at once": Timers D, I, J and K are 0 on reliable
        transports, as there are no retransmissions to wait for.
        """
        if timer in RETRANSMIT_TIMERS:
            # A, E and G all start at T1 (Table 4) and run only on unreliable transports.
            return None if reliable else self.t1
        if timer is Timer.D:
            return 0.0 if reliable else TIMER_D_UNRELIABLE
        if timer in (Timer.I, Timer.K):
            return 0.0 if reliable else self.t4
        if timer is Timer.J:
            return 0.0 if reliable else self.timeout
        # B, F, H and L: 64*T1 on every transport.
        return self.timeout

    def doubled(self, interval: float) -> float:
        """Timer A's next interval: "reset the timer with a value of 2*T1" (§17.1.1.2), no cap."""
        return 2 * interval

    def doubled_capped(self, interval: float) -> float:
        """Timers E (Trying) and G: double, "unless that value exceeds T2" (§17.1.2.2, §17.2.1)."""
        return min(2 * interval, self.t2)

    def sequence(self, timer: Timer, count: int) -> list[float]:
        """The first ``count`` intervals of a retransmission timer on an unreliable transport.

        A doubles without bound; E (while Trying) and G double up to T2.  For
        documentation and tests; the machines compute the same values step by step.
        """
        if timer not in RETRANSMIT_TIMERS:
            raise ValueError(f"Timer {timer.value} is not a retransmission timer")
        step = self.doubled if timer is Timer.A else self.doubled_capped
        intervals: list[float] = []
        interval = self.t1
        for _ in range(count):
            intervals.append(interval)
            interval = step(interval)
        return intervals
