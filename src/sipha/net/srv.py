"""DNS records as RFC 3263 reads them, and their order (RFC 2782): the pure part of :mod:`sipha.net.dns`.

No queries here: the parts of NAPTR and SRV records the procedures use, SRV
records in the order to try them, and how a URI host becomes a DNS name or an IP
literal.  Kept apart from the resolver, which stays within its size.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from itertools import groupby

import dns.name
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.NAPTR
import dns.rdtypes.IN.SRV


@dataclass(frozen=True, slots=True)
class Naptr:
    """A NAPTR record (RFC 3403) as RFC 3263 §4.1 reads it: flags lower case, service upper case."""

    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True, slots=True)
class Srv:
    """An SRV record (RFC 2782); ``target`` lower case without the final dot, "." for none."""

    priority: int
    weight: int
    port: int
    target: str


Record = Naptr | Srv | str
"""A record's part the procedures use: an address (a str) for A and AAAA."""


def order_srv(records: list[Srv], rng: random.Random) -> list[Srv]:
    """SRV records in the order to try them: RFC 2782's priority, then weighted random order.

    RFC 2782, Priority: "A client MUST attempt to contact the target host with
    the lowest-numbered priority it can reach; target hosts with the same
    priority SHOULD be tried in an order defined by the weight field."  Weight:
    "To select a target to be contacted next, arrange all SRV RRs (that have not
    been ordered yet) in any order, except that all those with weight 0 are
    placed at the beginning of the list.  Compute the sum of the weights of
    those RRs, and with each RR associate the running sum in the selected order.
    Then choose a uniform random number between 0 and the sum computed
    (inclusive), and select the RR whose running sum value is the first in the
    selected order which is greater than or equal to the random number
    selected."  So a weight 0 record is picked first only when the draw is 0:
    "records with weight 0 should have a very small chance of being selected".
    """
    if len(records) < 2:  # noqa: PLR2004 - nothing to order
        return records
    ordered: list[Srv] = []
    for _, group in groupby(sorted(records, key=lambda srv: srv.priority), key=lambda srv: srv.priority):
        pending = list(group)
        rng.shuffle(pending)  # "in any order": a random one spreads the weight 0 records too
        pending.sort(key=lambda srv: srv.weight != 0)  # stable: weight 0 first
        total = sum(srv.weight for srv in pending)
        while pending:
            draw = int(rng.random() * (total + 1))  # uniform in [0, total]
            running = 0
            chosen = len(pending) - 1
            for index, srv in enumerate(pending):
                running += srv.weight
                if running >= draw:
                    chosen = index
                    break
            total -= pending[chosen].weight
            ordered.append(pending.pop(chosen))
    return ordered


def parse_record(rdata: object) -> Record:
    """The part of a record the procedures use: names lower case, without the final dot."""
    if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
        return str(rdata.address)
    if isinstance(rdata, dns.rdtypes.IN.SRV.SRV):
        return Srv(rdata.priority, rdata.weight, rdata.port, dns_name(rdata.target))
    if isinstance(rdata, dns.rdtypes.IN.NAPTR.NAPTR):
        return Naptr(
            rdata.order,
            rdata.preference,
            rdata.flags.decode("ascii", "replace").lower(),
            rdata.service.decode("ascii", "replace").upper(),
            dns_name(rdata.replacement),
        )
    raise TypeError(f"unexpected record {rdata!r}")


def dns_name(name: dns.name.Name) -> str:
    """A DNS name as the procedures compare it: lower case, no final dot; the root is "."."""
    return "." if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


def host_name(host: str) -> str:
    """A URI host as a DNS name or IP text: no brackets, lower case, no final dot."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.lower().rstrip(".")


def ip_literal(host: str) -> str | None:
    """The canonical text of an IP literal, None for a host name."""
    if not host or (":" not in host and not host[-1].isdigit()):  # names end with a letter (the TLD)
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def explicit_transport(transport: str | None, *, secure: bool) -> str | None:
    """The URI's transport, upper case; a ``sips:`` URI's ``transport=tcp`` means TLS (RFC 5630)."""
    if transport is None:
        return None
    transport = transport.upper()
    if secure:
        if transport not in ("TCP", "TLS"):
            raise ValueError(f"a sips: URI cannot use transport {transport} (RFC 3261 §26.2.2: TLS)")
        return "TLS"
    return transport


def srv_name(transport: str, domain: str) -> str:
    """The SRV name for ``transport`` at ``domain``: _sips._tcp for TLS, _sip._tcp, _sip._udp."""
    if transport == "TLS":
        return f"_sips._tcp.{domain}"
    return f"_sip._{transport.lower()}.{domain}"
