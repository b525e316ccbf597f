"""``[trace]`` in the running application: the driver's tracer built from the configuration.

:class:`Tracing` is what :class:`sipha.app.ProxyApp` holds: it resolves the HEP
collector, opens the exporter's socket, installs a :class:`~sipha.trace.tracer.MessageTracer`
on the driver when anything is traced (and removes it when nothing is: the driver then
pays one attribute check per message received and one per message sent), re-does that on
reload, and gives /status and /metrics what the exporter counted.  docs/tracing.md is the
operator's view.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Protocol

from sipha.config import parse_address
from sipha.trace.tracer import HepCounters, HepExporter, LocalAddresses, MessageTracer

if TYPE_CHECKING:
    from sipha.config import Config, TraceSection
    from sipha.net.driver import Driver
    from sipha.net.resolve import Resolver


class _CommandLine:
    log = False
    """``sipha run --trace``: the log trace on for the life of the process, reloads included."""


def force_log() -> None:
    """``sipha run --trace``: log every message whatever ``[trace] log`` says, now and after reloads."""
    _CommandLine.log = True


def check_collector(config: Config) -> None:
    """ValueError when ``[trace] hep`` names a host that does not resolve (blocking: at start).

    ``sipha run`` calls it before it starts the workers of ``[proxy] workers``, so that
    the problem is one line, not one traceback per worker.
    """
    hep = config.trace.hep
    if hep:
        target = parse_address(hep)
        try:
            socket.getaddrinfo(target.host, target.port, type=socket.SOCK_DGRAM)
        except OSError as error:
            raise ValueError(_cannot_send(hep, error)) from error


def _cannot_send(hep: str, error: OSError) -> str:
    return f"trace.hep = {hep!r}: cannot send there: {error}"


class Transports(LocalAddresses, Protocol):
    """What :class:`Tracing` uses of :class:`sipha.net.manager.TransportManager`."""

    resolver: Resolver


class Tracing:
    """The ``[trace]`` section applied to one driver: its tracer, the HEP exporter and its counters."""

    def __init__(self, driver: Driver, transports: Transports) -> None:
        self.driver = driver
        self.transports = transports
        self.settings: TraceSection | None = None
        """What is applied now (None before :meth:`apply`)."""
        self.exporter: HepExporter | None = None
        self.counters = HepCounters()
        """Counted since the start, across reloads and collector changes."""

    @property
    def log(self) -> bool:
        """Whether every message is logged (``[trace] log``, or ``sipha run --trace``)."""
        return _CommandLine.log or (self.settings is not None and self.settings.log)

    async def apply(self, config: Config) -> list[str]:
        """Trace as ``config`` says, from now on; what changed, for the reload's log line.

        ValueError (nothing changed) when the collector's host does not resolve or its
        socket cannot be opened: the start fails, a reload is refused.
        """
        settings = config.trace
        previous = self.settings
        exporter = self.exporter
        if previous is None or _hep_key(previous) != _hep_key(settings):
            exporter = await self._exporter(settings) if settings.hep else None
        if exporter is not self.exporter and self.exporter is not None:
            self.exporter.close()
        self.exporter = exporter
        self.settings = settings
        traced = exporter is not None or self.log
        self.driver.tracer = MessageTracer(self.transports, exporter, log=self.log) if traced else None
        return [] if previous is None else _changes(previous, settings)

    async def _exporter(self, settings: TraceSection) -> HepExporter:
        target = parse_address(settings.hep)
        try:
            ip = (await self.transports.resolver.resolve(target.host))[0]
            return HepExporter.open(
                ip,
                target.port,
                target=settings.hep,
                capture_id=settings.hep_capture_id,
                auth_key=settings.hep_password.encode(),
                counters=self.counters,
            )
        except OSError as error:
            raise ValueError(_cannot_send(settings.hep, error)) from error

    def close(self) -> None:
        """Stop tracing and close the exporter's socket."""
        self.driver.tracer = None
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None

    def status(self) -> dict[str, Any]:
        """The /status "trace" block; /metrics reads the same."""
        settings = self.settings
        exporting = self.exporter is not None and settings is not None
        return {
            "log": self.log,
            "hep": settings.hep if exporting and settings is not None else None,
            "hep_capture_id": settings.hep_capture_id if exporting and settings is not None else None,
            "hep_sent": self.counters.sent,
            "hep_dropped": dict(self.counters.dropped),
        }


def _hep_key(settings: TraceSection) -> tuple[str, int, str]:
    return settings.hep, settings.hep_capture_id, settings.hep_password


def _changes(old: TraceSection, new: TraceSection) -> list[str]:
    """``trace.hep '' -> 'udp:...'``: each option that changed (the password only named)."""
    before, after = old.model_dump(by_alias=True), new.model_dump(by_alias=True)
    return [
        f"trace.{key} (changed)" if key == "hep-password" else f"trace.{key} {before[key]!r} -> {value!r}"
        for key, value in after.items()
        if before[key] != value
    ]
