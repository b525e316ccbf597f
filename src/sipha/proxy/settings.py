"""What the proxy core needs of the configuration, and what it counts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sipha.proxy.rules import TIMER_C
from sipha.sip import DEFAULT_LIMITS, ParserLimits
from sipha.txn.timers import TimerConfig


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """What the core needs of the configuration."""

    record_route: str
    """The Record-Route URI as configured (the pool FQDN with ;lr)."""
    via: dict[str, tuple[str, int]]
    """Per transport (UDP, TCP, TLS): the host and port put in our Via sent-by."""
    record_routes: Mapping[str, str] = field(default_factory=dict)
    """Per transport (UDP, TCP, TLS): the Record-Route URI of that side of a request (RFC 5658),
    :func:`sipha.proxy.rules.derive_record_routes` of ``record_route`` and our listen addresses.
    Empty: derived the same way from ``record_route`` and ``via`` when the core starts."""
    supported: frozenset[str] = frozenset()
    """Option tags a Proxy-Require may name (§16.3 step 5)."""
    timers: TimerConfig = field(default_factory=TimerConfig)
    timer_c: float = TIMER_C
    limits: ParserLimits = DEFAULT_LIMITS
    failover_timeout: float = 1.0
    """s without any response from a pair member (INVITE: without a provisional one) before
    the pair is re-probed at once and the request held for the member that answers."""
    hold_limit: float | None = None
    """How long a held request waits for a pair to get an active member before 503: a bound
    behind the pair monitor's own (40001 ends every hold at once).  None: derived from
    failover-timeout and the pair's monitor settings (:func:`sipha.proxy.failover.hold_limit`)."""
    overload_rate: float = 0.0
    """``overload-ctrl-dialog-rate``: new INVITEs per second (token bucket, burst = the rate,
    at least 1); over it, 503 with Retry-After.  0 = no limit."""
    branch_tag: str = ""
    """Appended to the branch of every request this core sends (``.w1``: worker 1 of
    ``[proxy] workers``), so that responses reach the worker holding the transaction
    (:mod:`sipha.proxy.affinity`).  Empty with one worker."""


@dataclass(slots=True)
class Counters:
    """What the core counts (exported as metrics by the admin surface)."""

    requests_in: int = 0
    responses_in: int = 0
    parse_errors: int = 0
    requests_refused: int = 0
    requests_forwarded: int = 0
    responses_forwarded: int = 0
    stray_responses_dropped: int = 0
    loops_detected: int = 0
    overload_rejections: int = 0
    """New INVITEs refused with 503 by overload-ctrl-dialog-rate."""
    overload_sheds: int = 0
    """New INVITEs refused with 503 because sipha was behind on its receive queue
    (:attr:`sipha.proxy.core.ProxyCore.overloaded`)."""
    overload_drops: int = 0
    """New INVITEs dropped unparsed because sipha was far behind (:mod:`sipha.proxy.overload`)."""
    drain_rejections: int = 0
    """New out-of-dialog requests refused with 503 while draining (SIGTERM)."""
    reoffered: int = 0
    """Ringing INVITEs moved from a member that died to the member that took over."""
    target_failovers: int = 0
    """Requests moved from an RFC 3263 target that failed to the next one (docs/design.md §3)."""
    targets_unresolved: int = 0
    """Lookups of a next hop's host name that gave no target (its request got 408)."""
    fallback_routed: int = 0
    """New endpoint requests of a pair out of service sent to its fallback pair (docs/deployment.md)."""
