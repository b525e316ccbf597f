"""Assembly: the objects a configuration describes, and the policy derived from it.

No sockets and no loop: the routing view (docs/design.md §3), the pair monitor
(§2), the proxy core's settings, what a reload changes (§4), and what a worker
process of ``[proxy] workers`` gets from its parent.  The application
(:mod:`sipha.app`) and the worker supervisor (:mod:`sipha.supervisor`) build
from these.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from sipha.admin.telemetry import Telemetry
from sipha.config import Config, ConfigError, parse_address
from sipha.ha import AliveCodes, Monitor, MonitorSettings
from sipha.proxy.affinity import worker_tag
from sipha.proxy.core import ProxyCore, ProxySettings
from sipha.proxy.rules import derive_record_routes
from sipha.proxy.view import ConfiguredView, PairSpec
from sipha.sip import SipUri, parse_uri
from sipha.sip.address import Address, is_wildcard

ListenKey = tuple[str, str, int]
"""A ``[proxy] listen`` entry as (transport, host, port): how reloads compare them."""

WorkerSockets = dict[ListenKey, list[tuple[socket.socket, bool]]]
"""Per ``[proxy] listen`` entry (and :data:`OWN_SOCKETS`): one worker's bound sockets, each with its
IP_RECVERR flag."""

OWN_SOCKETS: Final = ("own", "", 0)
"""The key of a worker's own UDP sockets (one per UDP listen entry, on a port of its own)."""


def build_view(
    config: Config, listen: Iterable[Address], resolved: Mapping[str, str] | None = None
) -> ConfiguredView:
    """The routing view: the proxy's own addresses and the configured pairs.

    ``resolved``: pair members' host names (lower case) -> the IP the driver found for
    each (:class:`sipha.hostnames.MemberNames`); the core knows a member by that IP.
    """
    own: list[tuple[str, int | None]] = [(address.host, address.port) for address in listen]
    if config.proxy.sip_address:
        own += [(config.proxy.sip_address, address.port) for address in listen]
    record_route = parse_uri(config.proxy.record_route)
    if isinstance(record_route, SipUri):
        # The pool FQDN names every instance, on whatever port it is used with.
        own.append((record_route.host_key, record_route.port))
        if record_route.port is None:
            own.append((record_route.host_key, None))
        else:
            # Its Record-Route URI of each transport carries our port of that transport
            # (sipha.proxy.rules.derive_record_routes).
            own += [(record_route.host_key, address.port) for address in listen]
    return ConfiguredView.build(own, pair_specs(config, resolved or {}))


def pair_specs(config: Config, resolved: Mapping[str, str]) -> list[PairSpec]:
    """The configured pairs, each member given by name at the IP ``resolved`` has for it.

    A name without an IP yet stays a name: sends to it fail (``Resolver.withheld``), so
    the member is down until its name resolves (docs/configuration.md, [[pair]]).
    """

    def member(text: str) -> Address:
        address = parse_address(text)
        host = resolved.get(address.host.lower().rstrip("."), address.host)
        return Address(address.transport.upper(), host, address.port)

    return [
        PairSpec(
            pair.name,
            member(pair.primary),
            member(pair.backup),
            serving=pair.serving,
            domains=frozenset(domain.lower() for domain in pair.match.domain),
            fallback=pair.fallback or None,
            mode=pair.mode,
        )
        for pair in config.pair
    ]


def reconfigure_members(
    core: ProxyCore, config: Config, resolved: Mapping[str, str], telemetry: Telemetry | None, now: float
) -> list[str]:
    """A member's name moved to another IP: the core gets the view and monitor a reload would give.

    The pairs whose members kept their addresses keep their monitor state; the others are
    re-probed (their names are returned), as after a reload that changes them.
    """
    view = ConfiguredView.build(core.view.own, pair_specs(config, resolved))
    monitor = build_monitor(config, view, telemetry)
    kept = [] if core.monitor is None else carry_over_pairs(core.monitor, monitor, monitor_settings(config))
    core.reconfigure(core.settings, view, monitor, now)
    return [name for name in monitor.pairs if name not in kept]


def monitor_settings(config: Config) -> MonitorSettings:
    """The pair monitor's settings (docs/design.md §2) from ``[monitor]``."""
    return MonitorSettings(
        oos_check=float(config.monitor.oos_check),
        oos_force=float(config.monitor.oos_force),
        alive_codes=AliveCodes.parse(config.monitor.alive_codes),
        takeover_timeout=config.monitor.takeover_timeout,
    )


