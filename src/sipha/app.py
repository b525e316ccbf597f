"""Wiring: configuration, transports, the proxy core and its clock, in one asyncio loop.

The core (:mod:`sipha.proxy`) is sans-IO; this module is where bytes meet
sockets and ``now`` meets the loop's monotonic clock.  Every callback from the
transports feeds the core, then *flushes*: sends what the core produced and
re-arms the one timer the core needs (its next deadline).  The per-message part
of that is :class:`sipha.dispatch.Dispatcher` (compiled with the core; a
batch of datagrams is flushed once).

The admin HTTP server (:mod:`sipha.admin`) runs in the same loop and reads the
core's state when asked; the only per-message work done for it is counting the
final responses sent upstream by method and class (a dict increment).

Lifecycle (docs/design.md §4): SIGTERM/SIGINT drain (new out-of-dialog requests get 503,
transactions and calls under way finish, bounded by :data:`DRAIN_LIMIT`, exit 0); a
second one stops at once.  SIGHUP reloads the configuration file; a bad one is refused
and the running configuration kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from sipha.admin.server import AdminServer
from sipha.admin.status import DemoControl
from sipha.admin.telemetry import ObservedMonitor, Telemetry
from sipha.config import Config, ConfigError, load_config, parse_address
from sipha.dispatch import Dispatcher
from sipha.ha import (
    AliveCodes,
    HaEvent,
    MemberBecameActive,
    Monitor,
    MonitorSettings,
    PairUnknown,
    check_own_address,
)
from sipha.net.manager import (
    DEFAULT_UDP_BUFFER,
    TransportManager,
    check_listen_transport,
    resolve_listen,
)
from sipha.net.udp import open_udp_socket
from sipha.net.workers import Handoff, bind_shared, handoff_pairs
from sipha.proxy.affinity import worker_tag
from sipha.proxy.core import ProxyCore, ProxySettings
from sipha.proxy.view import ConfiguredView, PairSpec
from sipha.sip import SipParseError, SipUri, parse_uri
from sipha.sip.address import SIP_PORT, Address, is_wildcard

log = logging.getLogger("sipha")

DRAIN_LIMIT: Final = 32.0
"""SIGTERM: the longest wait for transactions and calls under way (Timer F: 64*T1), then exit
anyway.  A systemd TimeoutStopSec must be longer (docs/sipha.service: 40 s)."""
DRAIN_POLL: Final = 0.05
"""How often a drain looks whether what it waits for is done."""


class _Source(enum.Enum):
    UNKNOWN = "unknown"


UNKNOWN_SOURCE: Final = _Source.UNKNOWN
"""``config_path`` when the caller did not say where the configuration came from: SIGHUP
then cannot reload (rather than reload something else)."""

ConfigPath = Path | None | Literal[_Source.UNKNOWN]
"""A configuration file, None for the embedded default, or :data:`UNKNOWN_SOURCE`."""


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
    """The pair monitor of docs/design.md §2 over every configured pair.

    With ``telemetry``, each OPTIONS round trip is also recorded there (for /metrics).
    """
    settings = _monitor_settings(config)
    pairs = [view.members(name) for name in view.pairs]
    if telemetry is None:
        return Monitor(pairs, settings)
    return ObservedMonitor(pairs, settings, telemetry=telemetry)


def build_settings(config: Config, listen: Iterable[Address], *, worker: int | None = None) -> ProxySettings:
    """The core's settings: our Via sent-by per transport, the Record-Route URI.

    ``worker``: the index of this worker process when ``[proxy] workers`` > 1 (its branch tag).
    """
    via: dict[str, tuple[str, int]] = {}
    for address in listen:
        host = config.proxy.sip_address or address.host
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
        failover_timeout=failover,
        # A held request waits until the pair is out of service (40001: the other member
        # silent for oos-force, or the takeover window over) at the latest, then gets 503;
        # the monitor ends the holds itself, this is the bound behind it (one second of margin).
        hold_limit=failover + max(config.monitor.oos_force, config.monitor.takeover_timeout) + 1.0,
        overload_rate=float(config.proxy.overload_ctrl_dialog_rate),
        branch_tag="" if worker is None else worker_tag(worker),
    )


def _listen_key(text: str) -> tuple[str, str, int]:
    """A ``[proxy] listen`` entry as (transport, host, port): how reloads compare them."""
    address = parse_address(text)
    return (address.transport, address.host.lower(), address.port)


def describe_changes(old: Config, new: Config) -> list[str]:
    """What a reload changes, one item per option or pair ("monitor.oos-check 5 -> 3")."""
    changes: list[str] = []
    for section in ("proxy", "monitor", "admin"):
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
    sockets: dict[tuple[str, str, int], list[tuple[socket.socket, bool]]]
    """Per ``[proxy] listen`` entry: this worker's bound sockets, each with its IP_RECVERR flag."""
    handoff: list[tuple[socket.socket, socket.socket]]
    """The hand-over socket pair of every worker (:func:`sipha.net.workers.handoff_pairs`)."""


