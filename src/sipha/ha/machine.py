"""The pair state machine as a table: the OPTIONS algorithm of docs/design.md §2, one row per transition.

:class:`sipha.ha.pair.PairMonitor` turns what happens (a timer, an OPTIONS
result, a request from a member, a suspicion from the proxy core) into an
:class:`Input` relative to its current state, looks up ``(state, input)``
here and performs the row's operations in order.  A pair missing from the
table is an input the state ignores.  Each row quotes the text it implements:
docs/design.md §2 ("§2"), the classic algorithm as the product sipha replaces
documents it (docs/design.md §2.1, "classic"), its events (docs/design.md §4, "§4"),
or, where both are silent, the decision made here ("decision"), which the
package docstring of :mod:`sipha.ha` explains.

Split brain is a flag beside the state, not a state: while it is set the pair
is still active on the same member.  The rows that set or clear it say so.  So is,
in an active-active pair (docs/design.md §2.2), whether the member that is not
active answers too and takes new Call-IDs: :data:`ACTIVE_ACTIVE_TABLE` sets and clears it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

from sipha.ha.events import ActivationReason, SpreadReason, UnknownReason


class State(Enum):
    """Where a pair is."""

    INITIAL = "initial"
    """Before :meth:`PairMonitor.start`: the source of the entering transition."""
    UNKNOWN = "unknown"
    """No member is known to be active; alternating oos-force probes (§2)."""
    TAKEOVER = "takeover"
    """The active member was lost: requests are held while both members are probed every
    quarter of a second, until one answers or takeover-timeout ends the window (40001)."""
    OUT_OF_SERVICE = "out-of-service"
    """No member answered (a round of probes while unknown, or a whole takeover window):
    event 40001; probing goes on."""
    ACTIVE = "active"
    """One member is active; oos-check probes to it (none when monitoring is off)."""


class Input(Enum):
    """What can happen to a pair, as seen from its current state."""

    START = "start, monitoring on"
    START_UNMONITORED = "start, oos-check = 0"
    PERIOD_ANSWERED = "oos-check expired, the active member answered"
    PERIOD_SILENT = "oos-check expired, the active member answered none of the period's probes"
    PERIOD_UNANSWERED = "a quarter of oos-check passed and the active member has not answered this period yet"
    FORCE = "oos-force expired"
    FORCE_ROUND = "oos-force expired, both members probed and silent since the pair became unknown"
    ALIVE_ACTIVE = "alive answer from the active member"
    ALIVE_OTHER = "alive answer from a member that is not active"
    NOT_ALIVE_CYCLE = "the active member's current probe answered outside alive-codes"
    FAILED_CYCLE = "the active member's current probe failed"
    NEGATIVE_OTHER = "a probe of a member that is not active answered outside alive-codes or failed"
    NEGATIVE_STALE = "an older probe of the active member answered outside alive-codes or failed"
    REQUEST_ACTIVE = "request from the active member"
    REQUEST_OTHER = "request from a member that is not active, oos-check = 0"
    REQUEST_CLAIM = "request from a member that is not active: it claims to be primary (to confirm)"
    CLAIM_CONFIRMED = "alive answer from a member whose request claimed it is primary"
    CLAIM_REJECTED = "a member whose request claimed it is primary failed its probe or answered not alive"
    PEER_ACTIVE = "another worker of this instance found a member active (not the active one here)"
    PEER_LOST = "another worker of this instance lost the member active here"
    TAKEOVER_PROBE = "the takeover window's probe interval expired"
    TAKEOVER_END = "the takeover window ended and no member answered"
    REQUEST_OTHER_SPLIT = "request from the member that is not active, while both act as primary"
    SUSPECT_ACTIVE = "the proxy core suspects the active member"
    SUSPECT_OTHER = "the proxy core suspects a member that is not active"
    SUSPECT_UNMONITORED = "the proxy core suspects a member, oos-check = 0"
    SPLIT_STALE = "the non-active member has not acted as primary for one window"
    MAINTENANCE_ACTIVE = "the operator put the active member in maintenance"
    PERIOD_ANSWERED_MAINTENANCE = "oos-check expired, the active member (in maintenance) answered"
    HANDOVER_CONFIRMED = "alive answer from the other member while the active one is in maintenance"
    REQUEST_MAINTENANCE = "request from the member that is not active, which is in maintenance"
    LOST_TO_SURVIVOR = (
        "active-active: the active member was lost (silent period, failed probe, suspicion, another "
        "worker) while the other member answers"
    )
    PARTNER_SILENT = "active-active: oos-check expired, the other member answered none of the period's probes"
    PARTNER_FAILED = "active-active: a probe of this period to the other member was not answered alive"
    PARTNER_UNANSWERED = "active-active: a quarter of oos-check passed, the other member has not answered yet"
    SUSPECT_PARTNER = "active-active: the proxy core suspects the other member, which takes new Call-IDs"
    REQUEST_SPREAD = "active-active: a request from a member while the pair is active"
    MAINTENANCE_SPREAD = "active-active: the operator put a member in maintenance"
    AUTO_SPREAD = "active-active: the operator returned a member to the algorithm (auto)"


class Op(Enum):
    """An operation a transition performs, in the order listed."""

    PROBE_PRIMARY = "probe the configured primary now; next alternate probe after oos-force"
    PROBE_OTHER_FIRST = "probe the member that was not active now; next alternate probe after oos-force"
    PROBE_NEXT = "probe the next member in the alternation now; next one after oos-force"
    PROBE_ACTIVE = "probe the active member now; it must answer within oos-check"
    PROBE_AGAIN = "probe the active member again now (same period: an answer to any of its probes counts)"
    PROBE_CLAIMANT = "probe the member that sent the request now (one probe per probe interval)"
    START_TAKEOVER = "open the takeover window (takeover-timeout): probe both members now"
    PROBE_BOTH = "probe both members now; again after the takeover probe interval"
    MARK_ANSWERED = "the active member answered in this oos-check period"
    ACTIVATE_PRIMARY = "the configured primary becomes active"
    ACTIVATE_SOURCE = "the member that answered or sent the request becomes active"
    WAIT_PERIOD = "restart the oos-check period now, counted as answered (next probe after oos-check)"
    EMIT_UNKNOWN = "report PairUnknown"
    EMIT_OUT_OF_SERVICE = "report PairOutOfService (event 40001)"
    EMIT_RESTORED = "report PairRestored"
    EMIT_CLAIM_REJECTED = "report ClaimRejected (a forged request, or a backup not in primary mode)"
    SPLIT_EVIDENCE = "the non-active member acts as primary: set the split-brain flag (report once)"
    SPLIT_END = "clear the split-brain flag (report once, if it was set)"
    PROBE_HANDOVER = "probe the member that is not active now, to hand the pair over to it (maintenance)"
    PROBE_PARTNER = "active-active: probe the other member now; an alive answer keeps it in the spread"
    PARTNER_AGAIN = "active-active: probe the other member again now (same period: any answer counts)"
    PARTNER_UP = "active-active: the other member answers: it takes new Call-IDs (reported if it did not)"
    PARTNER_DOWN = "active-active: the other member takes no new Call-IDs (reported if it did)"
    PARTNER_CLEAR = "active-active: the active member changed: the other is out of the spread till it answers"
    SPREAD_REPORT = "active-active: report the members new Call-IDs go to (maintenance changed them)"


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of the table."""

    target: State
    ops: tuple[Op, ...]
    source: str
    """The text that mandates this transition."""
    activation: ActivationReason | None = None
    """The reason reported by ``ACTIVATE_*`` operations."""
    unknown: UnknownReason | None = None
    """The reason reported by ``EMIT_UNKNOWN``."""
    spread: SpreadReason | None = None
    """The reason reported by ``PARTNER_UP``, ``PARTNER_DOWN`` and ``SPREAD_REPORT``."""


