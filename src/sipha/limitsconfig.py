"""``[limits]``: what one client may cost sipha (docs/design.md §3, "Sources and connections").

A section of the configuration model (:class:`sipha.config.Config` holds it as
``limits``), kept apart so that the model stays readable.  What it configures:
the per-source guard of :mod:`sipha.proxy.ratelimit` (a token bucket per source
IP, the requests of known scanners dropped) and the stream connections of
:mod:`sipha.net.tcp` (how many, how long idle, how long one message may take to
arrive); :mod:`sipha.limits` applies it at start and on reload.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

SCANNER_USER_AGENTS: Final = ("friendly", "scanner", "sipcli", "sipvicious", "VaxSIPUserAgent", "pplsip")
"""The User-Agent words Kamailio's default configuration (kamailio.cfg, route REQINIT) drops
silently: SIPVicious (``friendly-scanner``), sipcli, VaxSIPUserAgent, pplsip."""
_MAX_AGENT: Final = 64
_MAX_ENTRIES: Final = 256


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``192.0.2.7``, ``192.0.2.0/24``, ``2001:db8::/32``: an IP address or a network (no host bits)."""
    try:
        return ipaddress.ip_network(text.strip("[]") if "/" not in text else text, strict=True)
    except ValueError as error:
        raise ValueError(
            f"{text!r}: expected an IP address or a network in CIDR notation with no host bits set, "
            f"e.g. 192.0.2.7, 192.0.2.0/24 or 2001:db8::/32 ({error})"
        ) from None


class LimitsSection(BaseModel):
    """[limits]: what one client may cost: messages per source, scanners, transactions, connections."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    source_rate: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        alias="source-rate",
        description=(
            "SIP messages per second one source IP may send (a token bucket per IP, per worker); "
            "beyond, they are dropped unanswered; pair members and trusted are never limited; 0 = no limit"
        ),
    )
    source_burst: int = Field(
        default=100,
        ge=1,
        le=1_000_000,
        alias="source-burst",
        description="messages a source IP may send at once above source-rate (the bucket's size)",
    )
    trusted: list[str] = Field(
        default=[],
        max_length=_MAX_ENTRIES,
        description=(
            "source IPs or networks (CIDR) never limited by source-rate nor scanner-user-agents, "
            "besides the pair members (e.g. a gateway or an SBC)"
        ),
    )
    scanner_user_agents: list[str] = Field(
        default=list(SCANNER_USER_AGENTS),
        max_length=_MAX_ENTRIES,
        alias="scanner-user-agents",
        description=(
            "a request whose User-Agent contains one of these words (any case) is dropped unanswered; "
            "[] = none"
        ),
    )
    max_transactions: int = Field(
        default=500_000,
        ge=1_000,
        le=10_000_000,
        alias="max-transactions",
        description=(
            "SIP transactions alive at once per worker (server and client; a call holds about 2 for 32 s, "
            "a few KB): "
            "a request that would start one beyond it gets 503 with Retry-After, without a transaction; "
            "requests outside a dialog from sources neither trusted nor pair members get it from half of it"
        ),
    )
    max_connections: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        alias="max-connections",
        description=(
            "TCP connections open at once (TLS: as many again); when full, the oldest one that never "
            "sent a complete message is closed for a new one, else the new one is refused"
        ),
    )
    idle_timeout: float = Field(
        default=120.0,
        gt=0,
        le=86_400,
        alias="idle-timeout",
        description="s a TCP or TLS connection may stay without traffic before it is closed",
    )
    message_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        alias="message-timeout",
        description=(
            "s a TCP or TLS peer has to complete a SIP message once its first bytes arrived, and an "
            "accepted connection to send its first one; else the connection is closed"
        ),
    )

    @field_validator("trusted")
    @classmethod
    def _check_trusted(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_network(item)
        return value

    @field_validator("scanner_user_agents")
    @classmethod
    def _check_agents(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item.strip() or len(item) > _MAX_AGENT or not item.isascii() or not item.isprintable():
                raise ValueError(
                    f"{item!r}: each entry is a word of printable ASCII, 1-{_MAX_AGENT} characters, "
                    "matched in the User-Agent header field whatever its case"
                )
        return value

    @field_validator("source_burst")
    @classmethod
    def _burst_needs_rate(cls, value: int, info: ValidationInfo) -> int:
        rate = info.data.get("source_rate")  # absent when it failed its own validation (listed already)
        if rate == 0 and value != LimitsSection.model_fields["source_burst"].default:
            raise ValueError("unused while limits.source-rate = 0 (no limit): set source-rate or remove it")
        return value