class ProxyApp:
    """One sipha instance: transports + proxy core + timer + admin HTTP, on the running loop.

    ``admin``: serve the admin HTTP on ``[admin] listen`` (``/healthz``, ``/status``,
    ``/metrics``, the dashboard).  ``demo``: the hooks of ``sipha demo`` (the
    dashboard's switchover button).
    """

    def __init__(
        self,
        config: Config,
        *,
        admin: bool = True,
        demo: DemoControl | None = None,
        config_path: ConfigPath = UNKNOWN_SOURCE,
        worker: WorkerPlan | None = None,
    ) -> None:
        self.config = config
        self.worker = worker
        """Set in a worker process of ``[proxy] workers`` > 1: its index, sockets, hand-over."""
        self._handoff: Handoff | None = None
        self._own_addresses: frozenset[Address] = frozenset()
        """A worker's own UDP addresses (see :func:`bind_worker_sockets`)."""
        self.config_path: ConfigPath = config_path
        """Where SIGHUP re-reads the configuration: a file, None (the embedded default)."""
        self.telemetry = Telemetry()
        self._dispatch = Dispatcher(on_event=self._log_event, count_final=self.telemetry.count_final)
        self.transports = TransportManager(
            self._dispatch.on_message,
            self._on_transport_error,
            self._on_bad_stream,
            on_batch_end=self._dispatch.on_batch_end,
        )
        self._dispatch.transports = self.transports
        self.core: ProxyCore | None = None
        self.admin: AdminServer | None = None
        self._admin_enabled = admin
        self._demo = demo
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._started_at: float | None = None
        self._stopped = asyncio.Event()
        self._stopping = False
        self._draining = False
        self._tasks: set[asyncio.Task[object]] = set()
        self._reload_lock = asyncio.Lock()
        # [proxy] listen entry -> the addresses it bound (a host name may bind several).
        self._bound: dict[tuple[str, str, int], list[Address]] = {}

    async def start(self) -> None:
        """Bind the listen addresses and the admin HTTP, and start proxying.

        OSError when an address cannot be bound; nothing is left listening then.
        """
        self._loop = asyncio.get_running_loop()
        self._dispatch.clock = self._loop.time
        self._dispatch.arm_timer = self._arm_timer
        await self.transports.start([])
        worker = self.worker
        try:
            if worker is not None:
                # This worker's own UDP sockets first: the first of a family is the one the
                # transports send from and the core puts in Via, so that responses come back
                # to this worker directly rather than through whichever worker reads the
                # shared port.
                for sock, recverr in worker.sockets.get(OWN_SOCKETS, []):
                    own = await self.transports.adopt_listen(sock, recverr=recverr)
                    self._own_addresses = self._own_addresses | {own}
            for text in self.config.proxy.listen:
                key = _listen_key(text)
                if worker is not None:
                    self._bound[key] = [
                        await self.transports.adopt_listen(sock, recverr=recverr)
                        for sock, recverr in worker.sockets[key]
                    ]
                    continue
                configured = parse_address(text)
                self._bound[key] = await self.transports.add_listen(
                    configured.transport, configured.host, configured.port
                )
        except BaseException:
            await self.transports.stop()
            raise
        bound = self.transports.listen_addresses
        try:
            view = build_view(self.config, bound)
            core = ProxyCore(
                build_settings(self.config, bound, worker=None if worker is None else worker.index),
                view,
                monitor=build_monitor(self.config, view, self.telemetry),
            )
            if self._admin_enabled:
                admin = AdminServer(
                    self, self._admin_listen(), token=self.config.admin.token, demo=self._demo
                )
                await admin.start()
                self.admin = admin
        except BaseException:
            await self.transports.stop()
            raise
        dispatch = self._dispatch
        if worker is not None:
            self._handoff = Handoff(
                self._loop,
                worker.index,
                worker.handoff,
                dispatch.on_handed_over,
                on_batch_end=dispatch.on_batch_end,
                on_send=dispatch.on_handed_send,
                on_pair=dispatch.on_pair_news,
            )
            dispatch.handoff = self._handoff
            dispatch.worker_index = worker.index
            dispatch.worker_count = worker.count
            dispatch.own_addresses = self._own_addresses
        self.core = dispatch.core = core
        self._started_at = self._now()
        for address in bound:
            log.info("listening on %s", _address_text(address))
        await self._check_own_address(bound)
        self.core.start(self._now())
        self._flush()
        self._spawn(self._collect_garbage_when_idle())

    async def _collect_garbage_when_idle(self) -> None:
        """The cyclic garbage collection :func:`tune_gc` left out, when it costs nothing."""
        last = self._now()
        while True:
            await asyncio.sleep(IDLE_COLLECTION_EVERY / 4)
            core = self.core
            if core is not None and collect_when_idle(core.contexts, self._now(), last):
                found = gc.collect()
                last = self._now()
                if found:
                    log.debug("idle garbage collection: %d unreachable objects freed", found)

    def _admin_listen(self) -> str:
        """``[admin] listen``; worker N of ``[proxy] workers`` serves its own on the port + N."""
        listen = self.config.admin.listen
        worker = self.worker
        if worker is None or worker.index == 0:
            return listen
        host, _, port = listen.rpartition(":")
        return listen if port == "0" else f"{host}:{int(port) + worker.index}"

    async def _check_own_address(self, bound: list[Address]) -> None:
        """Event 40000 when this instance is not among the pool's addresses (docs/design.md §4).

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
        port = record_route.port or SIP_PORT
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
        if self._handoff is not None:
            self._handoff.close()
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

    def transport_counters(self) -> dict[str, int]:
        """The transports' counters, and with ``[proxy] workers`` the hand-over's (for /metrics)."""
        counters = self.transports.stats.as_dict()
        handoff = self._handoff
        if handoff is not None:
            counters["handoff_out"] = handoff.handed_over
            counters["handoff_in"] = handoff.received
            counters["handoff_drops"] = handoff.dropped
        return counters

    async def run(self) -> None:
        """Start, then serve: SIGTERM/SIGINT drain then stop (twice: at once), SIGHUP reloads."""
        await self.start()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):  # pragma: no cover - non-Unix
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._on_stop_signal, signum)
            loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        try:
            await self._stopped.wait()
        finally:
            with contextlib.suppress(NotImplementedError, ValueError, RuntimeError):
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(signum)
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coroutine: Coroutine[Any, Any, object]) -> None:
        assert self._loop is not None  # noqa: S101 - set in start()
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_stop_signal(self, signum: int = signal.SIGTERM) -> None:
        name = signal.Signals(signum).name
        core = self.core
        if self._draining or core is None:
            if not self._stopping:
                cut = 0 if core is None else core.under_way
                log.warning("%s again: stopping at once (%d transactions under way cut)", name, cut)
                self._stopping = True
                self._spawn(self.stop())
            return
        self._draining = True
        log.info("%s: draining: %d transactions under way, %d calls up", name, core.under_way, core.calls)
        core.start_draining()
        self._spawn(self.drain_and_stop())

    async def drain_and_stop(self, limit: float = DRAIN_LIMIT) -> None:
        """Drain (new out-of-dialog requests get 503), wait for what is under way, then stop.

        Waits until the core has no transaction under way and no call set up through
        it (its BYE not seen yet), for ``limit`` s at most; then stops either way.
        """
        core = self.core
        if core is None:
            await self.stop()
            return
        core.start_draining()
        self._draining = True
        started = self._now()
        while core.under_way or core.calls:
            if self._now() - started >= limit:
                log.warning(
                    "drain limit of %g s reached: stopping with %d transactions under way cut and %d "
                    "calls up (their next in-dialog requests will not reach this instance)",
                    limit,
                    core.under_way,
                    core.calls,
                )
                break
            await asyncio.sleep(DRAIN_POLL)
        else:
            log.info(
                "drained, exiting (%.1f s; %d new requests refused meanwhile)",
                self._now() - started,
                core.counters.drain_rejections,
            )
        if not self._stopping:
            self._stopping = True
            await self.stop()

    # ------------------------------------------------------------------ SIGHUP: reload

    def _on_reload_signal(self) -> None:
        self._spawn(self.reload())

    async def reload(self) -> bool:
        """Re-read the configuration file and apply it; False when refused (old one kept)."""
        async with self._reload_lock:
            path = self.config_path
            if path is UNKNOWN_SOURCE:
                log.error("SIGHUP: cannot reload: the configuration file is not known to this process")
                return False
            source = "the embedded default" if path is None else str(path)
            problems: list[str] = []
            try:
                config = load_config(path)
            except ConfigError as error:
                problems = error.problems
            if problems:
                log.error(
                    "SIGHUP: configuration %s refused, keeping the running one (%d problems):",
                    source,
                    len(problems),
                )
                for problem in problems:
                    log.error("  %s", problem)
                return False
            failure: Exception | None = None
            try:
                changes = await self.apply_config(config)
            except (OSError, ValueError, ConfigError) as error:
                failure = error
            if failure is not None:
                log.error(
                    "SIGHUP: configuration %s not applied, keeping the running one: %s", source, failure
                )
                return False
            if changes:
                log.info("configuration reloaded from %s: %s", source, "; ".join(changes))
            else:
                log.info("configuration reloaded from %s: nothing changed", source)
            return True

    async def apply_config(self, config: Config) -> list[str]:
        """Apply ``config`` while running; what changed.  Transactions under way go on.

        New listen addresses are bound first: if one cannot be, nothing changes (OSError).
        Then the core gets new settings, routing view and monitor (pairs whose members are
        unchanged keep their monitor state), and removed listen addresses are closed.
        """
        core = self.core
        if core is None:
            raise RuntimeError("not started")
        old = self.config
        changes = describe_changes(old, config)
        wanted = {_listen_key(text): text for text in config.proxy.listen}
        if self.worker is not None and set(wanted) != set(self._bound):
            raise ValueError(
                "proxy.listen cannot change on reload when proxy.workers > 1 (the parent binds the"
                " shared sockets): restart sipha to apply it"
            )
        if old.proxy.workers != config.proxy.workers:
            changes.append("proxy.workers takes effect at the next restart")
        added: dict[tuple[str, str, int], list[Address]] = {}
        try:
            for key, text in wanted.items():
                if key not in self._bound:
                    configured = parse_address(text)
                    added[key] = await self.transports.add_listen(
                        configured.transport, configured.host, configured.port
                    )
            bound_map = {key: self._bound.get(key) or added[key] for key in wanted}
            bound = [address for addresses in bound_map.values() for address in addresses]
            view = build_view(config, bound)
            settings = build_settings(config, bound)
            monitor = build_monitor(config, view, self.telemetry)
        except BaseException:
            for addresses in added.values():
                for address in addresses:
                    self.transports.remove_listen(address)
            raise
        kept: list[str] = []
        if core.monitor is not None:
            kept = carry_over_pairs(core.monitor, monitor, _monitor_settings(config))
        reprobed = [name for name in monitor.pairs if name not in kept and name in view.pairs]
        reprobed = [name for name in reprobed if core.monitor is not None and name in core.monitor.pairs]
        now = self._now()
        core.reconfigure(settings, view, monitor, now)
        for key, addresses in self._bound.items():
            if key not in wanted:
                for address in addresses:
                    self.transports.remove_listen(address)
                    log.info("no longer listening on %s", _address_text(address))
        for addresses in added.values():
            for address in addresses:
                log.info("listening on %s", _address_text(address))
        self._bound = bound_map
        self.config = config
        if reprobed:
            changes.append(f"re-probing pairs {', '.join(reprobed)} (members or monitoring changed)")
        if old.admin != config.admin:
            changes.append("admin changes take effect at the next restart")
        self._flush()
        return changes

    # ------------------------------------------------------------------ transport callbacks

    def _now(self) -> float:
        assert self._loop is not None  # noqa: S101 - set in start()
        return self._loop.time()

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
        self._dispatch.timer_at = None
        if self.core is None:
            return
        # Messages already received come before timeouts: under load an OPTIONS answer
        # (or any response) can wait in the socket buffer behind a backlog, and a timer
        # judged first would take it for silence (a false failover, then 503s).
        self.transports.read_pending()
        if self._handoff is not None:
            self._handoff.read(20_000)
        self.core.handle_timers(self._now())
        self._flush()

    def _flush(self) -> None:
        """Send what the core produced and arm the timer for its next deadline."""
        self._dispatch.flush()

    def _arm_timer(self, deadline: float) -> None:
        """(Re-)arm the core's one timer at ``deadline`` (the dispatcher's flush asks)."""
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None  # noqa: S101 - set in start()
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _log_event(self, event: HaEvent) -> None:
        """A pair monitor event: the log, the dashboard's recent events, and the other workers."""
        if event.event_id is not None:
            log.warning("event %d: %s", event.event_id, event.message)
        else:
            log.info("%s", event.message)
        self.telemetry.record_event(event)
        handoff = self._handoff
        if handoff is not None:
            # A switch one worker decides holds for every worker (docs/design.md §5: one instance,
            # whatever `workers` is); news that came from another worker is not passed on again.
            if isinstance(event, MemberBecameActive) and event.reason != "worker":
                handoff.broadcast_pair(event.pair, "active", event.member.role, event.at)
            elif isinstance(event, PairUnknown) and event.member is not None and event.reason != "worker":
                core = self.core
                what = "gone" if core is not None and core.gone(event.member) else "lost"
                handoff.broadcast_pair(event.pair, what, event.member.role, event.at)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on the standard library's event loop (epoll on Linux).

    Not uvloop: libuv stops watching a socket for good when poll reports an error
    condition (POLLERR), and that is exactly how the kernel signals the ICMP errors
    sipha asks for with IP_RECVERR (a dead UDP peer's "port unreachable", RFC 3261
    §18.4).  One gone phone would leave the proxy deaf on UDP.  The UDP path reads
    raw sockets in batches, so the standard loop costs little there.
    """
    tune_gc()
    asyncio.run(main)


def tune_gc() -> None:
    """No automatic cyclic garbage collection: reference counting frees what sipha allocates.

    A proxy at a few thousand calls/s holds tens of thousands of transactions (kept up
    to 32 s, some 140 tracked objects per call): one full collection then scans millions
    of objects and stops the event loop for seconds, and the young ones cost ~20 % of the
    CPU (0.52 -> 0.42 ms per call measured at 1,500 calls/s).  The proxy core makes no
    reference cycles (tests/proxy/test_no_cycles.py); what the event loop or the admin
    HTTP may leave in cycles is collected when the proxy is idle (:func:`collect_when_idle`).
    Everything imported so far is frozen out of collection.
    """
    gc.collect()
    gc.freeze()
    gc.disable()


IDLE_COLLECTION_EVERY: Final = 60.0
"""At most this often (s), a full garbage collection while no transaction is under way."""


def collect_when_idle(transactions_alive: int, now: float, last: float) -> bool:
    """Whether to collect now: nothing alive to scan, and not collected for a while."""
    return transactions_alive == 0 and now - last >= IDLE_COLLECTION_EVERY


def _address_text(address: Address) -> str:
    return f"{address.transport.lower()}:{address.host}:{address.port}"


def _monitor_settings(config: Config) -> MonitorSettings:
    return MonitorSettings(
        oos_check=float(config.monitor.oos_check),
        oos_force=float(config.monitor.oos_force),
        alive_codes=AliveCodes.parse(config.monitor.alive_codes),
        takeover_timeout=config.monitor.takeover_timeout,
    )


def run(config: Config, config_path: ConfigPath = UNKNOWN_SOURCE) -> None:
    """``sipha run``: serve until SIGTERM (drained), reloading ``config_path`` on SIGHUP.

    ``config_path``: the file ``config`` was read from, None for the embedded default.
    With ``[proxy] workers`` > 1, this process becomes the parent of the workers
    (:func:`run_workers`).
    """
    if config.proxy.workers > 1:
        run_workers(config, config_path)
        return
    run_loop(ProxyApp(config, config_path=config_path).run())


WORKER_START_GRACE: Final = 5.0
"""A worker that dies sooner than this after its start is not restarted: the parent stops."""

WorkerSockets = dict[tuple[str, str, int], list[tuple[socket.socket, bool]]]
OWN_SOCKETS: Final = ("own", "", 0)
"""The key of a worker's own UDP sockets (one per UDP listen entry, on a port of its own)."""


