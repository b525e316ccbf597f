"""Wiring: configuration, transports, the proxy core and its clock, in one asyncio loop.

The core (:mod:`sipha.proxy`) is sans-IO; this module is where bytes meet
sockets and ``now`` meets the loop's monotonic clock.  Every callback from the
transports feeds the core, then *flushes*: sends what the core produced and
re-arms the one timer the core needs (its next deadline).

The admin HTTP server (:mod:`sipha.admin`) runs in the same loop and reads the
core's state when asked; the only per-message work done for it is counting the
final responses sent upstream by method and class (a dict increment).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Coroutine, Iterable
from typing import Any

from sipha.admin.server import AdminServer
from sipha.admin.status import DemoControl
from sipha.admin.telemetry import ObservedMonitor, Telemetry
from sipha.config import Config, ConfigError, parse_address
from sipha.ha import AliveCodes, Monitor, MonitorSettings, check_own_address
from sipha.net.manager import TransportManager
from sipha.proxy.core import ProxyCore, ProxySettings
from sipha.proxy.via import response_fallback_destination
from sipha.proxy.view import ConfiguredView, PairSpec
from sipha.sip import Response, SipParseError, SipUri, parse_uri
from sipha.txn import Address

log = logging.getLogger("sipha")


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def build_view(config: Config, listen: Iterable[Address]) -> ConfiguredView:
    """The routing view: the proxy's own addresses and the configured pairs."""
    own: list[tuple[str, int | None]] = [(address.host, address.port) for address in listen]
    if config.proxy.sip_address:
        own += [(config.proxy.sip_address, address.port) for address in listen]
    record_route = parse_uri(config.proxy.record_route)
    if isinstance(record_route, SipUri):
        # The pool FQDN names every instance, on whatever port it is used with.
        own.append((record_route.host_key, record_route.port))
        if record_route.port is None:
            own.append((record_route.host_key, None))
    pairs = []
    for pair in config.pair:
        primary = parse_address(pair.primary)
        backup = parse_address(pair.backup)
        pairs.append(
            PairSpec(
                pair.name,
                Address(primary.transport.upper(), primary.host, primary.port),
                Address(backup.transport.upper(), backup.host, backup.port),
                serving=pair.serving,
                domains=frozenset(domain.lower() for domain in pair.match.domain),
            )
        )
    return ConfiguredView.build(own, pairs)


def build_monitor(config: Config, view: ConfiguredView, telemetry: Telemetry | None = None) -> Monitor:
    """The pair monitor of DESIGN.md §2 over every configured pair.

    With ``telemetry``, each OPTIONS round trip is also recorded there (for /metrics).
    """
    settings = MonitorSettings(
        oos_check=float(config.monitor.oos_check),
        oos_force=float(config.monitor.oos_force),
        alive_codes=AliveCodes.parse(config.monitor.alive_codes),
    )
    pairs = [view.members(name) for name in view.pairs]
    if telemetry is None:
        return Monitor(pairs, settings)
    return ObservedMonitor(pairs, settings, telemetry=telemetry)


def build_settings(config: Config, listen: Iterable[Address]) -> ProxySettings:
    """The core's settings: our Via sent-by per transport, the Record-Route URI."""
    via: dict[str, tuple[str, int]] = {}
    for address in listen:
        host = config.proxy.sip_address or address.host
        if _is_wildcard(host):
            problem = f"proxy.sip-address = {config.proxy.sip_address!r}: needed to listen on {address.host}"
            raise ConfigError("proxy.sip-address", [problem])
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        via.setdefault(address.transport.upper(), (host, address.port))
    failover = config.monitor.failover_timeout
    return ProxySettings(
        record_route=config.proxy.record_route,
        via=via,
        failover_timeout=failover,
        # A held request waits until the pair is out of service (40001: the other member
        # silent for oos-force too) at the latest, then gets 503; one second of margin.
        hold_limit=failover + config.monitor.oos_force + 1.0,
    )