_S = State
_I = Input
_O = Op

_START = "§2: At start the pair is unknown. The first OPTIONS goes to the member configured as primary."
_UNMONITORED = (
    "§2: oos-check 0 turns OPTIONS monitoring off; decision: with no OPTIONS to find the active "
    "member, the configured primary is taken as active until a request from the backup arrives."
)
_PERIOD = (
    "classic: If this primary SIP Server responds during the configured oos-check timeout, then SIP Proxy "
    "waits for this timeout to expire before sending the next OPTIONS message, after which SIP Proxy "
    "resets the oos-check timeout."
)
_SILENT = (
    "§2: If X does not answer before oos-check expires, the pair becomes unknown. classic: SIP Proxy "
    "activates the oos-force timeout and starts sending OPTIONS messages alternatively to both servers. "
    "Decision: 'does not answer' is no alive answer to any of the period's probes (the first one, its "
    "retransmissions, and the ones sent at each quarter of the period while it was unanswered: one "
    "lost datagram is not a dead member). The first alternate probe goes out now, to the member that "
    "was not active (X has just had its probes)."
)
_ANSWERED = "§2: if X answers within oos-check, wait for oos-check to expire, then send the next one."
_UNANSWERED = (
    "classic: If the SIP Server does not respond before the timeout expires, SIP Proxy activates the "
    "oos-force timeout. Decision (§2, loss is not death): a member that does not respond is one that "
    "answers none of the OPTIONS it is sent in the period, not one whose single OPTIONS (or answer) "
    "was lost. The period's probe is retransmitted per Timer E (RFC 3261 §17.1.2.2: at T1, 3*T1, ...), "
    "which fits once in a period of 1 s; so while it is unanswered the member is asked again, on a new "
    "transaction, at each quarter of the period. The timeout itself is unchanged: a dead member is "
    "still found silent at oos-check."
)
_NOT_ALIVE = (
    "§2: What counts as an answer: a final response whose code is in alive-codes. A backup in backup "
    "mode ... answers with a code outside alive-codes. Decision: that final answer settles the period "
    "at once (X will not answer it again), so the pair becomes unknown now rather than at expiry."
)
_FAILED = (
    "task: a transport error or the transaction timing out counts as no answer. Decision: like a "
    "non-alive answer it settles the period, so the pair becomes unknown now."
)
_NEGATIVE_OTHER = (
    "§2: A backup in backup mode does not answer, or answers with a code outside alive-codes. "
    "No switch; it no longer acts as primary, so a split brain is over."
)
_NEGATIVE_UNKNOWN = (
    "§2: While unknown: send OPTIONS alternately ... until one answers. A non-answer changes nothing: "
    "the alternation goes on at its own pace (no faster probing on errors)."
)
_STALE = "decision: the result of an older probe of X says nothing about the current oos-check period."
_FORCE = (
    "classic: starts sending OPTIONS messages alternatively to both servers in the HA pair, resetting the "
    "time between each attempt, until one of them begins to respond."
)
_ROUND = (
    "§4: A pair with no answering member is out of service and not used for calls, while "
    "the pinging continues. Decision: out of service once both members were probed while unknown and "
    "each stayed silent for oos-force; event 40001 then."
)
_FOUND_BY_OPTIONS = (
    "§2: While unknown: ... until one answers; that member becomes active and the oos-check cycle "
    "restarts on it. classic: When one of the SIP Servers responds to the OPTIONS message, SIP Proxy "
    "resets the oos-check timeout."
)
_RESTORED_BY_OPTIONS = _FOUND_BY_OPTIONS + " Decision: an out-of-service pair reports it is restored."
_BY_REQUEST = (
    "§2: A request that arrives from the member that is not active makes that member active at once "
    "(the backup has taken over). classic: SIP Proxy receives a SIP request from the backup SIP Server."
)
_CLAIM = (
    _BY_REQUEST + " Decision: 'at once' is one OPTIONS round trip: the member is probed now and "
    "becomes active when it answers alive, so that one forged UDP datagram with the backup's address "
    "cannot move the pair to a member in backup mode (docs: forged takeover requests)."
)
_CLAIM_CONFIRMED = (
    _BY_REQUEST + " Decision: the member that sent it has now answered an OPTIONS alive: it is "
    "primary, the request was its own."
)
_CLAIM_RESTORED = _CLAIM_CONFIRMED + " An out-of-service pair reports it is restored."
_CLAIM_REJECTED = (
    "§2: A backup in backup mode does not answer, or answers with a code outside alive-codes. "
    "Decision: a request that seemed to come from it is not followed (forged, or sent in backup "
    "mode); reported, and the split brain (if any) is over."
)
_TAKEOVER = (
    "§2: when a pair that had an active member loses it, its requests are held (and the other "
    "member probed at a fast cadence) for up to takeover-timeout seconds and sent to the first member "
    "that answers. Decision: both members are probed (a suspected member is re-probed before the pair "
    "can go out of service: one unanswered request is not an outage)."
)
_TAKEOVER_PROBE = (
    "§2: the other member probed at a fast cadence. Decision: both members, every quarter of a "
    "second: an ICMP error or a refused connection from a member still starting up costs a quarter "
    "of a second, not an oos-force period."
)
_TAKEOVER_FOUND = (
    "§2: ... sent to the first member that answers. §2: that member becomes active and the "
    "oos-check cycle restarts on it."
)
_TAKEOVER_END = (
    "§2: 40001 and the 503s come when that window ends with no member. §4: A pair "
    "with no answering member is out of service ..., while the pinging continues (every oos-force, "
    "alternating)."
)
_PEER = (
    "DESIGN §5: a sipha instance with workers = N is still one instance: one pair state, and a "
    "switch seen by one worker holds for all. Decision: the news carries when it happened; a worker "
    "takes it unless it knows of a later change of its own."
)
_PEER_RESTORED = _PEER + " An out-of-service pair reports it is restored."
_PEER_LOST = _PEER + " The worker that lost the member re-probes the pair; so does this one."
_TAKEOVER_QUIET = "decision: a negative probe result or a suspicion changes nothing; fast probing goes on."
_REQUEST_ACTIVE = "§2: only a request from the member that is not active switches; nothing else does."
_SPLIT_ANSWER = (
    "task: split brain (both members answer OPTIONS with alive codes): keep the current active member "
    "while it keeps answering. §2: only a request switches an active pair."
)
_SPLIT_REQUEST = (
    "task: split brain (both send requests): keep the current active member while it keeps answering. "
    "Decision: a request from the member displaced by a request less than one window ago, or any "
    "request from the other member while the flag is set, does not switch back."
)
_SUSPECT = (
    "docs/design.md §5 failover-timeout: without any response from the active member ... the pair is "
    "re-probed at once. Decision: unknown now, first probe now to the member that was not active."
)
_SUSPECT_IGNORED = "decision: only the active member can be suspected; while unknown, probing already runs."
_MAINTENANCE = (
    "docs/design.md §2, maintenance: new transactions stop going to a member in maintenance; the "
    "other member takes them if it answers. Decision: the active member keeps them until the "
    "other answers its probe alive (a pair is never left without a member that answers)."
)
_MAINTENANCE_RETRY = (
    _PERIOD + " Decision (maintenance): while the active member is in maintenance, the other "
    "member is asked again once per period, so the pair moves as soon as it answers alive."
)
_REQUEST_MAINTENANCE = (
    "docs/design.md §2, maintenance: a member in maintenance gets no new transactions; decision: "
    "its requests (a restart, a test call) do not claim the pair back while the other is active."
)
_HANDOVER = (
    "docs/design.md §2, maintenance: the other member answered alive while the active one is in "
    "maintenance: it takes the new transactions; those under way on the first one finish there."
)
_SUSPECT_UNMONITORED = (
    "§2: 0 turns OPTIONS monitoring off. Decision: no probe can decide, so a suspicion changes nothing; "
    "only a request from the other member switches."
)
_SPLIT_STALE = (
    "task: emit an event once when it starts and once when it ends. Decision: it ends when the "
    "non-active member has not answered alive nor sent a request for max(oos-check, oos-force)."
)

