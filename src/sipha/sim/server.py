"""A simulated SIP server: one member of a primary/backup pair, for the HA tests and the demo.

It is a small RFC 3261 UAS built on the same layers as the proxy: sockets from
:class:`~sipha.net.TransportManager`, the driver of :mod:`sipha.net.driver`, and
as its endpoint :class:`sipha.sim.uas.SimulatedUas` (transactions, §17, and a
UAS core that answers).

* **primary** mode: OPTIONS 200 (§11.2), INVITE 180 then 200 with SDP like
  SIPp's built-in ``uas`` scenario (§13.3.1), ACK, BYE 200 (§15.1.2), CANCEL
  200 and 487 to the INVITE (§9.2), anything else 200.  The UAS core
  retransmits its 2xx until the ACK arrives (§13.3.1.4).
* **backup** mode: silent (the request never reaches the transaction layer),
  or, with ``backup_answer``, every request is answered with that code
  (docs/design.md §2 allows both).
* ``drop``: in primary mode the first N requests of a method are dropped
  silently, retransmissions included (one unanswered request from an otherwise
  healthy server, for the HA tests); other methods (OPTIONS) are answered.
* :meth:`SimulatedServer.send_request` sends a request (OPTIONS by default)
  from the listening socket, so that a proxy sees the member's address as the
  source ("switch on a request from the backup", docs/design.md §2); through a
  proxy given by name (the pool's FQDN, RFC 3263 with failover across its
  targets) with :class:`sipha.sim.outbound.OutboundProxy`.

The mode is switched with :meth:`SimulatedServer.set_mode`; ``sipha
simulate-server`` maps SIGUSR1/SIGUSR2 to it and SIGHUP to ``send_request``,
and with ``--listen-delay`` binds its ports only some time after it started
(a member that comes up late: until then its ports are closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterable, Mapping
from typing import Protocol

from sipha.net.driver import Driver
from sipha.net.manager import TransportManager
from sipha.sim.uas import DEFAULT_USER, METHOD_RE, MODES, Mode, SimulatedUas, SimulatorStats, host_text
from sipha.sip.address import Address
from sipha.txn import TimerConfig, TransactionKey

log = logging.getLogger("sipha.simulator")

ListenSpec = str | tuple[str, str, int]


def _listen_tuple(spec: ListenSpec) -> tuple[str, str, int]:
    if isinstance(spec, tuple):
        return spec
    from sipha.config import parse_address  # noqa: PLC0415 - pydantic only when strings are given

    parsed = parse_address(spec)
    return parsed.transport, parsed.host, parsed.port


class SimulatedServer:
    """One member of a simulated primary/backup SIP server pair (a UAS, RFC 3261 §8.2, §12-§15).

    ``listen``: ``"udp:127.0.0.1:5070"`` strings or ``(transport, host, port)``
    tuples (port 0: any free port, see :attr:`listen_addresses`).
    ``backup_answer``: None for a silent backup, else the 3xx-6xx code every
    request gets in backup mode.  ``answer_delay``: seconds between the 180 and
    the 200 of an INVITE (0: at once), so that a CANCEL can be tried.
    ``timers``: T1/T2 of the transactions and of the 2xx retransmissions.
    ``drop``: method -> N: in primary mode the first N requests of that method
    are dropped before the transaction layer (never answered), and so are their
    retransmissions (same transaction, §17.2.3; every ACK counts as a request).
    """

    def __init__(
        self,
        listen: Iterable[ListenSpec],
        mode: Mode = "primary",
        *,
        backup_answer: int | None = None,
        answer_delay: float = 0.0,
        timers: TimerConfig | None = None,
        user: str = DEFAULT_USER,
        drop: Mapping[str, int] | None = None,
    ) -> None:
        self.uas = SimulatedUas(
            mode, backup_answer=backup_answer, answer_delay=answer_delay, timers=timers, user=user, drop=drop
        )
        """The sans-IO side: transactions, dialogs, modes, counters."""
        self._listen = [_listen_tuple(spec) for spec in listen]
        if not self._listen:
            raise ValueError("at least one listen address is needed")
        self._driver = Driver()
        self._driver.endpoint = self.uas
        self.transports = TransportManager(
            self._driver.on_message, self._driver.on_transport_error, on_batch_end=self._driver.on_batch_end
        )
        self._waiting: dict[TransactionKey, asyncio.Future[int | None]] = {}
        self.uas.on_outcome = self._on_outcome

    # ------------------------------------------------------------------ lifecycle

    @property
    def mode(self) -> Mode:
        """``"primary"`` (answering) or ``"backup"`` (silent, or ``backup_answer``)."""
        return self.uas.mode

    def set_mode(self, mode: Mode) -> None:
        """Switch mode at run time; logs one line when the mode changes."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: primary or backup")
        uas = self.uas
        if mode == uas.mode:
            return
        log.info("simulated server %s: mode %s -> %s", self.name, uas.mode, mode)
        uas.mode = mode
        uas.stats.mode_changes += 1

    @property
    def stats(self) -> SimulatorStats:
        """What the server did since it started."""
        return self.uas.stats

    @property
    def drop(self) -> dict[str, int]:
        """Method -> how many of its first requests are dropped (primary mode)."""
        return self.uas.drop

    @property
    def listen_addresses(self) -> list[Address]:
        """The bound addresses (ports as the kernel assigned them; kept after :meth:`stop`)."""
        return list(self.uas.addresses)

    @property
    def name(self) -> str:
        """The listen addresses as ``udp:127.0.0.1:5070, tcp:...``, for logs."""
        addresses = self.listen_addresses or [Address(t.upper(), h, p) for t, h, p in self._listen]
        return ", ".join(f"{a.transport.lower()}:{host_text(a.host)}:{a.port}" for a in addresses)

    def address(self, transport: str = "UDP") -> Address:
        """The first listen address of ``transport``."""
        return self.uas.address(transport)

    async def start(self) -> None:
        """Bind the listen addresses; raises OSError (in use) or ValueError (transport)."""
        self._driver.attach(asyncio.get_running_loop(), self.transports)
        await self.transports.start(self._listen)
        self.uas.addresses = self.transports.listen_addresses
        log.info("simulated server listening on %s in %s mode", self.name, self.uas.mode)

    async def stop(self) -> None:
        """Stop timers, fail pending ``send_request`` calls, close the sockets."""
        self._driver.close()
        self.uas.reset()
        for future in self._waiting.values():
            if not future.done():
                future.set_result(None)
        self._waiting.clear()
        await self.transports.stop()

    async def __aenter__(self) -> SimulatedServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ UAC side

    async def send_request(
        self,
        proxy: Address,
        method: str = "OPTIONS",
        uri: str | None = None,
        *,
        timeout: float | None = None,
        route: str | None = None,
    ) -> int | None:
        """Send one out-of-dialog request to ``proxy`` and return its final status, or None.

        The request is a fresh one (:meth:`sipha.sim.uas.SimulatedUas.send_request`), sent
        from the listening socket of ``proxy.transport``, with ``route`` as its Route if
        given.  None after ``timeout`` seconds (default 64*T1, Timer F) or on a transport
        error.  Only non-INVITE methods: an INVITE would need a dialog.
        """
        method = method.upper()
        if method in ("INVITE", "ACK", "CANCEL"):
            raise ValueError(f"send_request sends non-INVITE requests, not {method}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int | None] = loop.create_future()
        key = self.uas.send_request(proxy, method, uri, loop.time(), route=route)
        self._waiting[key] = future
        self._driver.flush()
        wait = self.uas.txn.config.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.shield(future), wait)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(key, None)
            self.uas.forget_request(key)

    def _on_outcome(self, key: TransactionKey, status: int | None) -> None:
        future = self._waiting.get(key)
        if future is not None and not future.done():
            future.set_result(status)


