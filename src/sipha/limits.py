"""``[limits]`` applied: the per-source guard of the dispatcher, the stream connections, the file limit.

At start and on every reload (:class:`sipha.app.ProxyApp`): the guard
(:mod:`sipha.proxy.ratelimit`) gets the new settings with the pair members' IPs,
the core's admission (:mod:`sipha.proxy.admission`) ``max-transactions``, and the
TCP and TLS connection tables their ``max-connections``, ``idle-timeout`` and
``message-timeout`` (open connections included, at their next check).  Each
accepted connection is a file descriptor: the soft ``RLIMIT_NOFILE`` is raised to
cover ``max-connections`` of both transports (within the hard limit), else
``accept`` would fail with EMFILE before the bound is reached; a hard limit too low
is logged, naming both numbers.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from sipha.config import Config, parse_address
from sipha.limitsconfig import parse_network
from sipha.proxy.ratelimit import GuardSettings, canonical_ip

if TYPE_CHECKING:
    from sipha.dispatch import Dispatcher
    from sipha.net.manager import TransportManager

log = logging.getLogger("sipha")

SPARE_FILES: Final = 1024
"""Descriptors beyond the connections: sockets, outbound connections, logs, the admin HTTP."""
_warned: dict[int, int] = {}
"""File limits already logged as too low (wanted -> granted): once, not at every reload."""


def guard_settings(config: Config, resolved: Mapping[str, str] | None = None) -> GuardSettings:
    """``[limits]`` for :class:`sipha.proxy.ratelimit.SourceGuard`, with the pair members' IPs exempt.

    ``resolved``: member host name (lower case) -> its IP in use (:mod:`sipha.hostnames`): a member
    given by name is exempt at the address its requests come from, not by its name.
    """
    limits = config.limits
    names = resolved or {}
    members = set()
    for pair in config.pair:
        for address in (pair.primary, pair.backup):
            host = parse_address(address).host
            members.add(canonical_ip(names.get(host.lower().rstrip("."), host)))
    return GuardSettings(
        rate=limits.source_rate,
        burst=float(limits.source_burst),
        scanner_agents=tuple(word.lower().encode("ascii") for word in limits.scanner_user_agents),
        trusted=tuple(parse_network(text) for text in limits.trusted),
        exempt=frozenset(members),
    )


def apply_limits(
    config: Config,
    dispatch: Dispatcher,
    transports: TransportManager,
    old: Config | None = None,
    *,
    resolved: Mapping[str, str] | None = None,
) -> list[str]:
    """Apply ``[limits]`` (at start, once the transports are started, and on each reload from ``old``).

    What changed since ``old``, one item per option.  The file limit covers ``max-connections``
    for each stream transport in use (listened on, or a pair member's), plus :data:`SPARE_FILES`.
    """
    dispatch.sources.reconfigure(guard_settings(config, resolved))
    limits = config.limits
    dispatch.limit_transactions(limits.max_transactions)
    for context in transports.stream_contexts:
        context.max_connections = limits.max_connections
        context.idle_timeout = limits.idle_timeout
        context.message_timeout = limits.message_timeout
    streams = {
        parse_address(address).transport
        for address in [*config.proxy.listen, *(m for p in config.pair for m in (p.primary, p.backup))]
    } & {"tcp", "tls"}
    if streams:
        raise_file_limit(len(streams) * limits.max_connections + SPARE_FILES)
    if old is None:
        return []
    before = old.limits.model_dump(by_alias=True)
    return [
        f"limits.{key} {before[key]!r} -> {value!r}"
        for key, value in limits.model_dump(by_alias=True).items()
        if before[key] != value
    ]


def raise_file_limit(wanted: int) -> int:
    """Raise the soft limit of open files to ``wanted`` (at most the hard limit); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or (soft >= wanted):
        return soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:  # pragma: no cover - a kernel that refuses its own hard limit
            log.warning("could not raise the limit of open files from %d to %d: %s", soft, target, error)
            return soft
    if target < wanted and _warned.get(wanted) != target:
        _warned[wanted] = target
        log.warning(
            "the limit of open files is %d (hard limit), and [limits] max-connections asks for %d with "
            "the other descriptors: connections beyond it fail (EMFILE); raise the hard limit "
            "(systemd LimitNOFILE=, ulimit -Hn) or lower max-connections",
            target,
            wanted,
        )
    return target