TABLE: Final[Mapping[tuple[State, Input], Transition]] = {
    # ------------------------------------------------------------------ start
    (_S.INITIAL, _I.START): Transition(
        _S.UNKNOWN, (_O.EMIT_UNKNOWN, _O.PROBE_PRIMARY), _START, unknown="start"
    ),
    (_S.INITIAL, _I.START_UNMONITORED): Transition(
        _S.ACTIVE, (_O.ACTIVATE_PRIMARY,), _UNMONITORED, activation="start"
    ),
    # ------------------------------------------------------------------ active: the oos-check cycle
    (_S.ACTIVE, _I.PERIOD_ANSWERED): Transition(_S.ACTIVE, (_O.PROBE_ACTIVE,), _PERIOD),
    (_S.ACTIVE, _I.ALIVE_ACTIVE): Transition(_S.ACTIVE, (_O.MARK_ANSWERED,), _ANSWERED),
    (_S.ACTIVE, _I.PERIOD_UNANSWERED): Transition(_S.ACTIVE, (_O.PROBE_AGAIN,), _UNANSWERED),
    (_S.ACTIVE, _I.PERIOD_SILENT): Transition(
        _S.UNKNOWN, (_O.SPLIT_END, _O.EMIT_UNKNOWN, _O.PROBE_OTHER_FIRST), _SILENT, unknown="no-answer"
    ),
    (_S.ACTIVE, _I.NOT_ALIVE_CYCLE): Transition(
        _S.UNKNOWN, (_O.SPLIT_END, _O.EMIT_UNKNOWN, _O.PROBE_OTHER_FIRST), _NOT_ALIVE, unknown="not-alive"
    ),
    (_S.ACTIVE, _I.FAILED_CYCLE): Transition(
        _S.UNKNOWN, (_O.SPLIT_END, _O.EMIT_UNKNOWN, _O.PROBE_OTHER_FIRST), _FAILED, unknown="probe-failed"
    ),
    (_S.ACTIVE, _I.NEGATIVE_STALE): Transition(_S.ACTIVE, (), _STALE),
    (_S.ACTIVE, _I.SUSPECT_ACTIVE): Transition(
        _S.UNKNOWN, (_O.SPLIT_END, _O.EMIT_UNKNOWN, _O.PROBE_OTHER_FIRST), _SUSPECT, unknown="suspect"
    ),
    (_S.ACTIVE, _I.SUSPECT_OTHER): Transition(_S.ACTIVE, (), _SUSPECT_IGNORED),
    (_S.ACTIVE, _I.SUSPECT_UNMONITORED): Transition(_S.ACTIVE, (), _SUSPECT_UNMONITORED),
    # ------------------------------------------------------------------ active: the other member
    (_S.ACTIVE, _I.REQUEST_ACTIVE): Transition(_S.ACTIVE, (), _REQUEST_ACTIVE),
    (_S.ACTIVE, _I.REQUEST_OTHER): Transition(
        _S.ACTIVE,
        (_O.ACTIVATE_SOURCE, _O.WAIT_PERIOD),
        _BY_REQUEST + " Decision: with oos-check = 0 no probe can confirm it: the rule as it stands.",
        activation="request",
    ),
    (_S.ACTIVE, _I.REQUEST_CLAIM): Transition(_S.ACTIVE, (_O.PROBE_CLAIMANT,), _CLAIM),
    (_S.ACTIVE, _I.CLAIM_CONFIRMED): Transition(
        _S.ACTIVE, (_O.ACTIVATE_SOURCE, _O.WAIT_PERIOD), _CLAIM_CONFIRMED, activation="request"
    ),
    (_S.ACTIVE, _I.CLAIM_REJECTED): Transition(
        _S.ACTIVE, (_O.SPLIT_END, _O.EMIT_CLAIM_REJECTED), _CLAIM_REJECTED
    ),
    (_S.ACTIVE, _I.PEER_ACTIVE): Transition(
        _S.ACTIVE, (_O.ACTIVATE_SOURCE, _O.WAIT_PERIOD), _PEER, activation="worker"
    ),
    (_S.ACTIVE, _I.PEER_LOST): Transition(
        _S.UNKNOWN, (_O.SPLIT_END, _O.EMIT_UNKNOWN, _O.PROBE_OTHER_FIRST), _PEER_LOST, unknown="worker"
    ),
    (_S.ACTIVE, _I.REQUEST_OTHER_SPLIT): Transition(_S.ACTIVE, (_O.SPLIT_EVIDENCE,), _SPLIT_REQUEST),
    (_S.ACTIVE, _I.ALIVE_OTHER): Transition(_S.ACTIVE, (_O.SPLIT_EVIDENCE,), _SPLIT_ANSWER),
    (_S.ACTIVE, _I.NEGATIVE_OTHER): Transition(_S.ACTIVE, (_O.SPLIT_END,), _NEGATIVE_OTHER),
    (_S.ACTIVE, _I.SPLIT_STALE): Transition(_S.ACTIVE, (_O.SPLIT_END,), _SPLIT_STALE),
    # ------------------------------------------------------------------ active: maintenance
    (_S.ACTIVE, _I.MAINTENANCE_ACTIVE): Transition(_S.ACTIVE, (_O.PROBE_HANDOVER,), _MAINTENANCE),
    (_S.ACTIVE, _I.PERIOD_ANSWERED_MAINTENANCE): Transition(
        _S.ACTIVE, (_O.PROBE_ACTIVE, _O.PROBE_HANDOVER), _MAINTENANCE_RETRY
    ),
    (_S.ACTIVE, _I.REQUEST_MAINTENANCE): Transition(_S.ACTIVE, (), _REQUEST_MAINTENANCE),
    (_S.ACTIVE, _I.HANDOVER_CONFIRMED): Transition(
        _S.ACTIVE, (_O.SPLIT_END, _O.ACTIVATE_SOURCE, _O.WAIT_PERIOD), _HANDOVER, activation="maintenance"
    ),
    # ------------------------------------------------------------------ unknown: the oos-force alternation
    (_S.UNKNOWN, _I.FORCE): Transition(_S.UNKNOWN, (_O.PROBE_NEXT,), _FORCE),
    (_S.UNKNOWN, _I.FORCE_ROUND): Transition(
        _S.OUT_OF_SERVICE, (_O.EMIT_OUT_OF_SERVICE, _O.PROBE_NEXT), _ROUND
    ),
    (_S.UNKNOWN, _I.ALIVE_OTHER): Transition(
        _S.ACTIVE, (_O.ACTIVATE_SOURCE, _O.WAIT_PERIOD), _FOUND_BY_OPTIONS, activation="options"
    ),
    (_S.UNKNOWN, _I.REQUEST_CLAIM): Transition(_S.UNKNOWN, (_O.PROBE_CLAIMANT,), _CLAIM),
    (_S.UNKNOWN, _I.CLAIM_CONFIRMED): Transition(
        _S.ACTIVE, (_O.ACTIVATE_SOURCE, _O.WAIT_PERIOD), _CLAIM_CONFIRMED, activation="request"
    ),
    (_S.UNKNOWN, _I.PEER_ACTIVE): Transition(
        _S.ACTIVE, (_O.ACTIVATE_SOURCE, _O.WAIT_PERIOD), _PEER, activation="worker"
    ),
    (_S.UNKNOWN, _I.NEGATIVE_OTHER): Transition(_S.UNKNOWN, (), _NEGATIVE_UNKNOWN),
    (_S.UNKNOWN, _I.SUSPECT_OTHER): Transition(_S.UNKNOWN, (), _SUSPECT_IGNORED),
    # ------------------------------------------------------------------ out of service: still probing
    (_S.OUT_OF_SERVICE, _I.FORCE): Transition(_S.OUT_OF_SERVICE, (_O.PROBE_NEXT,), _ROUND),
    (_S.OUT_OF_SERVICE, _I.ALIVE_OTHER): Transition(
        _S.ACTIVE,
        (_O.ACTIVATE_SOURCE, _O.EMIT_RESTORED, _O.WAIT_PERIOD),
        _RESTORED_BY_OPTIONS,
        activation="options",
    ),
    (_S.OUT_OF_SERVICE, _I.REQUEST_CLAIM): Transition(_S.OUT_OF_SERVICE, (_O.PROBE_CLAIMANT,), _CLAIM),
    (_S.OUT_OF_SERVICE, _I.CLAIM_CONFIRMED): Transition(
        _S.ACTIVE,
        (_O.ACTIVATE_SOURCE, _O.EMIT_RESTORED, _O.WAIT_PERIOD),
        _CLAIM_RESTORED,
        activation="request",
    ),
    (_S.OUT_OF_SERVICE, _I.PEER_ACTIVE): Transition(
        _S.ACTIVE,
        (_O.ACTIVATE_SOURCE, _O.EMIT_RESTORED, _O.WAIT_PERIOD),
        _PEER_RESTORED,
        activation="worker",
    ),
    (_S.OUT_OF_SERVICE, _I.NEGATIVE_OTHER): Transition(_S.OUT_OF_SERVICE, (), _NEGATIVE_UNKNOWN),
    (_S.OUT_OF_SERVICE, _I.SUSPECT_OTHER): Transition(_S.OUT_OF_SERVICE, (), _SUSPECT_IGNORED),
}

