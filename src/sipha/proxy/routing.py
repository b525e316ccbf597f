"""Where a request goes: the routing decision of docs/design.md §3, as a pure function.

The proxy core (:mod:`sipha.proxy.core`) has already validated the request
(RFC 3261 §16.3) and removed its own Route entry (§16.4) when it calls
:func:`decide`.  The decision depends only on the request, where it came from
and a :class:`RoutingView` of the pairs; the HA pair monitor provides the view
of which member is active, so the transaction code does not change when it does.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol

from sipha.ha.member import Member
from sipha.sip import Request, SipUri
from sipha.sip.address import SIP_PORT, SIPS_PORT, Address


class RoutingView(Protocol):
    """What routing needs to know about the proxy itself and the pairs."""

    def is_own(self, host: str, port: int | None) -> bool:
        """Whether ``host[:port]`` names this proxy (listen address, sip-address, record-route)."""
        ...

    def member_at(self, host: str, port: int | None) -> Member | None:
        """The pair member with this address, if any (port None: the default port)."""
        ...

    def active_member(self, pair: str) -> Member | None:
        """The member that is active now, or None when the pair has none."""
        ...

    def serving_pair(self, request: Request) -> str | None:
        """The pair that serves a request from an endpoint (``match`` rules, else ``serving``)."""
        ...

    def any_active(self) -> bool:
        """Whether at least one pair has an active member (keepalives answer 200, else 503)."""
        ...

    def fallback_of(self, pair: str) -> str | None:
        """The pair that takes ``pair``'s rule-4 requests while it is out of service, or None."""
        ...

    def spread(self, pair: str) -> tuple[Member, ...]:
        """Active-active (docs/design.md §2.2): the members new Call-IDs go to; () otherwise."""
        ...

    def answers(self, member: Member) -> bool:
        """Active-active: whether ``member`` answers now (False for a primary-backup member)."""
        ...


@dataclass(frozen=True, slots=True)
class Locate:
    """A next hop named by a host name: what RFC 3263 §4 needs of its URI to find the targets.

    ``port`` and ``transport`` are the URI's own (None when it has none: NAPTR and
    SRV choose them); ``secure``: a ``sips:`` next hop, or a SIPS Request-URI
    (§16.6 step 7: "if the Request-URI specifies a SIPS resource, the proxy MUST
    follow the procedures of [4] as if the input URI were a SIPS URI").
    """

    host: str
    port: int | None
    transport: str | None
    secure: bool


class Forward:
    """Send the request to ``destination``; ``pair`` names the pair it was routed to, if any.

    ``locate`` is set when the next hop is a host name: the request goes to the targets
    RFC 3263 gives for it (:mod:`sipha.proxy.targets`), not to ``destination``, which
    then only says what the URI alone means (its host, and the default transport and port).

    Equality, hash and repr by its fields, as a frozen dataclass's; a plain class so that
    mypyc compiles its ``__init__`` (one per request; a dataclass's runs interpreted: the
    compiled build, docs/design.md §6).
    """

    __slots__ = ("destination", "locate", "pair")

    def __init__(self, destination: Address, pair: str | None = None, locate: Locate | None = None) -> None:
        self.destination: Final = destination
        self.pair: Final = pair
        self.locate: Final = locate

    def __eq__(self, other: object) -> bool:
        if type(other) is not Forward:
            return NotImplemented
        return (
            self.destination == other.destination and self.pair == other.pair and self.locate == other.locate
        )

    def __ne__(self, other: object) -> bool:
        if type(other) is not Forward:  # compiled, __eq__ is typed bool: NotImplemented is returned here
            return NotImplemented
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((self.destination, self.pair, self.locate))

    def __repr__(self) -> str:
        return f"Forward(destination={self.destination!r}, pair={self.pair!r}, locate={self.locate!r})"


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the request here with ``status`` (and a Retry-After when it is a 503)."""

    status: int
    reason: str
    retry_after: int | None = None
    pair: str | None = None
    """The pair without an active member, for a 503 (the core may hold the request)."""
    may_fall_back: bool = False
    """A request for the pair's servers by rule 4 (:func:`may_fall_back`): once the pair is out
    of service (40001), its fallback pair's active member may take it (docs/deployment.md)."""
    call_id: str = ""
    """With ``may_fall_back``: the request's Call-ID, spread over an active-active fallback pair."""


