"""``[dns]``: how sipha resolves SIP host names (RFC 3263: NAPTR, SRV, A/AAAA; docs/design.md §3).

A section of the configuration model (:class:`sipha.config.Config` holds it as
``dns``), kept apart so that the model stays readable; what it configures is
:class:`sipha.net.dns.SipResolver` (:func:`sipha.poolcheck.configure_resolver`).
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


def parse_dns_server(text: str) -> tuple[str, int]:
    """``IP[:PORT]`` -> (IP, port): ``192.0.2.53``, ``192.0.2.53:5353``, ``::1``, ``[::1]:5353``."""
    host, port = text, 53
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected IP[:PORT], an IPv6 address in brackets before a port")
        if rest:
            port = _port(text, rest[1:])
    elif text.count(":") == 1:  # IPv4:PORT (an IPv6 address has two colons at least)
        host, _, port_text = text.partition(":")
        port = _port(text, port_text)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{text!r}: expected IP[:PORT], an IP address (a name would need a DNS server to be found), "
            "e.g. 192.0.2.53, 192.0.2.53:5353 or [2001:db8::53]:5353"
        ) from None
    return str(address), port


def _port(text: str, port: str) -> int:
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:  # noqa: PLR2004 - port range
        raise ValueError(f"{text!r}: the port must be 1-65535")
    return int(port)


class DnsSection(BaseModel):
    """[dns]: how SIP host names are resolved (RFC 3263: NAPTR, SRV, A/AAAA; docs/design.md §3)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    servers: list[str] = Field(
        default=[],
        description="DNS servers to ask, IP[:PORT] (port 53 by default); empty = those of /etc/resolv.conf",
    )
    timeout: float = Field(default=2.0, gt=0, le=30, description="s one DNS query may take")
    min_ttl: int = Field(
        default=0,
        ge=0,
        le=86400,
        alias="min-ttl",
        description="s an answer is kept at least, whatever its TTL",
    )
    max_ttl: int = Field(
        default=3600,
        ge=0,
        le=604800,
        alias="max-ttl",
        description="s an answer is kept at most, whatever its TTL; at least min-ttl",
    )

    @field_validator("servers")
    @classmethod
    def _check_servers(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_dns_server(item)
        return value

    @field_validator("max_ttl")
    @classmethod
    def _check_max_ttl(cls, value: int, info: ValidationInfo) -> int:
        least = info.data.get("min_ttl")  # absent when it failed its own validation (listed already)
        if least is not None and value < least:
            raise ValueError(f"must be at least dns.min-ttl = {least}")
        return value