_LOST: Final = (_I.PERIOD_SILENT, _I.NOT_ALIVE_CYCLE, _I.FAILED_CYCLE, _I.SUSPECT_ACTIVE, _I.PEER_LOST)
"""The inputs by which an active pair loses its member."""

TAKEOVER_ROWS: Final[Mapping[tuple[State, Input], Transition]] = {
    # ------------------------------------------------------------------ losing the active member
    **{
        (_S.ACTIVE, lost): Transition(
            _S.TAKEOVER,
            (_O.SPLIT_END, _O.EMIT_UNKNOWN, _O.START_TAKEOVER),
            TABLE[_S.ACTIVE, lost].source + " " + _TAKEOVER,
            unknown=TABLE[_S.ACTIVE, lost].unknown,
        )
        for lost in _LOST
    },
    # ------------------------------------------------------------------ the takeover window
    (_S.TAKEOVER, _I.TAKEOVER_PROBE): Transition(_S.TAKEOVER, (_O.PROBE_BOTH,), _TAKEOVER_PROBE),
    (_S.TAKEOVER, _I.TAKEOVER_END): Transition(
        _S.OUT_OF_SERVICE, (_O.EMIT_OUT_OF_SERVICE, _O.PROBE_NEXT), _TAKEOVER_END
    ),
    (_S.TAKEOVER, _I.ALIVE_OTHER): Transition(
        _S.ACTIVE, (_O.ACTIVATE_SOURCE, _O.WAIT_PERIOD), _TAKEOVER_FOUND, activation="options"
    ),
    (_S.TAKEOVER, _I.REQUEST_CLAIM): Transition(_S.TAKEOVER, (_O.PROBE_CLAIMANT,), _CLAIM),
    (_S.TAKEOVER, _I.CLAIM_CONFIRMED): Transition(
        _S.ACTIVE, (_O.ACTIVATE_SOURCE, _O.WAIT_PERIOD), _CLAIM_CONFIRMED, activation="request"
    ),
    (_S.TAKEOVER, _I.PEER_ACTIVE): Transition(
        _S.ACTIVE, (_O.ACTIVATE_SOURCE, _O.WAIT_PERIOD), _PEER, activation="worker"
    ),
    (_S.TAKEOVER, _I.NEGATIVE_OTHER): Transition(_S.TAKEOVER, (), _TAKEOVER_QUIET),
    (_S.TAKEOVER, _I.SUSPECT_OTHER): Transition(_S.TAKEOVER, (), _TAKEOVER_QUIET),
}
"""With takeover-timeout > 0 these rows replace (ACTIVE, loss) and add the TAKEOVER state."""