Decision = Forward | Answer

# How long a 503 for a pair without an active member asks the caller to wait (docs/design.md §2).
RETRY_AFTER_SECONDS: Final = 5

CLEARTEXT_REFUSED: Final = Answer(416, "Unsupported URI Scheme (SIPS needs a TLS hop; this one is not)")
"""A SIPS request whose next hop is not over TLS (RFC 3261 §26.2.2: "SIPS ... requires TLS on
every hop").  416 is what §8.1.3.5 tells the client to answer by retrying with a SIP URI."""


def uri_address(uri: SipUri) -> Address:
    """The transport address a SIP URI points at (RFC 3263 §4 without DNS: transport, port).

    A ``sips:`` URI is always reached over TLS: RFC 3261 §26.2.2, "the SIPS URI
    scheme ... requires TLS on every hop", and RFC 3263 §4.1, "if the URI is a SIPS
    URI ... the client MUST use TLS" (``transport=tcp`` on a SIPS URI is the old
    spelling of TLS over TCP, RFC 5630 §3.1.3).
    """
    transport = uri.transport
    if uri.scheme == "sips":
        transport = "tls"
    elif transport is None:
        transport = "udp"
    port = uri.port
    if port is None:
        port = SIPS_PORT if uri.scheme == "sips" or transport == "tls" else SIP_PORT
    host = uri.maddr or uri.host
    if host.startswith("["):
        host = host[1:-1]
    return Address(transport.upper(), host, port)


def uri_port(uri: SipUri) -> int:
    """``uri_address(uri).port``, without building the address."""
    port = uri.port
    if port is not None:
        return port
    return SIPS_PORT if uri.scheme == "sips" or uri.transport == "tls" else SIP_PORT


def decide(request: Request, source: Address, view: RoutingView) -> Decision:
    """Route ``request`` per docs/design.md §3, rules 1 to 4, in order.

    1. An OPTIONS to the proxy itself (no user part, no Route left) is a keepalive.
    2. A Route next hop, or else a Request-URI, that names a pair member goes to that
       pair's *active* member: this is what replaces the virtual IP.
    3. A request from a member follows its Route or Request-URI anywhere.
    4. Any other request goes to the active member of the pair serving it (its ``fallback``
       pair's once it is out of service: docs/deployment.md).

    An active-active pair (docs/design.md §2.2) has no single active member: rule 2 goes to
    the member named while it answers (else to one that does), rule 4 to the member
    :func:`spread_member` picks by Call-ID among those that take new Call-IDs.

    Requests from outside the pairs are never relayed to third parties: a Route
    they carry must name a member (else 403), so the proxy is not an open relay.
    """
    uri = request.parsed_uri
    routes = request.routes
    sip_uri = uri if isinstance(uri, SipUri) else None
    # Rule 1: keepalive OPTIONS (RFC 3261 §11 lets a proxy answer OPTIONS addressed to it).
    if is_keepalive(request, view):
        if view.any_active():
            return Answer(200, "OK")
        return Answer(503, "Service Unavailable", retry_after=RETRY_AFTER_SECONDS)
    from_member = view.member_at(source.host, source.port) is not None
    next_hop: SipUri | None = None
    if routes:
        route_uri = routes[0].uri
        if not isinstance(route_uri, SipUri):
            return Answer(416, "Unsupported URI Scheme")
        next_hop = route_uri
    elif sip_uri is not None and not _names_own(sip_uri, view):
        next_hop = sip_uri
    # Rule 2: anything that names a member goes to its pair's active member.
    secure = (sip_uri is not None and sip_uri.scheme == "sips") or (
        next_hop is not None and next_hop.scheme == "sips"
    )
    if next_hop is not None:
        target = uri_address(next_hop)
        member = view.member_at(target.host, target.port)
        if member is not None:
            if view.answers(member):  # active-active: the dialog stays where it is
                return _to_member(member, secure=secure)
            return _to_active(member.pair, view, secure=secure)
        if from_member:
            # Rule 3: a SIP server using sipha as its outbound proxy.
            if not is_ip_literal(target.host):
                # §16.6 step 7: the next hop's targets come from RFC 3263 (NAPTR, SRV, A/AAAA).
                # A SIPS request is located as SIPS: TLS targets only; a next hop that asks for
                # UDP cannot carry it.
                if secure and next_hop.transport is not None and next_hop.transport.lower() == "udp":
                    return CLEARTEXT_REFUSED
                locate = Locate(target.host, next_hop.port, next_hop.transport, secure)
                return Forward(target, locate=locate)
            if secure and target.transport != "TLS":
                return CLEARTEXT_REFUSED
            return Forward(target)
        if routes:
            return Answer(403, "Forbidden (relaying denied)")
    # Rule 4: endpoint traffic goes to the serving pair.
    pair = view.serving_pair(request)
    if pair is None:
        return Answer(404, "Not Found (no pair serves this request)")
    spread = view.spread(pair)
    if spread:
        return _to_member(spread_member(request.call_id, spread), secure=secure)
    decision = _to_active(pair, view, secure=secure)
    if (
        isinstance(decision, Answer)
        and decision.pair is not None
        and view.fallback_of(decision.pair) is not None
        and may_fall_back(request, secure=secure)
    ):
        return replace(decision, may_fall_back=True, call_id=request.call_id)
    return decision