class ProxyApp:
    """One sipha instance: transports + proxy core + timer + admin HTTP, on the running loop.

    ``admin``: serve the admin HTTP on ``[admin] listen`` (``/healthz``, ``/status``,
    ``/metrics``, the dashboard).  ``demo``: the hooks of ``sipha demo`` (the
    dashboard's switchover button).
    """

    def __init__(self, config: Config, *, admin: bool = True, demo: DemoControl | None = None) -> None:
        self.config = config
        self.transports = TransportManager(self._on_message, self._on_transport_error, self._on_bad_stream)
        self.core: ProxyCore | None = None
        self.telemetry = Telemetry()
        self.admin: AdminServer | None = None
        self._admin_enabled = admin
        self._demo = demo
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._started_at: float | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        """Bind the listen addresses and the admin HTTP, and start proxying.

        OSError when an address cannot be bound; nothing is left listening then.
        """
        self._loop = asyncio.get_running_loop()
        listens: list[tuple[str, str, int]] = []
        for text in self.config.proxy.listen:
            configured = parse_address(text)
            listens.append((configured.transport, configured.host, configured.port))
        await self.transports.start(listens)
        bound = self.transports.listen_addresses
        try:
            view = build_view(self.config, bound)
            core = ProxyCore(
                build_settings(self.config, bound),
                view,
                monitor=build_monitor(self.config, view, self.telemetry),
            )
            if self._admin_enabled:
                admin = AdminServer(
                    self, self.config.admin.listen, token=self.config.admin.token, demo=self._demo
                )
                await admin.start()
                self.admin = admin
        except BaseException:
            await self.transports.stop()
            raise
        self.core = core
        self._started_at = self._now()
        for address in bound:
            log.info("listening on %s:%s:%d", address.transport.lower(), address.host, address.port)
        await self._check_own_address(bound)
        self.core.start(self._now())
        self._flush()

    async def _check_own_address(self, bound: list[Address]) -> None:
        """Event 40000 when this instance is not among the pool's addresses (the seed's check).

        The pool is what the record-route host (the pool FQDN) resolves to, at the
        record-route port (5060 by default); this instance is its listen addresses and
        sip-address.  Only logged: the instance still serves.
        """
        record_route = parse_uri(self.config.proxy.record_route)
        if not isinstance(record_route, SipUri):  # pragma: no cover - the config checked it
            return
        try:
            hosts = await self.transports.resolve(record_route.host_key)
        except OSError as error:
            log.warning("event 40000: cannot resolve the pool address %s: %s", record_route.host, error)
            return
        port = record_route.port or 5060
        pool = [Address("UDP", host, port) for host in hosts]
        ours = list(bound)
        if self.config.proxy.sip_address:
            ours += [Address(a.transport, self.config.proxy.sip_address, a.port) for a in bound]
        event = check_own_address(pool, ours)
        if event is not None:
            log.warning("event %d: %s", event.event_id, event.message)

    async def stop(self) -> None:
        """Close the admin HTTP, every socket and connection."""
        if self._timer is not None:
            self._timer.cancel()
        admin, self.admin = self.admin, None
        if admin is not None:
            await admin.stop()
        await self.transports.stop()
        self._stopped.set()

    # ------------------------------------------------------------------ read by the admin surface

    @property
    def listen_addresses(self) -> list[Address]:
        """The bound SIP listen addresses."""
        return self.transports.listen_addresses

    @property
    def started_at(self) -> float | None:
        """Loop time of the start (None before)."""
        return self._started_at

    def monotonic(self) -> float:
        """The loop's clock, which the core runs on."""
        return self._now()

    async def run(self) -> None:
        """Start, then serve until SIGTERM or SIGINT."""
        await self.start()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # pragma: no cover - non-Unix
                loop.add_signal_handler(signum, self._request_stop)
        await self._stopped.wait()

    def _request_stop(self) -> None:
        log.info("stopping")
        assert self._loop is not None  # noqa: S101 - set in start()
        self._loop.create_task(self.stop())

    # ------------------------------------------------------------------ transport callbacks

    def _now(self) -> float:
        assert self._loop is not None  # noqa: S101 - set in start()
        return self._loop.time()

    def _on_message(self, data: bytes, source: Address, local: Address) -> None:
        del local
        if self.core is None:
            return
        self.core.receive(data, source, self._now(), stream=source.reliable)
        self._flush()

    def _on_transport_error(self, destination: Address, error: OSError | str) -> None:
        del error
        if self.core is None:
            return
        self.core.transport_error(destination, self._now())
        self._flush()

    def _on_bad_stream(self, error: SipParseError, source: Address) -> None:
        if self.core is None:
            return
        self.core.bad_stream(error, source, self._now())
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.core is None:
            return
        self.core.handle_timers(self._now())
        self._flush()

    def _flush(self) -> None:
        """Send what the core produced and arm the timer for its next deadline."""
        core = self.core
        if core is None:
            return
        for event in core.drain_events():
            if event.event_id is not None:
                log.warning("event %d: %s", event.event_id, event.message)
            else:
                log.info("%s", event.message)
            self.telemetry.record_event(event)
        transports = self.transports
        count_final = self.telemetry.count_final
        for action in core.drain():
            destination = action.destination
            message = action.message
            if action.key is not None and type(message) is Response and message.status >= 200:  # noqa: PLR2004
                # A final response of a server transaction: one transaction answered (/metrics).
                with contextlib.suppress(SipParseError):
                    count_final(message.cseq.method, message.status)
            if (
                destination.reliable
                and isinstance(message, Response)
                and not transports.has_connection(destination)
            ):
                # §18.2.2: the request's connection is gone: "the server SHOULD open a
                # connection to the IP address in the received parameter ... using the port
                # in the sent-by value".
                with contextlib.suppress(SipParseError):
                    destination = response_fallback_destination(message.top_via, destination)
            transports.send(message.to_bytes(), destination)
        deadline = core.next_deadline()
        if deadline is None:
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return  # the armed timer fires first; it re-arms for what is left
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None  # noqa: S101 - set in start()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on the standard library's event loop (epoll on Linux).

    Not uvloop: libuv stops watching a socket for good when poll reports an error
    condition (POLLERR), and that is exactly how the kernel signals the ICMP errors
    sipha asks for with IP_RECVERR (a dead UDP peer's "port unreachable", RFC 3261
    §18.4).  One gone phone would leave the proxy deaf on UDP.  The UDP path reads
    raw sockets in batches, so the standard loop costs little there.
    """
    asyncio.run(main)


def run(config: Config) -> None:
    """``sipha run``: serve until SIGTERM."""
    run_loop(ProxyApp(config).run())