_AA = "docs/design.md §2.2 (active-active pairs): "
_AA_PERIOD = (
    _PERIOD + " " + _AA + "both members serve at once, so both are asked every period: the other "
    "member's alive answer keeps it in the spread of new Call-IDs."
)
_AA_PARTNER_ALIVE = (
    _AA + "a member that answers OPTIONS alive takes new Call-IDs; only the active member's loss "
    "changes the state, the other one is a flag beside it."
)
_AA_PARTNER_SILENT = (
    _AA + "the other member is out of the spread when it misses a period, as the active member "
    "would be (§2: no alive answer to any of the period's probes, retransmissions and re-asks)."
)
_AA_PARTNER_FAILED = _NOT_ALIVE + " " + _AA + "the same for the other member: out of the spread now."
_AA_PARTNER_AGAIN = _UNANSWERED + " " + _AA + "the other member is asked again on the same schedule."
_AA_SUSPECT = (
    _SUSPECT + " " + _AA + "the other member takes requests too: suspected, it leaves the spread at "
    "once (its requests go to the active member, which answers) and is probed now; an alive answer "
    "brings it back."
)
_AA_SURVIVOR = (
    _TAKEOVER + " " + _AA + "the other member answers already: it becomes active at once, nothing is "
    "held (no takeover window); the lost member is probed now and takes new Call-IDs again when it "
    "answers."
)
_AA_REQUEST = (
    _AA + "both members are primary: a request from either one claims nothing; it still says which "
    "pair it is from (docs/design.md §3 rule 3)."
)
_AA_ACTIVATED = " " + _AA + "the other member is out of the spread until it answers; it is probed now."
_AA_MAINTENANCE = (
    _MAINTENANCE + " " + _AA + "the spread leaves the member in maintenance out once the other "
    "answers (never a pair without a member that answers); no state changes."
)
_AA_UNMONITORED = _UNMONITORED + " " + _AA + "without OPTIONS both members are taken as answering."

