"""The application: one sipha instance's lifecycle on one asyncio loop (docs/design.md §4).

:class:`ProxyApp` binds the transports, builds the proxy core from the
configuration (:mod:`sipha.assembly`), attaches the driver that feeds it
(:class:`sipha.dispatch.Dispatcher` on :class:`sipha.net.driver.Driver`: every
message, transport error and timer goes through it), and serves the admin HTTP
(:mod:`sipha.admin`) in the same loop; the admin surface reads the core's state
when asked.

Lifecycle: SIGTERM/SIGINT drain (new out-of-dialog requests get 503, transactions and
calls under way finish, bounded by :data:`DRAIN_LIMIT`, exit 0); a second one stops at
once.  SIGHUP reloads the configuration file; a bad one is refused and the running
configuration kept.  With ``[proxy] workers`` > 1, :func:`run` hands over to the worker
supervisor (:mod:`sipha.supervisor`), and each worker runs a :class:`ProxyApp`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import logging
import signal
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final, Literal

from sipha import __version__
from sipha.admin.instance import WorkerCounters, local_snapshot
from sipha.admin.server import AdminServer
from sipha.admin.status import DemoControl, address_text
from sipha.admin.telemetry import Telemetry
from sipha.assembly import (
    OWN_SOCKETS,
    ListenKey,
    WorkerPlan,
    build_monitor,
    build_settings,
    build_view,
    carry_over_pairs,
    describe_changes,
    listen_key,
    monitor_settings,
    reconfigure_members,
)
from sipha.build import describe as describe_build
from sipha.config import Config, ConfigError, load_config, parse_address
from sipha.dispatch import Dispatcher
from sipha.ha import HaEvent
from sipha.hostnames import MemberNames, via_host
from sipha.limits import apply_limits, guard_settings
from sipha.logs import event_fields
from sipha.net.locate import Locator
from sipha.net.manager import TransportManager
from sipha.net.workers import Handoff
from sipha.poolcheck import check_pool_address, configure_resolver, new_resolver
from sipha.proxy.core import ProxyCore
from sipha.runtime import collect_garbage_when_idle, run_loop
from sipha.sip.address import Address
from sipha.supervisor import run_workers
from sipha.tlsconfig import CertificateStatus, TlsLogLimiter, build_tls_settings, certificate_status
from sipha.tlsstatus import tls_block, uses_tls
from sipha.trace.export import Tracing, check_collector

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


class ProxyApp:
    """One sipha instance: transports + the driven proxy core + admin HTTP, on the running loop.

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
        self.workers: WorkerCounters | None = None
        """A worker's end of the counters exchange: /status sums the workers (sipha.admin.instance)."""
        self._own_addresses: frozenset[Address] = frozenset()
        """A worker's own UDP addresses (see :func:`sipha.supervisor.bind_worker_sockets`)."""
        self.config_path: ConfigPath = config_path
        """Where SIGHUP re-reads the configuration: a file, None (the embedded default)."""
        self.telemetry = Telemetry(worker=worker is not None)
        self._dispatch = Dispatcher(on_event=self._log_event, count_final=self.telemetry.count_final)
        self.transports = TransportManager(
            self._dispatch.on_message,
            self._dispatch.on_transport_error,
            self._dispatch.on_bad_stream,
            on_batch_end=self._dispatch.on_batch_end,
            on_backlog=self._dispatch.on_backlog,
            on_tls=self._on_tls,
            ip_tos=config.proxy.sip_ip_tos,
        )
        self.trace = Tracing(self._dispatch, self.transports)  # [trace]: applied at start and reload
        self.resolver = new_resolver(config.dns)
        """RFC 3263 lookups ([dns]): next hops named by host names (docs/design.md §3), event 40000."""
        self.locator = Locator(self.resolver, self._dispatch.on_located)
        self._dispatch.locator = self.locator
        self.members = MemberNames(self.resolver, self.transports.resolver, lambda: self.config, self._now)
        """Pair members given by host name, resolved through [dns] (sipha.hostnames)."""
        self._tls_logged = TlsLogLimiter()
        self._certificate: CertificateStatus | None = None
        self.core: ProxyCore | None = None
        self.admin: AdminServer | None = None
        self._admin_enabled = admin
        self._demo = demo
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started_at: float | None = None
        self._stopped = asyncio.Event()
        self._stopping = False
        self._draining = False
        self._stop_signalled_in_start: int | None = None  # SIGTERM/SIGINT in start()
        self._tasks: set[asyncio.Task[object]] = set()
        self._reload_lock = asyncio.Lock()
        # [proxy] listen entry -> the addresses it bound (a host name may bind several).
        self._bound: dict[ListenKey, list[Address]] = {}

    async def start(self) -> None:
        """Bind the listen addresses and the admin HTTP, and start proxying.

        OSError when an address cannot be bound; nothing is left listening then.
        """
        self._loop = asyncio.get_running_loop()
        await self.members.resolve(self.config)  # pair members given by name: the core gets IPs
        self._dispatch.attach(self._loop, self.transports)
        source = self._config_source()
        self.transports.set_tls(self.members.tls(build_tls_settings(self.config, source=source)))
        self._certificate = certificate_status(
            self.config, datetime.datetime.now(datetime.UTC), source=source
        )
        await self.transports.start([])
        apply_limits(self.config, self._dispatch, self.transports, resolved=self.members.addresses())
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
                key = listen_key(text)
                if worker is not None:
                    self._bound[key] = [
                        await self.transports.adopt_listen(sock, recverr=recverr, transport=key[0])
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
            await self.trace.apply(self.config)
            view = build_view(self.config, bound, self.members.addresses())
            core = ProxyCore(
                build_settings(
                    self.config,
                    bound,
                    worker=None if worker is None else worker.index,
                    via_host=await via_host(self.config, self.transports.resolve, source),
                ),
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
        probe = self._open_probe_socket(bound)
        if probe is not None:
            core.use_probe_port("UDP", probe.port)
            dispatch.probe_socket = True
            self._own_addresses = self._own_addresses | {probe}
        if worker is not None:
            self._handoff = Handoff(
                self._loop,
                worker.index,
                worker.handoff,
                dispatch.on_handed_over,
                on_batch_end=dispatch.on_batch_end,
                on_send=dispatch.on_handed_send,
                on_pair=dispatch.on_pair_news,
                on_probe_question=dispatch.on_probe_question,
                on_probe_answer=dispatch.on_probe_answer,
                on_maintenance=dispatch.on_maintenance,
            )
            core.share_probes(index := worker.index)
            self.workers = WorkerCounters(self._handoff, worker.count, lambda: local_snapshot(self, index))
            dispatch.handoff = self._handoff
            dispatch.worker_index = worker.index
            dispatch.worker_count = worker.count
            dispatch.own_addresses = self._own_addresses
        self.core = dispatch.core = core
        self._started_at = self._now()
        for address in bound:
            log.info("listening on %s", _address_text(address))
        self._spawn(check_pool_address(self.config, bound, self.resolver))  # event 40000, in the background
        self._spawn(self.members.run(self._members_moved))  # their names looked up again at TTL expiry
        core.start(self._now())
        dispatch.flush()
        # Idle: no transaction alive (each lives up to 32 s after its call), not merely no
        # response context open (none is, most moments of a steady load).
        self._spawn(collect_garbage_when_idle(lambda: len(core.txn), self._now))

    def _open_probe_socket(self, bound: list[Address]) -> Address | None:
        """The pair monitor's own UDP socket (docs/design.md §2), on the first UDP listen's IP.

        Its OPTIONS answers then never share a socket buffer with call traffic, which
        overflows first under overload.  None without a UDP listen (no UDP member either).
        """
        first = next((address for address in bound if address.transport == "UDP"), None)
        if first is None:
            return None
        family = socket.AF_INET6 if ":" in first.host else socket.AF_INET
        return self.transports.open_probe_socket(family)

    def _config_source(self) -> str:
        return source_name(self.config_path)

    def _admin_listen(self) -> str:
        """``[admin] listen``; worker N of ``[proxy] workers`` serves its own on the port + N."""
        listen = self.config.admin.listen
        return listen if self.worker is None else self.worker.admin_listen(listen)

    async def stop(self) -> None:
        """Close the admin HTTP, every socket and connection."""
        self._dispatch.close()
        self.trace.close()
        self.locator.close()
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

    def member_problem(self, address: Address) -> str | None:
        """Why a pair member cannot be reached now: its name does not resolve, its TLS handshake failed."""
        unresolved = self.members.problem(address.host)
        if unresolved is not None or address.transport != "TLS":
            return unresolved
        failure = self.transports.tls_failures.get((address.host, address.port))
        return None if failure is None else f"TLS handshake failed: {failure}"

    def tls_status(self) -> dict[str, Any] | None:
        """The /status "tls" block: connections, handshakes by outcome, our certificate's dates."""
        return tls_block(self.transports, self.listen_addresses, self._certificate)

    def transport_counters(self) -> dict[str, int]:
        """The transports' counters, and with ``[proxy] workers`` the hand-over's (for /metrics)."""
        counters = self.transports.stats.as_dict()
        sources = self._dispatch.sources  # [limits]: what the per-source guard dropped
        counters.update(source_rate_limited=sources.rate_limited, scanner_requests=sources.scanner_requests)
        counters["member_name_failures"] = self.members.failures  # [dns] lookups of member names that failed
        handoff = self._handoff
        if handoff is not None:
            counters["handoff_out"] = handoff.handed_over
            counters["handoff_in"] = handoff.received
            counters["handoff_drops"] = handoff.dropped
        return counters

    async def run(self) -> None:
        """Start, then serve: SIGTERM/SIGINT drain then stop (twice: at once), SIGHUP reloads.

        Handlers first: "listening on" is what one waits for before signalling (SIGHUP's default
        is to terminate); a SIGHUP in start() waits for it, a SIGTERM drains after it.
        """
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):  # pragma: no cover - non-Unix
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._on_stop_signal, signum)
            loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        try:
            async with self._reload_lock:
                await self.start()
            if self._stop_signalled_in_start is not None and not self._stopping:
                self._on_stop_signal(self._stop_signalled_in_start)
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
        if core is None and not self._stopping and self._stop_signalled_in_start is None:
            log.info("%s while starting: draining once started", name)
            self._stop_signalled_in_start = signum
            return
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

    def set_maintenance(self, pair: str, role: str, on: bool) -> None:  # noqa: FBT001
        """``POST /member``: a member in maintenance or back to auto, in every worker (docs/design.md §2)."""
        self._dispatch.set_maintenance(pair, role, on)
        mode = "in maintenance" if on else "back to auto"
        log.info("pair %s: %s %s (asked over the admin HTTP)", pair, role, mode)

    async def _members_moved(self) -> None:
        """A member's name resolves to another IP: applied as a reload of that member (sipha.hostnames)."""
        async with self._reload_lock:
            if (core := self.core) is not None:
                self.transports.set_tls(self.members.tls(self.transports.tls))
                reconfigure_members(core, self.config, self.members.addresses(), self.telemetry, self._now())
                self._dispatch.sources.reconfigure(guard_settings(self.config, self.members.addresses()))
                self._dispatch.flush()

    async def reload(self) -> bool:
        """Re-read the configuration file and apply it; False when refused (old one kept)."""
        async with self._reload_lock:
            path = self.config_path
            if path is UNKNOWN_SOURCE:
                log.error("SIGHUP: cannot reload: the configuration file is not known to this process")
                return self.telemetry.reloaded("<config>", ["configuration file not known"], applied=False)
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
                return self.telemetry.reloaded(source, problems, applied=False)
            failure: Exception | None = None
            try:
                changes = await self.apply_config(config)
            except (OSError, ValueError, ConfigError) as error:
                failure = error
            if failure is not None:
                log.error(
                    "SIGHUP: configuration %s not applied, keeping the running one: %s", source, failure
                )
                return self.telemetry.reloaded(source, [str(failure)], applied=False)
            if self.transports.tls is not None and uses_tls(self.transports, self.listen_addresses):
                # The files are read again on every reload, changed in the configuration or not
                # (a renewed certificate under the same name): new handshakes use them.
                changes.append("TLS certificates and trust anchors re-read")
            if changes:
                log.info("configuration reloaded from %s: %s", source, "; ".join(changes))
            else:
                log.info("configuration reloaded from %s: nothing changed", source)
            return self.telemetry.reloaded(source, changes, applied=True)

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
        wanted = {listen_key(text): text for text in config.proxy.listen}
        if self.worker is not None and set(wanted) != set(self._bound):
            raise ValueError(
                "proxy.listen cannot change on reload when proxy.workers > 1 (the parent binds the"
                " shared sockets): restart sipha to apply it"
            )
        if old.proxy.workers != config.proxy.workers:
            changes.append("proxy.workers takes effect at the next restart")
        await self.members.resolve(config)  # new member names: down until they resolve, never refused
        tls = self.members.tls(build_tls_settings(config, source=self._config_source()))  # ConfigError
        previous_tls = self.transports.tls
        self.transports.set_tls(tls)  # a new tls: listen needs the new certificate
        added: dict[ListenKey, list[Address]] = {}
        try:
            # proxy.sip-ip-tos: every socket and connection is marked at once, and the new
            # listen addresses below are bound with it.
            self.transports.set_ip_tos(config.proxy.sip_ip_tos)
            for key, text in wanted.items():
                if key not in self._bound:
                    configured = parse_address(text)
                    added[key] = await self.transports.add_listen(
                        configured.transport, configured.host, configured.port
                    )
            bound_map = {key: self._bound.get(key) or added[key] for key in wanted}
            bound = [address for addresses in bound_map.values() for address in addresses]
            view = build_view(config, bound, self.members.addresses())
            settings = build_settings(
                config,
                bound,
                worker=None if self.worker is None else self.worker.index,
                via_host=await via_host(config, self.transports.resolve, self._config_source()),
            )
            monitor = build_monitor(config, view, self.telemetry)
            changes += await self.trace.apply(config)  # last: nothing after it can fail
        except BaseException:
            for addresses in added.values():
                for address in addresses:
                    self.transports.remove_listen(address)
            self.transports.set_tls(previous_tls)
            with contextlib.suppress(OSError):
                self.transports.set_ip_tos(old.proxy.sip_ip_tos)
            raise
        kept: list[str] = []
        if core.monitor is not None:
            kept = carry_over_pairs(core.monitor, monitor, monitor_settings(config))
        reprobed = [name for name in monitor.pairs if name not in kept and name in view.pairs]
        reprobed = [name for name in reprobed if core.monitor is not None and name in core.monitor.pairs]
        now = self._now()
        core.reconfigure(settings, view, monitor, now)
        changes += apply_limits(
            config, self._dispatch, self.transports, old, resolved=self.members.addresses()
        )
        for key, addresses in self._bound.items():
            if key not in wanted:
                for address in addresses:
                    self.transports.remove_listen(address)
                    log.info("no longer listening on %s", _address_text(address))
        for addresses in added.values():
            for address in addresses:
                log.info("listening on %s", _address_text(address))
        self._bound = bound_map
        if old.dns != config.dns:
            configure_resolver(self.resolver, config.dns)
        self.config = config
        self._certificate = certificate_status(
            config, datetime.datetime.now(datetime.UTC), source=self._config_source()
        )
        if reprobed:
            changes.append(f"re-probing pairs {', '.join(reprobed)} (members or monitoring changed)")
        if old.admin != config.admin:
            changes.append("admin changes take effect at the next restart")
        self._dispatch.flush()
        return changes

    # ------------------------------------------------------------------ clock and events

    def _now(self) -> float:
        assert self._loop is not None  # noqa: S101 - set in start()
        return self._loop.time()

    def _on_tls(self, peer: Address, outbound: bool, outcome: str, text: str) -> None:  # noqa: FBT001
        """A TLS handshake ended: failures are logged, naming the pair member when it is one."""
        if outcome == "ok":
            self._tls_logged.succeeded(peer)
            return
        if not self._tls_logged.should_log(peer, text, self._now(), outbound=outbound):
            return
        core = self.core
        member = None if core is None else core.view.member_at(peer.host, peer.port)
        where = _address_text(peer)
        if member is not None:
            log.warning(
                "pair %s: member %s (%s): TLS handshake failed: %s", member.pair, where, member.role, text
            )
        elif outbound:
            log.warning("TLS handshake with %s failed: %s", where, text)
        else:
            log.warning("TLS handshake from %s refused: %s", where, text)

    def _log_event(self, event: HaEvent) -> None:
        """A pair monitor event: the log, the dashboard's recent events (the dispatcher tells the workers)."""
        if event.event_id is not None:
            log.warning("event %d: %s", event.event_id, event.message, extra=event_fields(event))
        else:
            log.info("%s", event.message, extra=event_fields(event))
        self.telemetry.record_event(event)