def build_monitor(config: Config, view: ConfiguredView, telemetry: Telemetry | None = None) -> Monitor:
    """The pair monitor of docs/design.md §2 over every configured pair.

    With ``telemetry``, each OPTIONS round trip is also recorded there (for /metrics).
    """
    settings = monitor_settings(config)
    pairs = [view.members(name) for name in view.pairs]
    monitor = Monitor(pairs, settings, on_rtt=None if telemetry is None else telemetry.observe_rtt)
    monitor.use_modes({name: spec.mode for name, spec in view.pairs.items()})  # docs/design.md §2.2
    return monitor


def build_settings(
    config: Config, listen: Iterable[Address], *, worker: int | None = None, via_host: str = ""
) -> ProxySettings:
    """The core's settings: our Via sent-by per transport, the Record-Route URI of each transport.

    ``worker``: the index of this worker process when ``[proxy] workers`` > 1 (its branch tag);
    ``via_host``: the host put in Via when not ``sip-address`` as written (``resolve-host``:
    its IP, resolved by the caller).
    """
    via: dict[str, tuple[str, int]] = {}
    for address in listen:
        host = via_host or config.proxy.sip_address or address.host
        if is_wildcard(host):
            problem = f"proxy.sip-address = {config.proxy.sip_address!r}: needed to listen on {address.host}"
            raise ConfigError("proxy.sip-address", [problem])
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        via.setdefault(address.transport.upper(), (host, address.port))
    failover = config.monitor.failover_timeout
    return ProxySettings(
        record_route=config.proxy.record_route,
        via=via,
        # RFC 5658: the Record-Route URI of each transport, the port of its first listen address.
        record_routes=derive_record_routes(config.proxy.record_route, via),
        failover_timeout=failover,
        # The hold limit is derived by the failover policy from the monitor's settings
        # (sipha.proxy.failover.hold_limit).
        overload_rate=float(config.proxy.overload_ctrl_dialog_rate),
        branch_tag="" if worker is None else worker_tag(worker),
    )


def listen_key(text: str) -> ListenKey:
    """A ``[proxy] listen`` entry as (transport, host, port): how reloads compare them."""
    address = parse_address(text)
    return (address.transport, address.host.lower(), address.port)


def describe_changes(old: Config, new: Config) -> list[str]:
    """What a reload changes, one item per option or pair ("monitor.oos-check 5 -> 3")."""
    changes: list[str] = []
    for section in ("proxy", "monitor", "admin", "tls", "dns"):
        before = getattr(old, section).model_dump(by_alias=True)
        after = getattr(new, section).model_dump(by_alias=True)
        for key, value in after.items():
            if before.get(key) != value:
                shown = "(changed)" if key == "token" else f"{before.get(key)!r} -> {value!r}"
                changes.append(f"{section}.{key} {shown}")
    old_pairs = {pair.name: pair for pair in old.pair}
    new_pairs = {pair.name: pair for pair in new.pair}
    for name, pair in new_pairs.items():
        if name not in old_pairs:
            changes.append(f"pair {name} added ({pair.primary}, {pair.backup})")
        elif old_pairs[name] != pair:
            changes.append(f"pair {name} changed")
    changes += [f"pair {name} removed" for name in old_pairs if name not in new_pairs]
    return changes


def carry_over_pairs(old: Monitor, new: Monitor, settings: MonitorSettings) -> list[str]:
    """Put ``old``'s pair monitors into ``new`` for the pairs whose members did not change.

    Their state (active member, timers, counters) is kept and they take ``settings`` from
    their next period on; the names of the pairs kept are returned.  When monitoring is
    turned on or off (oos-check to or from 0) nothing is kept: every pair is re-probed.
    """
    kept: list[str] = []
    for name, pair in new.pairs.items():
        previous = old.pairs.get(name)
        if previous is None or previous.members() != pair.members():
            continue
        if previous.monitoring != settings.monitoring:
            continue
        previous.settings = settings
        new.adopt(previous)
        kept.append(name)
    return kept


@dataclass
class WorkerPlan:
    """What worker ``index`` of ``count`` gets from the parent (``[proxy] workers`` > 1)."""

    index: int
    count: int
    sockets: WorkerSockets
    """Per ``[proxy] listen`` entry: this worker's bound sockets, each with its IP_RECVERR flag."""
    handoff: list[tuple[socket.socket, socket.socket]]
    """The hand-over socket pair of every worker (:func:`sipha.net.workers.handoff_pairs`)."""

    def admin_listen(self, listen: str) -> str:
        """``[admin] listen`` for this worker: worker N serves its own on the port + N."""
        if self.index == 0:
            return listen
        host, _, port = listen.rpartition(":")
        return listen if port == "0" else f"{host}:{int(port) + self.index}"
