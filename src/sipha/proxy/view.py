"""The routing view built from the configuration (docs/design.md §3, §5).

:class:`ConfiguredView` knows the proxy's own addresses and the pairs.  Which
member of a pair is active comes from an ``active`` table that the pair
monitor keeps up to date; until a monitor runs, it holds the configured
primary of every pair (a static next hop).  An active-active pair (docs/design.md
§2.2) also has the members that answer and those its new Call-IDs spread over
(both until a monitor runs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sipha.ha.member import Member
from sipha.ha.settings import ACTIVE_ACTIVE, PRIMARY_BACKUP, PairMode
from sipha.sip import Request, SipUri
from sipha.sip.address import SIP_PORT, Address, host_key


@dataclass(frozen=True, slots=True)
class PairSpec:
    """A pair as the configuration states it."""

    name: str
    primary: Address
    backup: Address
    serving: bool = False
    domains: frozenset[str] = frozenset()
    fallback: str | None = None
    """The pair whose active member gets this pair's new endpoint requests while it is out of
    service (event 40001; docs/deployment.md, business continuity)."""
    mode: PairMode = PRIMARY_BACKUP
    """``active-active``: both members serve, new Call-IDs spread over them (docs/design.md §2.2)."""


@dataclass(slots=True)
class ConfiguredView:
    """A :class:`sipha.proxy.routing.RoutingView` over configured pairs."""

    own: frozenset[tuple[str, int | None]]
    """Host/port pairs naming this proxy; a port of None matches any port."""
    pairs: dict[str, PairSpec]
    active: dict[str, Member | None] = field(default_factory=dict)
    answering: dict[str, tuple[Member, ...]] = field(default_factory=dict)
    """Per active-active pair: the members that answer (rule 2 reaches them), configured order."""
    spreads: dict[str, tuple[Member, ...]] = field(default_factory=dict)
    """Per active-active pair: the members new Call-IDs go to (rule 4, :func:`spread_member`)."""
    _members: dict[tuple[str, int], Member] = field(default_factory=dict)

    @classmethod
    def build(cls, own: Iterable[tuple[str, int | None]], pairs: Iterable[PairSpec]) -> ConfiguredView:
        """A view whose active members are the configured primaries."""
        view = cls(frozenset((host_key(host), port) for host, port in own), {p.name: p for p in pairs})
        for pair in view.pairs.values():
            for role, address in (("primary", pair.primary), ("backup", pair.backup)):
                member = Member(pair.name, role, address)
                view._members[(host_key(address.host), address.port)] = member
            view.active[pair.name] = view._members[(host_key(pair.primary.host), pair.primary.port)]
            if pair.mode == ACTIVE_ACTIVE:
                view.answering[pair.name] = view.spreads[pair.name] = view.members(pair.name)
        return view

    def members(self, pair: str) -> tuple[Member, Member]:
        """The (primary, backup) members of ``pair``."""
        spec = self.pairs[pair]
        return (
            self._members[(host_key(spec.primary.host), spec.primary.port)],
            self._members[(host_key(spec.backup.host), spec.backup.port)],
        )

    def is_own(self, host: str, port: int | None) -> bool:
        """Whether ``host[:port]`` names this proxy."""
        host = host_key(host)
        return (host, None) in self.own or (host, port or SIP_PORT) in self.own

    def member_at(self, host: str, port: int | None) -> Member | None:
        """The member listening at ``host:port`` (default port 5060)."""
        return self._members.get((host_key(host), port or SIP_PORT))

    def active_member(self, pair: str) -> Member | None:
        """The active member of ``pair``, or None."""
        return self.active.get(pair)

    def spread(self, pair: str) -> tuple[Member, ...]:
        """Active-active: the members new Call-IDs of ``pair`` go to; () for a primary-backup pair."""
        return self.spreads.get(pair, ())

    def answers(self, member: Member) -> bool:
        """Active-active: whether ``member`` answers now; False for a member of a primary-backup pair."""
        return member in self.answering.get(member.pair, ())

    def fallback_of(self, pair: str) -> str | None:
        """The configured fallback of ``pair``, or None."""
        spec = self.pairs.get(pair)
        return None if spec is None else spec.fallback

    def any_active(self) -> bool:
        """Whether at least one pair has an active member."""
        return any(member is not None for member in self.active.values())

    def serving_pair(self, request: Request) -> str | None:
        """The pair whose ``match.domain`` names the Request-URI host, else the serving pair."""
        uri = request.parsed_uri
        if isinstance(uri, SipUri):
            host = uri.host_key
            for pair in self.pairs.values():
                if host in pair.domains:
                    return pair.name
        for pair in self.pairs.values():
            if pair.serving:
                return pair.name
        return None