def source_name(path: ConfigPath) -> str:
    """How errors name a configuration: its file, or the embedded default."""
    if isinstance(path, Path):
        return str(path)
    return "<embedded default>" if path is None else "<config>"


def _address_text(address: Address) -> str:
    """``udp:127.0.0.1:5060``, ``udp:[::1]:5060``: the rule of the admin pages (IPv6 in brackets)."""
    return address_text(address)


def run(config: Config, config_path: ConfigPath = UNKNOWN_SOURCE) -> None:
    """``sipha run``: serve until SIGTERM (drained), reloading ``config_path`` on SIGHUP.

    ``config_path``: the file ``config`` was read from, None for the embedded default.
    With ``[proxy] workers`` > 1, this process becomes the parent of the workers
    (:func:`sipha.supervisor.run_workers`), each of which runs a :class:`ProxyApp`.
    """
    build_tls_settings(config, source=source_name(config_path))  # a bad certificate: refused here
    check_collector(config)  # a [trace] hep host that does not resolve: likewise
    log.info("sipha %s, %s", __version__, describe_build())
    if config.proxy.workers > 1:

        def serve(plan: WorkerPlan) -> None:
            run_loop(ProxyApp(config, config_path=config_path, worker=plan).run())

        run_workers(config, serve)
        return
    # Until ProxyApp.run installs its handler, SIGHUP's default would terminate the process (a
    # logrotate hook during the start); a reload then is moot: the configuration was just read.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    run_loop(ProxyApp(config, config_path=config_path).run())
