"""Shared fixtures for the pair monitor tests: a monitor on a fake clock, and output filters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sipha.ha import (
    AliveCodes,
    Input,
    Member,
    MemberBecameActive,
    MonitorSettings,
    Output,
    PairEvent,
    PairMonitor,
    PairRestored,
    Probe,
    State,
)
from sipha.sip.address import Address
from tests.clock import run_timers

PAIR = "site-a"
PRIMARY = Member(PAIR, "primary", Address("UDP", "10.0.1.10", 5060))
BACKUP = Member(PAIR, "backup", Address("UDP", "10.0.1.11", 5060))
CHECK = 5.0
FORCE = 2.0

_T = TypeVar("_T")


def tracing_monitor(primary: Member, backup: Member, settings: MonitorSettings | None = None) -> PairMonitor:
    """A pair monitor that records every (state, input) it looks up in the table (``trace``)."""
    monitor = PairMonitor(primary, backup, settings)
    monitor.trace = []
    return monitor


def settings(
    check: float = CHECK, force: float = FORCE, codes: tuple[str, ...] = ("2xx",), takeover: float = 0.0
) -> MonitorSettings:
    """The classic algorithm by default (takeover-timeout 0); ``takeover`` opens the window."""
    return MonitorSettings(
        oos_check=check, oos_force=force, alive_codes=AliveCodes.parse(codes), takeover_timeout=takeover
    )


@dataclass
class Harness:
    """A pair monitor driven by hand: ``now`` is the fake clock; ``out`` keeps everything drained."""

    monitor: PairMonitor
    now: float = 100.0
    out: list[Output] = field(default_factory=list)

    @classmethod
    def make(
        cls,
        check: float = CHECK,
        force: float = FORCE,
        codes: tuple[str, ...] = ("2xx",),
        takeover: float = 0.0,
    ) -> Harness:
        return cls(tracing_monitor(PRIMARY, BACKUP, settings(check, force, codes, takeover)))

    @classmethod
    def started(
        cls,
        check: float = CHECK,
        force: float = FORCE,
        codes: tuple[str, ...] = ("2xx",),
        takeover: float = 0.0,
    ) -> Harness:
        harness = cls.make(check, force, codes, takeover)
        harness.start()
        return harness

    @property
    def trace(self) -> list[tuple[State, Input]]:
        """Every (state, input) the monitor looked up in its table, in order."""
        assert self.monitor.trace is not None
        return self.monitor.trace

    # ------------------------------------------------------------------ driving

    def start(self) -> list[Output]:
        self.monitor.start(self.now)
        return self._collect()

    def advance(self, seconds: float) -> list[Output]:
        """Move the clock, calling tick() at every deadline on the way, in order."""
        self.now = run_timers(self.monitor, self.monitor.tick, self.now, self.now + seconds)
        return self._collect()

    def at(self, when: float) -> list[Output]:
        """Advance to the absolute time ``when``."""
        return self.advance(when - self.now)

    def answer(self, probe: Probe, status: int = 200, rtt: float | None = None) -> list[Output]:
        self.monitor.probe_answered(probe, status, self.now, rtt)
        return self._collect()

    def fail(self, probe: Probe) -> list[Output]:
        self.monitor.probe_failed(probe, self.now)
        return self._collect()

    def request(self, member: Member, port: int | None = None) -> list[Output]:
        self.monitor.request_from(
            member.address.host, member.address.port if port is None else port, self.now
        )
        return self._collect()

    def claim(self, member: Member, status: int = 200) -> list[Output]:
        """A request from ``member``, then the answer of the probe that confirms it (docs/design.md §2)."""
        out = self.request(member)
        return out + self.answer(self.last_probe(member), status)

    def peer_active(self, member: Member, at: float | None = None) -> list[Output]:
        """Another worker found ``member`` active (at ``at``, default now)."""
        self.monitor.peer_active(member, self.now if at is None else at, self.now)
        return self._collect()

    def peer_lost(self, member: Member, at: float | None = None) -> list[Output]:
        """Another worker lost the active ``member`` (at ``at``, default now)."""
        self.monitor.peer_lost(member, self.now if at is None else at, self.now)
        return self._collect()

    def suspect(self, member: Member) -> list[Output]:
        self.monitor.suspect(member, self.now)
        return self._collect()

    def maintenance(self, member: Member, on: bool = True) -> list[Output]:
        """The operator puts ``member`` in maintenance (``on``) or back to the algorithm."""
        self.monitor.set_maintenance(member.role, on, self.now)
        return self._collect()

    def _collect(self) -> list[Output]:
        out = self.monitor.drain()
        self.out.extend(out)
        return out

    # ------------------------------------------------------------------ reading

    def probes(self) -> list[Probe]:
        return of_type(self.out, Probe)

    def last_probe(self, member: Member | None = None) -> Probe:
        return [p for p in self.probes() if member is None or p.member == member][-1]

    def events(self) -> list[PairEvent]:
        return of_type(self.out, PairEvent)


def of_type(outputs: Sequence[Output], kind: type[_T]) -> list[_T]:
    return [output for output in outputs if isinstance(output, kind)]


def kinds(outputs: Sequence[Output]) -> list[str]:
    """``Probe:primary``, ``MemberBecameActive:backup``, ... for compact assertions."""
    names = []
    for output in outputs:
        # PairUnknown names the member that failed, not the one the event is about.
        suffix = (
            f":{output.member.role}" if isinstance(output, Probe | MemberBecameActive | PairRestored) else ""
        )
        names.append(type(output).__name__ + suffix)
    return names