def spread_member(call_id: str, members: Sequence[Member]) -> Member:
    """The member of an active-active pair that takes the requests of ``call_id`` (docs/design.md §2.2).

    A hash of the Call-ID alone, the same in every process and every instance of the pool
    (not Python's ``hash``, salted per process): every request of a dialog, its
    retransmissions, its CANCEL and its ACK meet the same member, whichever instance they
    cross, while the members that take new Call-IDs stay the same.  ``members`` in
    configured order; with one, it takes everything.
    """
    if len(members) == 1:
        return members[0]
    digest = hashlib.blake2b(call_id.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return members[int.from_bytes(digest, "big") % len(members)]


def may_fall_back(request: Request, *, secure: bool) -> bool:
    """Whether a rule-4 request may go to the fallback pair of its pair (docs/deployment.md).

    Rule 4 only: a request that names a member of the pair out of service (rule 2: an
    in-dialog request to its Contact) belongs to a dialog of that pair's servers, which the
    fallback pair's servers do not know.  A rule-4 request names no member: a new request,
    or an in-dialog one from a user agent that sends them to its outbound proxy without
    the remote target; while the pair is out of service nothing else could serve it, and
    the calls set up through the fallback live there (a dialog of the lost pair gets 481
    from the fallback instead of 503).  Not a CANCEL (it follows its INVITE, §16.10), not
    a SIPS request: whether the fallback's members take TLS is not this decision's to guess.
    """
    return request.method != "CANCEL" and not secure


def is_keepalive(request: Request, view: RoutingView) -> bool:
    """docs/design.md §3 rule 1: an OPTIONS to the proxy itself (no user part, no Route left)."""
    if request.method != "OPTIONS" or request.routes:
        return False
    uri = request.parsed_uri
    return isinstance(uri, SipUri) and uri.user is None and _names_own(uri, view)


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address (IPv6 with or without brackets), not a name."""
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        return False
    return True


def _names_own(uri: SipUri, view: RoutingView) -> bool:
    """Whether ``uri`` names this proxy, with the scheme's default port (§19.1.2)."""
    return view.is_own(uri.host_key, uri_port(uri))


def _to_active(pair: str, view: RoutingView, *, secure: bool = False) -> Decision:
    active = view.active_member(pair)
    if active is None:
        return Answer(503, "Service Unavailable", retry_after=RETRY_AFTER_SECONDS, pair=pair)
    return _to_member(active, secure=secure)


def _to_member(member: Member, *, secure: bool = False) -> Decision:
    if secure and member.address.transport != "TLS":
        return CLEARTEXT_REFUSED
    return Forward(member.address, member.pair)
