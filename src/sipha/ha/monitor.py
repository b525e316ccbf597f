"""Every pair of the configuration, behind one API: what the app drives and the routing view reads."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from sipha.ha.events import Output, Probe
from sipha.ha.member import Member
from sipha.ha.pair import PairMonitor
from sipha.ha.settings import MonitorSettings, PairMode
from sipha.ha.status import PairStatus
from sipha.sip.address import host_key


class Monitor:
    """A :class:`PairMonitor` per pair, with the same sans-IO API.

    Pairs are independent (docs/design.md §1: each instance monitors every pair by
    itself); this class routes each input to its pair and merges outputs and
    deadlines.
    """

    def __init__(
        self,
        pairs: Iterable[tuple[Member, Member]],
        settings: MonitorSettings | None = None,
        *,
        on_rtt: Callable[[str, str, float], None] | None = None,
    ) -> None:
        """``pairs``: (primary, backup) per pair, e.g. ``ConfiguredView.members(name)`` for each name.

        ``on_rtt(pair, role, seconds)``: called with each answered probe's round trip (for
        /metrics); a callback, not a subclass, so that the compiled monitor stays compiled.
        """
        self.on_rtt = on_rtt
        settings = settings or MonitorSettings()
        self.pairs: dict[str, PairMonitor] = {}
        # Requests are matched on every message from a member: a dict, not a scan of the pairs.
        self._by_address: dict[tuple[str, int], PairMonitor] = {}
        for primary, backup in pairs:
            pair = PairMonitor(primary, backup, settings)
            if pair.name in self.pairs:
                raise ValueError(f"pair {pair.name!r} appears twice")
            for member in pair.members():
                key = (host_key(member.address.host), member.address.port)
                other = self._by_address.get(key)
                if other is not None:
                    raise ValueError(
                        f"{member.address.host}:{member.address.port} is a member of pairs "
                        f"{other.name!r} and {pair.name!r}"
                    )
                self._by_address[key] = pair
            self.pairs[pair.name] = pair

    def adopt(self, pair: PairMonitor) -> None:
        """Put a running pair monitor (kept across a reload) in place of the new one of that name.

        Its members must be the same: the pair keeps its state, the routing by address
        points at it.
        """
        current = self.pairs.get(pair.name)
        if current is None or current.members() != pair.members():
            raise ValueError(f"pair {pair.name!r} has other members here")
        if pair.mode != current.mode:
            pair.mode = current.mode  # the reload changed it: the new mode, the state kept
        self.pairs[pair.name] = pair
        for member in pair.members():
            self._by_address[(host_key(member.address.host), member.address.port)] = pair

    def use_modes(self, modes: Mapping[str, PairMode]) -> None:
        """Each pair's ``mode`` (docs/design.md §2.2), before :meth:`start`; pairs not named keep theirs."""
        for name, mode in modes.items():
            self._pair(name).mode = mode

    def start(self, now: float) -> None:
        """Start every pair (first probes, or the primaries active when monitoring is off)."""
        for pair in self.pairs.values():
            pair.start(now)

    def tick(self, now: float) -> None:
        """Fire the timers due at ``now`` in every pair."""
        for pair in self.pairs.values():
            pair.tick(now)

    def next_deadline(self) -> float | None:
        """The earliest deadline of all pairs, or None."""
        # Called after every message the proxy handles: no lists, no generators.
        earliest: float | None = None
        for pair in self.pairs.values():
            deadline = pair.next_deadline()
            if deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        return earliest

    def probe_answered(self, probe: Probe, status: int, now: float, rtt: float | None = None) -> None:
        """A response to ``probe`` (see :meth:`PairMonitor.probe_answered`); its round trip to ``on_rtt``."""
        if self.on_rtt is not None:
            self.on_rtt(probe.pair, probe.member.role, now - probe.sent_at if rtt is None else rtt)
        self._pair(probe.pair).probe_answered(probe, status, now, rtt)

    def probe_failed(self, probe: Probe, now: float) -> None:
        """``probe`` failed: transport error or timeout (see :meth:`PairMonitor.probe_failed`)."""
        self._pair(probe.pair).probe_failed(probe, now)

    def request_from(self, host: str, port: int, now: float) -> Member | None:
        """A request from ``host``/``port``: the member it is from (and its pair updated), or None."""
        pair = self._by_address.get((host_key(host), port))
        if pair is None:
            return None
        return pair.request_from(host, port, now)

    def suspect(self, member: Member, now: float) -> None:
        """The proxy core got no response from ``member`` within failover-timeout."""
        self._pair(member.pair).suspect(member, now)

    def peer_active(self, member: Member, at: float, now: float) -> None:
        """Another worker found ``member`` active at ``at`` (see :meth:`PairMonitor.peer_active`)."""
        self._pair(member.pair).peer_active(member, at, now)

    def peer_lost(self, member: Member, at: float, now: float) -> None:
        """Another worker lost the active ``member`` at ``at`` (see :meth:`PairMonitor.peer_lost`)."""
        self._pair(member.pair).peer_lost(member, at, now)

    def pending(self) -> bool:
        """Whether :meth:`drain` has anything to return (asked after every message: no lists)."""
        for pair in self.pairs.values():  # noqa: SIM110 - no generator on the per-message path
            if pair.pending:
                return True
        return False

    def drain(self) -> list[Output]:
        """Probes and events of every pair (each pair's in order)."""
        out: list[Output] = []
        for pair in self.pairs.values():
            out.extend(pair.drain())
        return out

    def active_table(self) -> dict[str, Member | None]:
        """Pair name to active member (None: unknown), for ``ConfiguredView.active``."""
        return {name: pair.active for name, pair in self.pairs.items()}

    def spread_table(self) -> dict[str, tuple[tuple[Member, ...], tuple[Member, ...]]]:
        """Per active-active pair: (the members that answer, those new Call-IDs go to)."""
        return {
            name: (pair.answering(), pair.spread()) for name, pair in self.pairs.items() if pair.active_active
        }

    def status(self) -> dict[str, PairStatus]:
        """A snapshot per pair, for /status."""
        return {name: pair.status() for name, pair in self.pairs.items()}

    def _pair(self, name: str) -> PairMonitor:
        pair = self.pairs.get(name)
        if pair is None:
            raise KeyError(f"no pair named {name!r}")
        return pair