def bind_worker_sockets(config: Config, count: int) -> list[WorkerSockets]:
    """Every worker's sockets, bound now (SO_REUSEPORT, one port per listen entry for all).

    Each worker also gets a UDP socket of its own per UDP listen entry, on a port the
    kernel picks (under :data:`OWN_SOCKETS`): it sends from it and names it in Via, so
    the SIP servers' responses reach the worker holding their transaction directly (the
    shared port then carries only requests, and one worker reading a busy sender's
    datagrams is not also reading all the answers).
    OSError or ValueError (a transport not served) as ``sipha run`` would raise them;
    nothing stays bound then.
    """
    for text in config.proxy.listen:
        check_listen_transport(parse_address(text).transport)
    plans: list[WorkerSockets] = [{} for _ in range(count)]
    try:
        for text in config.proxy.listen:
            configured = parse_address(text)
            family, ip = resolve_listen(configured.transport, configured.host, configured.port)
            port = configured.port
            for plan in plans:
                sock, recverr = bind_shared(
                    configured.transport, family, ip, port, udp_buffer=DEFAULT_UDP_BUFFER
                )
                port = sock.getsockname()[1]  # port 0: the first bind picks the port for all
                plan[_listen_key(text)] = [(sock, recverr)]
                if configured.transport.upper() == "UDP":
                    own = open_udp_socket(family, ip, 0, buffer_size=DEFAULT_UDP_BUFFER, reuse_address=False)
                    plan.setdefault(OWN_SOCKETS, []).append(own)
    except BaseException:
        for plan in plans:
            for sockets in plan.values():
                for sock, _ in sockets:
                    sock.close()
        raise
    return plans