_ACTIVATIONS: Final = (_O.ACTIVATE_SOURCE, _O.ACTIVATE_PRIMARY)


def _active_active_rows(
    base: Mapping[tuple[State, Input], Transition],
) -> dict[tuple[State, Input], Transition]:
    """The rows an active-active pair puts over ``base`` (docs/design.md §2.2)."""
    rows: dict[tuple[State, Input], Transition] = {
        key: Transition(
            row.target,
            (*row.ops, _O.PARTNER_CLEAR, _O.PROBE_PARTNER),
            row.source + _AA_ACTIVATED,
            activation=row.activation,
            unknown=row.unknown,
        )
        for key, row in base.items()
        if any(op in _ACTIVATIONS for op in row.ops) and key[0] is not _S.INITIAL
    }
    rows.update(
        {
            (_S.INITIAL, _I.START_UNMONITORED): Transition(
                _S.ACTIVE,
                (_O.ACTIVATE_PRIMARY, _O.PARTNER_UP),
                _AA_UNMONITORED,
                activation="start",
                spread="start",
            ),
            (_S.ACTIVE, _I.PERIOD_ANSWERED): Transition(
                _S.ACTIVE, (_O.PROBE_ACTIVE, _O.PROBE_PARTNER), _AA_PERIOD
            ),
            (_S.ACTIVE, _I.PARTNER_UNANSWERED): Transition(_S.ACTIVE, (_O.PARTNER_AGAIN,), _AA_PARTNER_AGAIN),
            (_S.ACTIVE, _I.PARTNER_SILENT): Transition(
                _S.ACTIVE, (_O.PARTNER_DOWN,), _AA_PARTNER_SILENT, spread="silent"
            ),
            (_S.ACTIVE, _I.PARTNER_FAILED): Transition(
                _S.ACTIVE, (_O.PARTNER_DOWN,), _AA_PARTNER_FAILED, spread="failed"
            ),
            (_S.ACTIVE, _I.ALIVE_OTHER): Transition(
                _S.ACTIVE, (_O.PARTNER_UP,), _AA_PARTNER_ALIVE, spread="answered"
            ),
            (_S.ACTIVE, _I.CLAIM_CONFIRMED): Transition(
                _S.ACTIVE, (_O.PARTNER_UP,), _AA_PARTNER_ALIVE, spread="answered"
            ),
            (_S.ACTIVE, _I.CLAIM_REJECTED): Transition(_S.ACTIVE, (), _AA_REQUEST),
            (_S.ACTIVE, _I.NEGATIVE_OTHER): Transition(_S.ACTIVE, (), _STALE),
            (_S.ACTIVE, _I.SUSPECT_PARTNER): Transition(
                _S.ACTIVE, (_O.PARTNER_DOWN, _O.PROBE_PARTNER), _AA_SUSPECT, spread="suspect"
            ),
            (_S.ACTIVE, _I.SUSPECT_OTHER): Transition(_S.ACTIVE, (), _SUSPECT_IGNORED),
            (_S.ACTIVE, _I.REQUEST_SPREAD): Transition(_S.ACTIVE, (), _AA_REQUEST),
            (_S.ACTIVE, _I.LOST_TO_SURVIVOR): Transition(
                _S.ACTIVE,
                (_O.ACTIVATE_SOURCE, _O.WAIT_PERIOD, _O.PARTNER_CLEAR, _O.PROBE_PARTNER),
                _AA_SURVIVOR,
                activation="survivor",
            ),
            (_S.ACTIVE, _I.MAINTENANCE_SPREAD): Transition(
                _S.ACTIVE, (_O.SPREAD_REPORT,), _AA_MAINTENANCE, spread="maintenance"
            ),
            (_S.ACTIVE, _I.AUTO_SPREAD): Transition(
                _S.ACTIVE, (_O.SPREAD_REPORT,), _AA_MAINTENANCE, spread="auto"
            ),
        }
    )
    return rows