# ---------------------------------------------------------------------------- command line


class Outbound(Protocol):
    """A proxy given by name, located per RFC 3263 (:class:`sipha.sim.outbound.OutboundProxy`)."""

    async def probe(self, server: SimulatedServer) -> str:
        """Send one OPTIONS through the proxy; the line to log."""
        ...


def install_signals(server: SimulatedServer, proxy: Address | Outbound | None, stop: asyncio.Event) -> None:
    """SIGUSR1: primary; SIGUSR2: backup; SIGHUP: one request to ``proxy``; SIGTERM/SIGINT: stop."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def probe() -> None:
        if proxy is None:
            log.warning("SIGHUP: no --proxy to send a request to")
            return
        if not server.listen_addresses:
            log.warning("SIGHUP: not listening yet, no request sent")
            return
        if not isinstance(proxy, Address):
            log.info("%s", await proxy.probe(server))
            return
        status = await server.send_request(proxy)
        where = f"{proxy.transport.lower()}:{host_text(proxy.host)}:{proxy.port}"
        log.info("OPTIONS to %s: %s", where, "no answer" if status is None else status)

    def on_hup() -> None:
        task = loop.create_task(probe())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGUSR1, server.set_mode, "primary")
    loop.add_signal_handler(signal.SIGUSR2, server.set_mode, "backup")
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def serve(
    server: SimulatedServer, proxy: Address | Outbound | None = None, *, listen_delay: float = 0.0
) -> None:
    """Run ``server`` until SIGTERM or SIGINT, with the mode and probe signals installed.

    ``listen_delay``: seconds to wait before binding the listen addresses (a member
    that comes up late: until then nothing listens on its ports, so a UDP peer gets
    ICMP port unreachable and a TCP peer a refused connection).  The signals work
    meanwhile (a mode set then holds from the start).  ``proxy``: where SIGHUP's OPTIONS
    goes: an address, or an outbound proxy given by name (:mod:`sipha.sim.outbound`).
    """
    if listen_delay < 0:
        raise ValueError(f"listen_delay {listen_delay}: not negative")
    stop = asyncio.Event()
    install_signals(server, proxy, stop)
    try:
        if listen_delay > 0:
            log.info("simulated server %s: listening in %.3f s", server.name, listen_delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), listen_delay)
        if not stop.is_set():
            await server.start()
            await stop.wait()
        log.info("simulated server %s stopping", server.name)
    finally:
        for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, ValueError, RuntimeError):
                asyncio.get_running_loop().remove_signal_handler(signum)
        await server.stop()


def drop_counts(specs: Iterable[str]) -> dict[str, int]:
    """``--drop METHOD[:N]`` values as method -> N (N defaults to 1; a method given twice adds up).

    Raises ValueError naming the value that is not ``METHOD`` or ``METHOD:N`` with N >= 1.
    """
    counts: dict[str, int] = {}
    for spec in specs:
        method, colon, count_text = spec.partition(":")
        method = method.strip().upper()
        count_text = count_text.strip()
        valid = bool(METHOD_RE.fullmatch(method)) and (
            not colon or (count_text.isascii() and count_text.isdigit() and int(count_text) >= 1)
        )
        if not valid:
            raise ValueError(f"--drop {spec!r}: METHOD or METHOD:N with N >= 1 (e.g. INVITE:2)")
        counts[method] = counts.get(method, 0) + (int(count_text) if colon else 1)
    return counts