def run_workers(config: Config, config_path: ConfigPath) -> None:
    """The parent of ``[proxy] workers``: bind, start the workers, pass signals on, restart.

    Each worker is a whole sipha instance (core, pair monitor, admin HTTP on the admin
    port + its index) in its own process; the parent only holds the sockets, so that a
    worker that dies is restarted on the same ones with nothing lost in their buffers.
    SIGTERM/SIGINT/SIGHUP go to every worker; the parent exits when they all have.
    Raises OSError when a worker cannot start (the others are stopped then).
    """
    count = config.proxy.workers
    plans = bind_worker_sockets(config, count)
    pairs = handoff_pairs(count)
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, started at)
    stopping = False
    failure: str | None = None

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for index in range(count):
        pid = _fork_worker(config, config_path, WorkerPlan(index, count, plans[index], pairs), plans)
        children[pid] = (index, time.monotonic())
    log.info("started %d workers (pids %s)", count, ", ".join(str(pid) for pid in children))
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:  # pragma: no cover - every child is in `children`
            break
        index, started = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            continue
        if time.monotonic() - started < WORKER_START_GRACE:
            failure = f"worker {index} exited with status {code} at start (see its log lines above)"
            stopping = True
            forward(signal.SIGTERM, None)
            continue
        log.error("worker %d (pid %d) exited with status %d: restarting it", index, pid, code)
        new = _fork_worker(config, config_path, WorkerPlan(index, count, plans[index], pairs), plans)
        children[new] = (index, time.monotonic())
    if failure is not None:
        raise OSError(failure)
    log.info("all workers exited")


def _fork_worker(
    config: Config, config_path: ConfigPath, plan: WorkerPlan, every: list[WorkerSockets]
) -> int:
    """Start worker ``plan.index`` in a child process; its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:  # the child: never returns into the parent's code
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        # Its own process group: a Ctrl-C at a terminal (or `timeout`) signals the parent's
        # group, and the parent passes the signal on once; a second copy would stop the
        # worker at once instead of draining it.
        os.setpgid(0, 0)
        for other in every:
            if other is not plan.sockets:
                for sockets in other.values():
                    for sock, _ in sockets:
                        sock.close()
        prefix = f"worker {plan.index}: "
        for handler in logging.getLogger().handlers:
            handler.addFilter(_WorkerLogPrefix(prefix))
        run_loop(ProxyApp(config, config_path=config_path, worker=plan).run())
    except BaseException:  # whatever it is, the child must not return into the parent's code
        log.exception("worker %d failed", plan.index)
        code = 1
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class _WorkerLogPrefix(logging.Filter):
    """Prefixes a worker's log lines with ``worker N:`` (text and JSON formats alike)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "sipha_worker_prefixed", False):
            record.msg = self._prefix + str(record.msg)
            record.sipha_worker_prefixed = True
        return True
