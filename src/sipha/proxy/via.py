"""Where responses go and what a server writes into the top Via: RFC 3261 §18.2 and RFC 3581 §4.

Pure functions, no I/O: they encode how addresses map onto sockets and
connections (RFC 3261 §18), but only read and edit messages, so the proxy
core uses them and the transport layer does not need to.

Hosts in the :class:`Address` values returned here are bare (``::1``, not
``[::1]``), as sockets want them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

from sipha.sip.address import SIP_PORT, Address, default_port
from sipha.sip.grammar import split_commas, split_semis
from sipha.sip.uri import canonical_ip, strip_brackets, without_scope

if TYPE_CHECKING:
    from sipha.sip import Via

_PORT_MAX: Final = 65535


class ViaStampable(Protocol):
    """What :func:`stamp_received` needs of a request (:class:`sipha.sip.Request` provides it).

    ``replace_top_via(value)`` replaces the first via-parm of the first Via
    header field with ``value`` and keeps the text of every other via-parm and
    header field; cached parsed Vias are dropped.
    """

    @property
    def top_via(self) -> Via:
        """The first via-parm, parsed."""
        ...

    def get(self, name: str) -> str | None:
        """The value of the first ``name`` header field."""
        ...

    def replace_top_via(self, value: str) -> None:
        """Replace the first via-parm with ``value``."""
        ...


def port_param(text: str | None) -> int | None:
    """A port parameter's value (``rport``), or None when absent or not a port number."""
    if text and text.isdigit() and len(text) <= 5 and 0 < int(text) <= _PORT_MAX:  # noqa: PLR2004 - digits
        return int(text)
    return None


def response_destination(top_via: Via, source: Address) -> Address:
    """Where a response to a request with this top Via, received from ``source``, is sent.

    RFC 3261 §18.2.2 with RFC 3581 §4:

    * reliable transport: "the response MUST be sent using the existing
      connection to the source of the original request": the transport's
      connection table is keyed by the peer's address, so that is ``source``
      (if the connection is gone, see :func:`response_fallback_destination`);
    * else ``maddr``: that address, at the sent-by port or 5060;
    * else ``received``: with RFC 3581, when ``rport`` has a value, the
      received address and the rport port ("the response MUST be sent to the
      IP address listed in the received parameter, and the port in the rport
      parameter"); without it, the received address and the sent-by port or
      5060;
    * else the sent-by host and port (or 5060).
    """
    if source.reliable:
        return source
    port = top_via.port or SIP_PORT
    maddr = top_via.maddr
    if maddr:
        # Multicast TTL (§18.2.2 "ttl") is not supported: sipha never joins multicast groups.
        return Address(source.transport, strip_brackets(maddr), port)
    received = top_via.received
    if received:
        rport = port_param(top_via.rport)
        return Address(source.transport, strip_brackets(received), rport or port)
    host = strip_brackets(top_via.host)
    if port == source.port and host == source.host:
        return source  # the same address (the common case: sent-by is where it came from)
    return Address(source.transport, host, port)


def response_fallback_destination(top_via: Via, source: Address) -> Address:
    """Where to open a new connection when the request's connection has closed (reliable only).

    RFC 3261 §18.2.2: "the server SHOULD open a connection to the IP address
    in the received parameter, if present, using the port in the sent-by
    value, or the default port for that transport, such as 5060 for TCP or
    5061 for TLS".  Without ``received`` the sent-by host matched the source,
    so the source host is used.
    """
    host = strip_brackets(top_via.received) if top_via.received else source.host
    return Address(source.transport, host, top_via.port or default_port(source.transport))


def stamp_received(request: ViaStampable, source: Address) -> None:
    """Add ``received`` and fill ``rport`` in the top Via, as a server does on receipt.

    RFC 3261 §18.2.1: "If the host portion of the sent-by parameter contains
    a domain name, or if it contains an IP address that differs from the
    packet source address, the server MUST add a received parameter".
    RFC 3581 §4: an ``rport`` without a value is set to the source port, and
    then "the server MUST insert a received parameter containing the source
    IP address that the request came from, even if it is identical to the
    value of the sent-by component".

    The request is left untouched (its received bytes still valid for
    forwarding) when nothing needs to change.  Other parameters keep their
    text; a stale ``received`` is replaced in place.
    """
    via = request.top_via
    source_ip = without_scope(source.host)
    fill_rport = via.rport == ""
    if fill_rport:
        add_received = True
    else:
        sent_by = canonical_ip(via.host)
        add_received = sent_by is None or sent_by != canonical_ip(source_ip)
    if not add_received:
        return
    value = request.get("via")
    if value is None:  # pragma: no cover - top_via above raised already
        return
    element = split_commas(value)[0] if "," in value else value
    parts = split_semis(element)
    received = f"received={source_ip}"
    placed = False
    for index in range(1, len(parts)):
        name = parts[index].partition("=")[0].strip(" \t").lower()
        if name == "rport" and fill_rport:
            parts[index] = f"rport={source.port}"
        elif name == "received":
            parts[index] = received
            placed = True
    if not placed:
        parts.append(received)
    request.replace_top_via(";".join(parts))
