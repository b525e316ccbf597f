"""The RFC 3261 §16 rules a proxy applies to one message, as pure functions.

Nothing here keeps state: each function takes the message and what it needs to
know (our option tags, our Via sent-by addresses, our Record-Route URIs, the
routing view) and returns a value or edits the message it was given.  The
proxy core (:mod:`sipha.proxy.core`) calls them in the order of §16: validate
(§16.3), preprocess routes (§16.4), forward (§16.6), choose the best response
(§16.7 step 6).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sipha.proxy.routing import uri_address, uri_port
from sipha.proxy.via import port_param
from sipha.proxy.view import ConfiguredView
from sipha.sip import Request, Response, SipParseError, SipUri, Via, parse_uri
from sipha.sip.address import Address, default_port
from sipha.sip.grammar import split_commas
from sipha.sip.headers import branch_via

MAGIC_COOKIE: Final = "z9hG4bK"
# §16.6 step 11: "Timer C MUST be set ... the timer MUST be greater than 3 minutes."
TIMER_C: Final = 181.0
# §16.6 step 3: "If the copy does not contain a Max-Forwards header field, the proxy MUST
# add one with a field value, which SHOULD be 70."
DEFAULT_MAX_FORWARDS: Final = 70
# Requests that may create a dialog, so that the proxy Record-Routes them (§16.6 step 4;
# RFC 3515 REFER, RFC 6665 SUBSCRIBE/NOTIFY).
DIALOG_CREATING: Final = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
ALLOWED_SCHEMES: Final = frozenset({"sip", "sips", "tel"})
LOOP_DETECTED: Final = 482
"""§16.3 step 4: the status of a request that looped."""

Refusal = tuple[int, str, list[tuple[str, str]]]
"""A final response to generate: status, reason phrase, extra header fields."""
SentBy = set[tuple[str, int]]
"""Our Via sent-by addresses (host lower-cased without IPv6 brackets, port)."""


# ------------------------------------------------------------------ §16.3 request validation


def check_request(request: Request, supported: frozenset[str], sent_by: SentBy) -> Refusal | None:
    """§16.3 request validation, steps 2 to 5 (step 1, syntax, was done on receipt).

    ``supported``: the option tags a Proxy-Require may name; ``sent_by``: our Via
    sent-by addresses (for loop detection).  Step 6 (Proxy-Authorization) does not
    apply: sipha authenticates nobody.
    """
    # Step 2: "If the Request-URI has a URI whose scheme is not understood by the proxy,
    # the proxy SHOULD reject the request with a 416 (Unsupported URI Scheme) response."
    if request.parsed_uri.scheme not in ALLOWED_SCHEMES:
        return 416, "Unsupported URI Scheme", []
    # Step 3: "If the request does not contain a Max-Forwards header field, this check is
    # passed.  ... If the field value is zero (0), the element MUST NOT forward the
    # request ... the element MUST return a 483 (Too many hops) response."
    if request.max_forwards == 0:
        return 483, "Too Many Hops", []
    # Step 4: loop detection (optional, done): see looped.
    if looped(request, sent_by):
        return LOOP_DETECTED, "Loop Detected", []
    # Step 5: Proxy-Require: "the element MUST return a response with status code 420
    # (Bad Extension) ... an Unsupported header field listing those options".
    unsupported = [tag for tag in request.proxy_require if tag not in supported]
    if unsupported:
        return 420, "Bad Extension", [("Unsupported", ", ".join(unsupported))]
    return None


def looped(request: Request, sent_by: SentBy) -> bool:
    """§16.3 step 4: a Via of ours whose branch equals the hash this request gets now.

    When we forwarded the request before, the Via just below ours was its top
    Via; the branch we put in carried the hash of the fields listed in §16.6
    step 8 with that top Via.  Same hash again: a loop.  Different (the
    Request-URI or another field changed on the way): a spiral, which is allowed.
    """
    vias = request.vias
    if len(vias) < 2:  # noqa: PLR2004 - our Via and the one below it
        return False
    elements = [element for value in request.get_all("via") for element in split_commas(value)]
    for index, via in enumerate(vias[:-1]):
        if (via.host_key, via.port) in sent_by and via.branch:
            expected = MAGIC_COOKIE + loop_hash(request, elements[index + 1])
            if via.branch.partition(".")[0] == expected:
                return True
    return False


def top_via_text(request: Request) -> str:
    """The topmost Via header field value, as received."""
    value = request.get_all("via")[0]
    return split_commas(value)[0] if "," in value else value


def loop_hash(request: Request, top_via: str) -> str:
    """The loop-detection hash of §16.6 step 8.

    "a hash of the To tag, From tag, Call-ID header field, the Request-URI of the
    request received (before translation), the topmost Via header, and the sequence
    number from the CSeq header field, in addition to any Proxy-Require and
    Proxy-Authorization header fields that may be present".
    """
    parts = (
        request.to.tag or "",
        request.from_.tag or "",
        request.call_id,
        request.uri,
        top_via,
        str(request.cseq.seq),
        request.get("proxy-require") or "",
        request.get("proxy-authorization") or "",
    )
    return hashlib.blake2b("\x00".join(parts).encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


# ------------------------------------------------------------------ §16.4 route information preprocessing


def preprocess_routes(request: Request, record_routes: RecordRoutes, view: ConfiguredView) -> None:
    """§16.4 route information preprocessing (``record_routes``: the URIs we Record-Route with)."""
    uri = request.parsed_uri
    routes = request.routes
    # "If the Request-URI of the request contains a value this proxy previously placed
    # into a Record-Route header field ... replace the Request-URI in the request with the
    # last value from the Route header field, and remove that value" (strict routing).
    if isinstance(uri, SipUri) and routes and is_record_route(uri, record_routes):
        last = routes[-1]
        elements = request.get_elements("route")
        request.remove_header("route")
        for element in elements[:-1]:
            request.add_header("Route", element)
        request.set_uri(last.uri_text)
        routes = request.routes
    # "If the first value in the Route header field indicates this proxy, the proxy MUST
    # remove that value from the request."
    if routes:
        first = routes[0].uri
        if isinstance(first, SipUri) and view.is_own(first.host_key, uri_port(first)):
            request.pop_route()
            # RFC 5658: a request that changed transports here was Record-Routed twice (see
            # RecordRoutes), so the route set of its dialog names us twice in a row: the
            # value of the side this request came in on, then the other side's.  Both are
            # ours; the next hop is the value after them.
            routes = request.routes
            if routes:
                second = routes[0].uri
                if isinstance(second, SipUri) and is_record_route(second, record_routes):
                    request.pop_route()


def is_record_route(uri: SipUri, own: RecordRoutes) -> bool:
    """Whether ``uri`` is a value this proxy puts in Record-Route, for any transport (no user part).

    Compared by host and port (the scheme's and transport's default port when none is
    given, §19.1.2), as the address the URI resolves to.
    """
    return uri.user is None and (uri.host_key, uri_port(uri)) in own.addresses


def member_source(request: Request, source: Address) -> Address:
    """The address a member is recognised by (docs/design.md §2): UDP source port; TCP/TLS Via port."""
    if source.reliable:
        return Address(source.transport, source.host, request.top_via.port or default_port(source.transport))
    return source


# ------------------------------------------------------------------ §16.6 request forwarding


def prepare(
    request: Request,
    destination: Address,
    *,
    inbound: str,
    record_routes: RecordRoutes,
    via: Mapping[str, tuple[str, int]],
    branch_tag: str,
    fork: int,
) -> Request:
    """§16.6 steps 1-8: copy, Max-Forwards, Record-Route, Via (the target is ``destination``).

    ``inbound``: the transport ``request`` came in on (for its Record-Route, see
    :meth:`RecordRoutes.push`); ``via``: our sent-by per transport; ``fork``: the attempt
    number of this request (a new branch per target, §16.6 step 8); ``branch_tag``:
    appended to the branch (the worker that holds the transaction).
    """
    forwarded = request.copy()  # step 1
    max_forwards = request.max_forwards
    forwarded.set_max_forwards(  # step 3
        DEFAULT_MAX_FORWARDS if max_forwards is None else max_forwards - 1
    )
    transport = destination.transport.upper()
    if request.method in DIALOG_CREATING and request.to.tag is None:  # step 4
        record_routes.push(forwarded, request, inbound.upper(), transport)
    host, port = via.get(transport) or next(iter(via.values()))
    # Step 8: the branch carries the §16.6 loop hash, so that loop detection can
    # recompute it, and a CANCEL (same fields but the method) gets the INVITE's branch
    # whichever pool instance forwards it (§16.11 asks the same of stateless proxies).
    branch = f"{MAGIC_COOKIE}{loop_hash(request, top_via_text(request))}.{fork}{branch_tag}"
    via_text, parsed = branch_via(f"SIP/2.0/{transport} {host}:{port}", branch)
    forwarded.push_via(via_text, parsed)
    return forwarded


def build_cancel(forwarded: Request) -> Request:
    """The CANCEL of a forwarded INVITE (§9.1).

    "The Request-URI, Call-ID, To, the numeric part of CSeq, and From header fields in
    the CANCEL request MUST be identical to those in the request being cancelled,
    including tags.  A CANCEL constructed by a client MUST have only a single Via header
    field value matching the top Via value in the request being cancelled. ... If the
    request being cancelled contains a Route header field, the CANCEL request MUST
    include that Route header field's values."
    """
    headers: list[tuple[str, str]] = [("Via", top_via_text(forwarded))]
    headers += [("Route", value) for value in forwarded.get_all("route")]
    headers += [
        ("Max-Forwards", str(DEFAULT_MAX_FORWARDS)),
        ("From", forwarded.get("from") or ""),
        ("To", forwarded.get("to") or ""),
        ("Call-ID", forwarded.get("call-id") or ""),
        ("CSeq", f"{forwarded.cseq.seq} CANCEL"),
    ]
    return Request.build("CANCEL", forwarded.uri, headers)


# ------------------------------------------------------------------ §16.7 response processing


def ours(via: Via, sent_by: SentBy) -> bool:
    """Whether ``via`` is one of our Vias (§18.1.2: its sent-by is one of ours)."""
    return (via.host_key, via.port) in sent_by


def via_destination(via: Via) -> Address:
    """Where a response goes by its next Via (§18.2.2, RFC 3581).

    From the Via alone: the received address and rport port that were stamped when the
    request came in (for a stream, the connection's address).
    """
    # RFC 3581 §3: response-port = "rport" [EQUAL 1*DIGIT]; a value that is not a port
    # is ignored, as for a request's top Via (response_destination).
    port = port_param(via.rport) or via.port or default_port(via.transport)
    host = via.received or via.host_key
    return Address(via.transport, host.strip("[]"), port)


def class_rank(status: int) -> tuple[int, int]:
    """Order of preference among final responses (§16.7 step 6)."""
    klass = status // 100
    if klass == 6:  # noqa: PLR2004 - "choose from the 6xx class responses if any exist"
        return (0, status)
    if klass == 2:  # noqa: PLR2004
        return (1, status)
    return (2 + klass, status)  # "the lowest response class stored"


def better(current: Response | None, candidate: Response) -> Response:
    """The better of the best final response so far and ``candidate`` (§16.7 step 6)."""
    if current is None or class_rank(candidate.status) < class_rank(current.status):
        return candidate
    return current


# ------------------------------------------------------------------ odds and ends


def warning(error: SipParseError) -> str:
    """A Warning header value naming what was wrong (RFC 3261 §20.43, code 399 misc)."""
    detail = error.detail.replace("\\", "").replace('"', "'")[:120]
    return f'399 sipha "{detail}"'


def call_key(call_id: str, tag_a: str | None, tag_b: str | None) -> tuple[str, str, str]:
    """A dialog's key whichever side sends the request (the tags in a fixed order)."""
    first, second = sorted((tag_a or "", tag_b or ""))
    return (call_id, first, second)


def record_route_uri(text: str) -> SipUri:
    """The Record-Route URI of the configuration, parsed; TypeError when it is not a SIP URI."""
    uri = parse_uri(text)
    if not isinstance(uri, SipUri):
        raise TypeError(f"record-route must be a SIP URI: {text!r}")
    return uri


# ------------------------------------------------------------------ §16.6 step 4: Record-Route per transport


def derive_record_routes(record_route: str, via: Mapping[str, tuple[str, int]]) -> dict[str, str]:
    """The Record-Route URI of each transport we listen on, from the configured one (RFC 5658).

    A Record-Route URI also tells each end of the dialog how to reach us: "If the URI
    specifies a transport protocol in the transport parameter, that transport protocol
    SHOULD be used.  Otherwise, if no transport protocol is specified, but the TARGET is
    a numeric IP address, the client SHOULD use UDP for a SIP URI" (RFC 3263 §4.1).  So
    one URI cannot serve a TCP side and a UDP side at once.

    The configured URI belongs to its own transport (as :func:`uri_address` reads it:
    its ``transport`` parameter, else TLS for ``sips:``, else UDP) and is used as is
    for it.  For each other transport of
    ``via`` (our sent-by per transport, the first listen address of each): the same
    host; no port when the configured URI has none (the pool is then found through
    DNS per transport, RFC 3263), else our port of that transport; ``transport=tcp`` /
    ``transport=tls`` (nothing for UDP); ``lr``.  Its other parameters are dropped.
    """
    uri = record_route_uri(record_route)
    routes = {uri_address(uri).transport: record_route}
    for name, (_, port) in via.items():
        transport = name.upper()
        if transport not in routes:
            port_text = "" if uri.port is None else f":{port}"
            param = "" if transport == "UDP" else f";transport={transport.lower()}"
            routes[transport] = f"sip:{uri.host}{port_text}{param};lr"
    return routes


@dataclass(frozen=True, slots=True)
class RecordRoutes:
    """Our Record-Route values (§16.6 step 4), computed once per settings.

    A request that changes transports here is Record-Routed twice, once per side.  RFC
    5658: "It is not possible to make one header have the characteristics of both
    interfaces at the same time"; it "formally recommends the use of the double
    Record-Route technique as an alternative to the current RFC 3261 text, which
    describes only a Record-Route rewriting solution" (the rewriting of responses of
    RFC 3261 §16.7 step 9, which sipha does not do).
    """

    values: dict[str, str]
    """Per transport (UDP, TCP, TLS): the header value pushed, ``<uri>``."""
    configured: str
    """``<the configured URI>``: for a transport with no value of its own."""
    sips: str | None
    """``<sips:host[:TLS port];lr>`` when we listen on TLS (or the configured URI is SIPS)."""
    addresses: frozenset[tuple[str, int]]
    """(host, port) of every value above: what §16.4 recognises as ours."""

    @classmethod
    def build(
        cls, record_route: str, per_transport: Mapping[str, str], via: Mapping[str, tuple[str, int]]
    ) -> RecordRoutes:
        """From the configured URI and the URI per transport (empty: derived from ``via``)."""
        configured = record_route_uri(record_route)
        texts = per_transport or derive_record_routes(record_route, via)
        values = {transport.upper(): f"<{text}>" for transport, text in texts.items()}
        sips: str | None = None
        tls = values.get("TLS")
        if configured.scheme == "sips":
            sips = f"<{record_route}>"
        elif tls is not None:
            # §16.6 step 4: a SIPS Record-Route reaching the TLS side; no transport
            # parameter, the sips scheme asks for TLS by itself (RFC 3261 §26.2.2).
            uri = record_route_uri(tls[1:-1])
            sips = f"<sips:{uri.host}{'' if uri.port is None else f':{uri.port}'};lr>"
        uris = [configured] + [record_route_uri(value[1:-1]) for value in values.values()]
        if sips is not None:
            uris.append(record_route_uri(sips[1:-1]))
        addresses = frozenset((uri.host_key, uri_port(uri)) for uri in uris)
        return cls(values, f"<{record_route}>", sips, addresses)

    def push(self, forwarded: Request, request: Request, inbound: str, outbound: str) -> None:
        """§16.6 step 4 on ``forwarded``, received on ``inbound`` and sent on ``outbound``.

        RFC 5658 double Record-Route when the transports differ: the value of the side
        the request came in on first (bottom), the side it goes out on on top.  A UAS
        takes the route set "in order" from the request and a UAC "in reverse order"
        from the response (RFC 3261 §12.1.1, §12.1.2), so each end's first hop is the
        value facing it.

        §16.6 step 4: "If the Request-URI contains a SIPS URI, or the topmost Route header
        field value (after the post processing of bullet 6) contains a SIPS URI, the URI
        placed into the Record-Route header field MUST be a SIPS URI."  Both sides then
        reach us at the same ``sips:`` URI (TLS): one value serves both.
        """
        if self.sips is not None and _sips_target(request):
            forwarded.push_record_route(self.sips)
            return
        values = self.values
        received_on = values.get(inbound, self.configured)
        sent_on = values.get(outbound, self.configured)
        forwarded.push_record_route(received_on)
        if sent_on != received_on:
            forwarded.push_record_route(sent_on)


def _sips_target(request: Request) -> bool:
    """Whether the Request-URI or the topmost Route (after §16.4) is a SIPS URI (§16.6 step 4)."""
    if request.parsed_uri.scheme == "sips":
        return True
    routes = request.routes
    return bool(routes) and routes[0].uri.scheme == "sips"
