"""sipha.ha: the pair monitor, sans-IO (docs/design.md §2, "the classic algorithm, exactly").

The current time goes in as ``now``; :class:`Probe` actions, events and the
next deadline come out.  The monitor sends nothing itself: the app turns each
probe into an OPTIONS (:func:`build_options`) in a client transaction and
reports its result back.  The state machine is the table in
:mod:`sipha.ha.machine`, one row per transition, each citing its source.

Where docs/design.md §2 is silent, these choices were made:

* **oos-check = 0** (monitoring off): no OPTIONS ever; the configured primary
  is active from the start (reason ``start``) until a request arrives from the
  backup, and a request from the member that is not active switches as usual.
  With no probe to decide, :meth:`PairMonitor.suspect` changes nothing.
* **First probe after the pair becomes unknown** goes out at once, to the
  member that was *not* active.  The classic algorithm says "alternatively to both
  servers": the failed member has just had its probe (a whole oos-check
  window), so alternation continues with the other one, which is also the
  likelier new primary.  Later probes alternate every oos-force.  The same
  holds for :meth:`PairMonitor.suspect` ("probing starts now").
* **A definitive negative for the active member's current probe** (a final
  answer outside alive-codes, a transport error, a transaction timeout) makes
  the pair unknown at once instead of at oos-check expiry: the member cannot
  answer that probe any more, so waiting only delays the failover.  A failed
  *older* probe of the active member says nothing about the current period
  and is ignored; an alive answer to any of its probes counts as its answer.
* **While unknown, every outstanding probe counts**, even one sent before the
  last change of target and even the probe whose period just expired: an
  alive answer that arrives just after oos-check expired makes the pair
  unknown (event), then active again on that member at once (event).  It
  proves the member is alive; ignoring it would only leave the pair without
  a member for one more oos-force period.  An answer at the very instant of
  expiry is late (every input first fires the timers due at ``now``).
  Probes are forgotten after :data:`~sipha.ha.settings.PROBE_LIFETIME`
  (twice Timer F) in case a result is never reported.
* **Becoming active restarts the oos-check period from that moment**, counted
  as answered: the classic algorithm "resets the oos-check timeout" (docs/design.md
  §2.1) when a server answers;
  the next probe goes out oos-check later.  The same after a switch by request.
* **Out of service (event 40001)**: once the pair, unknown, has probed both
  members and each stayed silent for its oos-force period (the second
  oos-force expiry after becoming unknown).  The routing view has no active
  member from the moment the pair is unknown (requests get 503 then, §2);
  40001 is the alarm, emitted once per outage, and :class:`PairRestored`
  ends it.
* **Split brain** (both members behave as primary): while a member is
  active, an alive OPTIONS answer from the other member, or a request from
  it that does not switch, sets the flag and reports :class:`SplitBrain`
  once.  A request from the other member does not switch when the flag is
  set, nor when that member was itself displaced by a request less than one
  window ago (two primaries sending requests would otherwise flip the pair on
  every request); the first request from the backup after a failover always
  switches, as §2 requires.  The active member is kept while it answers its
  OPTIONS.  The flag ends (reported once) when the other member answers
  outside alive-codes or fails a probe, when it has not acted as primary for
  one window (max(oos-check, oos-force)), or when the pair becomes unknown.
  An alive answer, or a request from the old primary, that was in flight
  across a switchover can raise the flag for one window: the monitor only
  probes the active member (the classic algorithm), so it cannot tell the two
  cases apart.
* **The takeover window** (``takeover-timeout`` > 0, the default 5 s): an
  active pair that loses its member does not go *unknown* with the classic
  slow alternation but *takeover*: both members are probed at once and every
  :data:`TAKEOVER_PROBE_INTERVAL`, the first alive answer makes its member
  active, and only the end of the window makes the pair out of service
  (40001).  The proxy core holds the pair's requests meanwhile.  With
  ``takeover-timeout`` = 0 the classic rows apply unchanged (:func:`table_for`).
* **A request from the member that is not active is a claim**, confirmed by
  a probe sent at once: its alive answer switches (reason ``request``), a
  negative one is reported (:class:`ClaimRejected`, rate-limited) and changes
  nothing.  One forged datagram cannot move the pair; with monitoring off
  the request switches at once, as the classic algorithm says (docs/design.md §2.1).
* **Worker processes share news** (:meth:`PairMonitor.peer_active`,
  :meth:`PairMonitor.peer_lost`): what one worker's monitor decides, the
  others take, unless they changed state after it (the latest wins).
* **Active-active pairs** (``mode = "active-active"``, docs/design.md §2.2): the
  state is the same (ACTIVE while at least one member answers); the member that is
  not active is probed every period too and, while it answers, takes new Call-IDs
  beside the active one (a flag beside the state, :data:`ACTIVE_ACTIVE_TABLE`).
  When the active member is lost while the other answers, the other becomes active
  at once (reason ``survivor``), nothing held; requests from members claim nothing.
* **Results are reported per probe**, not per member: ``probe_answered`` and
  ``probe_failed`` take the :class:`Probe` the monitor issued, so that the
  failure of an older probe is not taken for the current one.
"""

from sipha.ha.events import (
    EVENT_OWN_ADDRESS_NOT_FOUND,
    EVENT_PAIR_UNAVAILABLE,
    ActivationReason,
    ClaimRejected,
    HaEvent,
    MemberBecameActive,
    Output,
    PairEvent,
    PairOutOfService,
    PairRestored,
    PairUnknown,
    Probe,
    ProxyAddressNotFound,
    SplitBrain,
    SpreadChanged,
    SpreadReason,
    UnknownReason,
)
from sipha.ha.machine import (
    ACTIVE_ACTIVE_TABLE,
    ACTIVE_ACTIVE_TAKEOVER_TABLE,
    TABLE,
    TAKEOVER_ROWS,
    Input,
    Op,
    State,
    Transition,
    table_for,
)
from sipha.ha.member import Member
from sipha.ha.monitor import Monitor
from sipha.ha.options import build_options, check_own_address, member_uri
from sipha.ha.pair import PairMonitor
from sipha.ha.settings import (
    ACTIVE_ACTIVE,
    PAIR_MODES,
    PRIMARY_BACKUP,
    PROBE_LIFETIME,
    TAKEOVER_PROBE_INTERVAL,
    AliveCodes,
    MonitorSettings,
    PairMode,
)
from sipha.ha.status import PairCounters, PairStatus

__all__ = [
    "ACTIVE_ACTIVE",
    "ACTIVE_ACTIVE_TABLE",
    "ACTIVE_ACTIVE_TAKEOVER_TABLE",
    "EVENT_OWN_ADDRESS_NOT_FOUND",
    "EVENT_PAIR_UNAVAILABLE",
    "PAIR_MODES",
    "PRIMARY_BACKUP",
    "PROBE_LIFETIME",
    "TABLE",
    "TAKEOVER_PROBE_INTERVAL",
    "TAKEOVER_ROWS",
    "ActivationReason",
    "AliveCodes",
    "ClaimRejected",
    "HaEvent",
    "Input",
    "Member",
    "MemberBecameActive",
    "Monitor",
    "MonitorSettings",
    "Op",
    "Output",
    "PairCounters",
    "PairEvent",
    "PairMode",
    "PairMonitor",
    "PairOutOfService",
    "PairRestored",
    "PairStatus",
    "PairUnknown",
    "Probe",
    "ProxyAddressNotFound",
    "SplitBrain",
    "SpreadChanged",
    "SpreadReason",
    "State",
    "Transition",
    "UnknownReason",
    "build_options",
    "check_own_address",
    "member_uri",
    "table_for",
]
