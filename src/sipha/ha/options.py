"""The OPTIONS a probe sends (RFC 3261 §11), and the classic own-address check (event 40000).

Both are pure functions: identifiers, addresses and names come in, a message
or an event comes out.  The caller generates the Call-ID, branch and tag
(RFC 3261 §8.1.1.4, §8.1.1.7, §19.3 want them globally unique and random),
so that tests can pass fixed ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from sipha.ha.events import ProxyAddressNotFound
from sipha.sip import Request
from sipha.sip.address import Address, host_key

# RFC 3261 §8.1.1.6: "A UAC MUST insert a Max-Forwards header field into each request it
# originates with a value that SHOULD be 70."
MAX_FORWARDS: Final = 70
# RFC 3261 §8.1.1.7: the branch "MUST always begin with the characters 'z9hG4bK'".
MAGIC_COOKIE: Final = "z9hG4bK"


def _hostport(host: str, port: int) -> str:
    # RFC 3261 §25.1 hostport: an IPv6 reference is bracketed.
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def member_uri(address: Address) -> str:
    """The Request-URI of a probe: the member's own address (RFC 3263 §4 needs no lookup then).

    TLS members get a ``sips:`` URI (RFC 3261 §19.1: TLS is what sips means); TCP
    members a ``;transport=tcp`` parameter, so that a reply-to-URI stays on TCP.
    """
    transport = address.transport.upper()
    hostport = _hostport(address.host, address.port)
    if transport == "TLS":
        return f"sips:{hostport}"
    if transport == "UDP":
        return f"sip:{hostport}"
    return f"sip:{hostport};transport={transport.lower()}"


def build_options(
    member_address: Address,
    proxy_uri: str,
    via_host: str,
    via_port: int,
    transport: str,
    *,
    call_id: str,
    branch: str,
    from_tag: str,
    cseq: int = 1,
) -> Request:
    """An OPTIONS to a pair member, as RFC 3261 §11.1 has a UA send it.

    ``proxy_uri`` is the proxy's identity for From (e.g. ``sip:proxy.example.com``,
    the record-route host without ``;lr``); the Contact is this instance's own
    ``via_host:via_port`` (a Contact names where this instance is reached, and
    the pool FQDN names several).  To is the member's URI, no tag (§8.1.1.2:
    out of a dialog).  ``branch`` must carry the RFC 3261 magic cookie;
    ``cseq`` may be :attr:`Probe.seq <sipha.ha.events.Probe.seq>`.
    """
    if not branch.startswith(MAGIC_COOKIE):
        raise ValueError(f"branch {branch!r}: must start with {MAGIC_COOKIE} (RFC 3261 §8.1.1.7)")
    transport = transport.upper()
    target = member_uri(member_address)
    own = _hostport(via_host, via_port)
    contact = f"sip:{own}" if transport == "UDP" else f"sip:{own};transport={transport.lower()}"
    return Request.build(
        "OPTIONS",
        target,
        [
            # §18.1.1 / RFC 3581: rport asks for the answer at the source port, through NATs.
            ("Via", f"SIP/2.0/{transport} {own};branch={branch};rport"),
            ("Max-Forwards", str(MAX_FORWARDS)),
            ("From", f"<{proxy_uri}>;tag={from_tag}"),
            ("To", f"<{target}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} OPTIONS"),
            ("Contact", f"<{contact}>"),
            # §11.1: "Accept ... If not specified, the UAS assumes application/sdp": the
            # usual value, stated so that a strict server does not answer 406.
            ("Accept", "application/sdp"),
            ("Content-Length", "0"),
        ],
    )


def check_own_address(
    configured: Iterable[Address], listening: Iterable[Address]
) -> ProxyAddressNotFound | None:
    """Event 40000 when none of this instance's addresses is in the pool's configured list.

    ``configured`` is the pool as configured: what the ``record-route`` host
    (the pool FQDN, docs/design.md §3) resolves to, with the record-route port
    (5060 by default) or the SRV ports; the app resolves it, this function
    does no DNS.  ``listening`` is this instance's addresses: the bound listen
    addresses, and ``sip-address`` with each listen port when set.  A match
    is the same host and port on any transport; a wildcard listen address
    (0.0.0.0, ::) names no host and never matches, so pass ``sip-address``.
    The classic product only logs this event: the instance still runs.
    """
    pool = tuple(configured)
    ours = tuple(listening)
    wanted = {(host_key(address.host), address.port) for address in pool}
    if any((host_key(address.host), address.port) in wanted for address in ours):
        return None
    return ProxyAddressNotFound(pool, ours)