NOT_ACTIVE_ACTIVE: Final = frozenset(
    (
        _I.REQUEST_ACTIVE,
        _I.REQUEST_OTHER,
        _I.REQUEST_OTHER_SPLIT,
        _I.REQUEST_MAINTENANCE,
        _I.MAINTENANCE_ACTIVE,
        _I.PERIOD_ANSWERED_MAINTENANCE,
        _I.HANDOVER_CONFIRMED,
        _I.SPLIT_STALE,
    )
)
"""Inputs an active pair never gets in active-active mode: requests are REQUEST_SPREAD, maintenance
moves the spread not the pair, and nothing is a split brain (both members are primary)."""


def _active_active(base: Mapping[tuple[State, Input], Transition]) -> dict[tuple[State, Input], Transition]:
    rows = {**base, **_active_active_rows(base)}
    return {
        (state, event): row
        for (state, event), row in rows.items()
        if state is not _S.ACTIVE or event not in NOT_ACTIVE_ACTIVE
    }


ACTIVE_ACTIVE_TABLE: Final = _active_active(TABLE)
"""An active-active pair's table (docs/design.md §2.2): :data:`TABLE` with its rows over it."""
ACTIVE_ACTIVE_TAKEOVER_TABLE: Final = _active_active({**TABLE, **TAKEOVER_ROWS})
"""The same over the takeover window's rows (takeover-timeout > 0)."""


def table_for(*, takeover: bool, active_active: bool = False) -> Mapping[tuple[State, Input], Transition]:
    """The classic table, or with ``takeover`` (takeover-timeout > 0) the takeover window's rows over it.

    With ``active_active``, the table of docs/design.md §2.2 over either.
    """
    if active_active:
        return ACTIVE_ACTIVE_TAKEOVER_TABLE if takeover else ACTIVE_ACTIVE_TABLE
    return {**TABLE, **TAKEOVER_ROWS} if takeover else TABLE
