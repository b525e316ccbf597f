"""Business continuity: a pair out of service lends its new endpoint requests to its fallback.

``[[pair]] fallback = "<pair>"`` (docs/deployment.md).  Once a pair is out of service (event
40001: neither member answers, docs/design.md §2), the new out-of-dialog requests routed to it
by docs/design.md §3 rule 4 go to the active member of its fallback pair (or of that pair's
fallback, and so on) instead of getting 503; while the pair is only being re-probed (unknown,
takeover window) they stay held as before, and once a member of it answers again they come
back to it.  Requests that name a member of the pair (rule 2: in-dialog requests to its
Contact) never move: the fallback pair's servers do not know its dialogs
(:func:`sipha.proxy.routing.may_fall_back`).
"""

from __future__ import annotations

from typing import Final

from sipha.ha import Monitor, State
from sipha.ha.fallback import FallbackRouted
from sipha.ha.member import Member
from sipha.proxy.routing import Answer, Forward, spread_member
from sipha.proxy.view import ConfiguredView

LOG_EVERY: Final = 10.0
"""s: at most one log line per pair out of service about the requests sent to its fallback."""


class Fallbacks:
    """Picks the fallback of a pair out of service, counts and logs what goes there."""

    def __init__(self) -> None:
        self._logged: dict[str, float] = {}
        """When a line was last logged per pair out of service."""
        self._unlogged: dict[str, int] = {}
        """Requests sent to the fallback since that line, per pair."""

    def route(
        self, decision: Answer, view: ConfiguredView, monitor: Monitor | None, now: float
    ) -> tuple[Forward, list[FallbackRouted]] | None:
        """Where ``decision`` (a 503 for a pair without an active member) goes instead, if anywhere.

        None unless the request may fall back, its pair is out of service (40001) and a pair of
        its fallback chain has an active member.  Otherwise the forward to that member and the
        log line due (none within :data:`LOG_EVERY` of the last one for this pair).
        """
        pair = decision.pair
        if not decision.may_fall_back or pair is None or monitor is None or pair not in monitor.pairs:
            return None
        if monitor.pairs[pair].state is not State.OUT_OF_SERVICE:
            return None
        seen = {pair}
        fallback = view.fallback_of(pair)
        while fallback is not None and fallback not in seen:  # no cycle is configured: a bound all the same
            seen.add(fallback)
            active = view.active_member(fallback)
            if active is not None:
                spread = view.spread(fallback)  # an active-active fallback: by Call-ID (docs/design.md §2.2)
                if spread and decision.call_id:
                    active = spread_member(decision.call_id, spread)
                return Forward(active.address, fallback), self._note(pair, fallback, active, now)
            fallback = view.fallback_of(fallback)
        return None

    def _note(self, pair: str, fallback: str, member: Member, now: float) -> list[FallbackRouted]:
        count = self._unlogged.get(pair, 0) + 1
        last = self._logged.get(pair)
        if last is not None and now < last + LOG_EVERY:
            self._unlogged[pair] = count
            return []
        self._logged[pair] = now
        self._unlogged[pair] = 0
        return [FallbackRouted(pair, now, fallback, member, count)]
