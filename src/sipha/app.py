"""Wiring: configuration, transports, the proxy core and its clock, in one asyncio loop.

The core (:mod:`sipha.proxy`) is sans-IO; this module is where bytes meet
sockets and ``now`` meets the loop's monotonic clock.  Every callback from the
transports feeds the core, then *flushes*: sends what the core produced and
re-arms the one timer the core needs (its next deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Coroutine, Iterable
from typing import Any

from sipha.config import Config, ConfigError, parse_address
from sipha.ha import AliveCodes, Monitor, MonitorSettings
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


def build_monitor(config: Config, view: ConfiguredView) -> Monitor:
    """The pair monitor of DESIGN.md §2 over every configured pair."""
    settings = MonitorSettings(
        oos_check=float(config.monitor.oos_check),
        oos_force=float(config.monitor.oos_force),
        alive_codes=AliveCodes.parse(config.monitor.alive_codes),
    )
    return Monitor([view.members(name) for name in view.pairs], settings)


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
    """One sipha instance: transports + proxy core + timer, on the running loop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.transports = TransportManager(self._on_message, self._on_transport_error, self._on_bad_stream)
        self.core: ProxyCore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        """Bind the listen addresses and start proxying."""
        self._loop = asyncio.get_running_loop()
        listens: list[tuple[str, str, int]] = []
        for text in self.config.proxy.listen:
            configured = parse_address(text)
            listens.append((configured.transport, configured.host, configured.port))
        await self.transports.start(listens)
        bound = self.transports.listen_addresses
        view = build_view(self.config, bound)
        self.core = ProxyCore(
            build_settings(self.config, bound), view, monitor=build_monitor(self.config, view)
        )
        for address in bound:
            log.info("listening on %s:%s:%d", address.transport.lower(), address.host, address.port)
        self.core.start(self._now())
        self._flush()

    async def stop(self) -> None:
        """Close every socket and connection."""
        if self._timer is not None:
            self._timer.cancel()
        await self.transports.stop()
        self._stopped.set()

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
        transports = self.transports
        for action in core.drain():
            destination = action.destination
            message = action.message
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
