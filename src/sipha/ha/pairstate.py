"""One pair's state and what the admin surface reads of it; :class:`sipha.ha.pair.PairMonitor` drives it.

Split from :mod:`sipha.ha.pair` (which keeps the inputs, the classification and the
operations of the table) to keep both modules short: the fields, the settings and the
table they select, the mode (docs/design.md §2.2), and the read-only views.
"""

from __future__ import annotations

import math

from sipha.ha.events import Output, Probe
from sipha.ha.machine import Input, State, table_for
from sipha.ha.member import Member
from sipha.ha.settings import ACTIVE_ACTIVE, PRIMARY_BACKUP, MonitorSettings, PairMode
from sipha.ha.status import PairCounters, PairStatus
from sipha.sip.address import host_key


class PairState:
    """The state of one pair's monitor (docs/design.md §2); no inputs here."""

    def __init__(
        self,
        primary: Member,
        backup: Member,
        settings: MonitorSettings | None = None,
        *,
        mode: PairMode = PRIMARY_BACKUP,
    ) -> None:
        if primary.pair != backup.pair:
            raise ValueError(f"members of different pairs: {primary.pair!r}, {backup.pair!r}")
        if self._key(primary) == self._key(backup):
            raise ValueError(f"pair {primary.pair}: primary and backup have the same address")
        self.primary = primary
        self.backup = backup
        self._mode: PairMode = mode
        self.settings = settings or MonitorSettings()
        self.counters = PairCounters()
        # TAKEOVER: when the window ends (40001 then), and the member that was lost.
        self._window: float | None = None
        # Probes sent to confirm a request from the member that is not active (its claim to
        # be primary): seq -> probe.  Rejected claims not reported yet, and when last reported.
        self._claims: dict[int, Probe] = {}
        # When each member's last claim probe went out (answered or not: the rate limit holds
        # even when the probes fail at once).
        self._claimed_at: dict[Member, float] = {}
        self._claims_unreported = 0
        self._claims_reported_at = -math.inf
        self._state = State.INITIAL
        self._active: Member | None = None
        self._last_active: Member | None = None
        self._since: float | None = None
        self._down_since = 0.0
        self._timer: float | None = None
        # ACTIVE: whether the active member answered in this oos-check period, which probes
        # are this period's (none right after activation: the activation was the answer), when
        # it is probed again if still silent, and how many more times.
        self._answered = False
        self._cycle_seqs: set[int] = set()
        self._reask: float | None = None
        self._reasks_left = 0
        # UNKNOWN / OUT_OF_SERVICE: the next member of the alternation, probes sent so far.
        self._next_target = primary
        self._round_probes = 0
        self._seq = 0
        self._outstanding: dict[int, Probe] = {}
        self._split = False
        self._split_since: float | None = None
        self._other_seen = 0.0
        # The member a request from the other member displaced, and when: a request from it
        # soon after is the flip-flop of two primaries, not a new takeover.
        self._displaced: tuple[Member, float] | None = None
        self._last_rtt: dict[str, float | None] = {primary.role: None, backup.role: None}
        self._out: list[Output] = []
        self.trace: list[tuple[State, Input]] | None = None
        """When a list (tests): every (state, input) looked up in the table is appended, in order."""
        self.maintenance: set[str] = set()
        """Roles in maintenance (:meth:`set_maintenance`); kept across a reload with the monitor."""
        # Probes of the other member sent to hand the pair over (maintenance): seq -> probe.
        self._handovers: dict[int, Probe] = {}
        # Active-active (docs/design.md §2.2), while ACTIVE: whether the member that is not
        # active answers too (it takes new Call-IDs), whether it answered this period, which
        # probes are its period's, how many more times it is asked while silent.
        self._partner_up = False
        self._partner_answered = False
        self._partner_seqs: set[int] = set()
        self._partner_reasks_left = 0

    # ------------------------------------------------------------------ reading

    @property
    def settings(self) -> MonitorSettings:
        """The ``[monitor]`` settings (a reload may replace them: the table follows)."""
        return self._settings

    @settings.setter
    def settings(self, settings: MonitorSettings) -> None:
        self._settings = settings
        self._table = table_for(takeover=settings.takeover, active_active=self._mode == ACTIVE_ACTIVE)

    @property
    def mode(self) -> PairMode:
        """``primary-backup`` (one active member) or ``active-active`` (docs/design.md §2.2)."""
        return self._mode

    @mode.setter
    def mode(self, mode: PairMode) -> None:
        # A reload that changes the mode of a running pair: its table from now on; the other
        # member joins the spread when it answers its next probe.
        self._mode = mode
        self._partner_up = False
        self._partner_seqs = set()
        self._handovers = {}  # maintenance moves the spread, not the pair, in active-active mode
        if mode == ACTIVE_ACTIVE:  # both members are primary: no split brain (its rows are gone)
            self._split = False
            self._split_since = None
            self._displaced = None
        self.settings = self._settings

    @property
    def active_active(self) -> bool:
        """Whether both members serve at once (``mode = "active-active"``)."""
        return self._mode == ACTIVE_ACTIVE

    def answering(self) -> tuple[Member, ...]:
        """Active-active: the members that answer now, in configured order; primary-backup: ()."""
        active = self._active
        if not self.active_active or active is None:
            return ()
        if not self._partner_up:
            return (active,)
        return (self.primary, self.backup)

    def spread(self) -> tuple[Member, ...]:
        """Active-active: the members new Call-IDs go to; primary-backup: ().

        Those that answer, but a member in maintenance when the other answers (never none
        while one answers).
        """
        answering = self.answering()
        kept = tuple(member for member in answering if member.role not in self.maintenance)
        return kept or answering

    @property
    def name(self) -> str:
        """The pair's name."""
        return self.primary.pair

    @property
    def state(self) -> State:
        """Where the pair is."""
        return self._state

    @property
    def active(self) -> Member | None:
        """The active member, or None while the pair is unknown (requests then get 503, docs/design.md §2)."""
        return self._active

    @property
    def monitoring(self) -> bool:
        """Whether OPTIONS monitoring is on (oos-check > 0)."""
        return self.settings.monitoring

    @property
    def split_brain(self) -> bool:
        """Whether both members act as primary (the active one is kept)."""
        return self._split

    def members(self) -> tuple[Member, Member]:
        """(primary, backup)."""
        return self.primary, self.backup

    def member_at(self, host: str, port: int) -> Member | None:
        """The member whose IP and port are exactly ``host``/``port`` (docs/design.md §2), if any."""
        key = (host_key(host), port)
        for member in (self.primary, self.backup):
            if self._key(member) == key:
                return member
        return None

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must be called next, or None (monitoring off, nothing pending)."""
        deadline = self._timer
        reask = self._reask
        if reask is not None and (deadline is None or reask < deadline):
            deadline = reask
        window = self._window
        if window is not None and (deadline is None or window < deadline):
            deadline = window
        split = self._split_deadline()
        if split is not None and (deadline is None or split < deadline):
            return split
        return deadline

    def status(self) -> PairStatus:
        """A snapshot for /status."""
        return PairStatus(
            pair=self.name,
            state=self._state.value,
            active=self._active,
            monitoring=self.monitoring,
            since=self._since,
            last_rtt=dict(self._last_rtt),
            split_brain=self._split,
            split_brain_since=self._split_since,
            counters=PairCounters(
                self.counters.probes_sent,
                self.counters.probes_answered,
                self.counters.probes_failed,
                self.counters.switchovers,
                self.counters.claims_rejected,
            ),
            next_deadline=self.next_deadline(),
            maintenance=tuple(sorted(self.maintenance)),
            mode=self._mode,
            answering=tuple(member.role for member in self.answering()),
            spread=tuple(member.role for member in self.spread()),
        )

    @property
    def pending(self) -> bool:
        """Whether :meth:`drain` has anything to return."""
        return bool(self._out)

    def drain(self) -> list[Output]:
        """The probes to send and the events to log, in the order they happened."""
        out, self._out = self._out, []
        return out

    def _partner_waiting(self) -> bool:
        """Active-active: the other member takes new Call-IDs and has not answered this period."""
        return self._partner_up and not self._partner_answered

    def _partner(self) -> Member:
        return self._other(self._require_active())

    def _in_maintenance(self, member: Member | None) -> bool:
        return member is not None and member.role in self.maintenance

    def _displaced_recently(self, member: Member, now: float) -> bool:
        displaced = self._displaced
        return (
            displaced is not None
            and displaced[0] == member
            and now - displaced[1] < self.settings.split_brain_window
        )

    def _split_deadline(self) -> float | None:
        if not self._split:
            return None
        return self._other_seen + self.settings.split_brain_window

    def _other(self, member: Member) -> Member:
        return self.backup if member == self.primary else self.primary

    def _require_active(self) -> Member:
        assert self._active is not None  # noqa: S101 - the table runs this only while a member is active
        return self._active

    @staticmethod
    def _key(member: Member) -> tuple[str, int]:
        return host_key(member.address.host), member.address.port
