"""The transport layer's one public object: sockets, connections, name resolution.

The driver (:mod:`sipha.net.driver`) gives it its callbacks and calls
:meth:`TransportManager.send` for every message its endpoint emits; the
application starts it with the listen addresses.  Callbacks are never invoked
from inside :meth:`send`: errors found while sending are reported on the next
loop iteration, so the endpoint is not re-entered while it is draining its own
output.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine
from typing import Any, Final

from sipha.net.addr import parse_ip
from sipha.net.listen import TRANSPORTS, check_listen_transport, listen_ip
from sipha.net.resolve import Resolver
from sipha.net.stats import TransportStats
from sipha.net.tcp import OnBadStream, OnMessage, TcpConnection, TcpContext, connect, until_closed
from sipha.net.tls import (
    OnTlsEvent,
    TlsContext,
    TlsSettings,
    connection_for_domain,
    grant_alias,
    new_tls_connection,
    retire_renamed,
)
from sipha.net.tlsoutcome import OUTCOMES, count_outcome
from sipha.net.udp import UdpEndpoint, open_udp_socket, set_tos
from sipha.net.workers import listen_text, refused_if_in_use
from sipha.sip import DEFAULT_LIMITS, ParserLimits
from sipha.sip.address import Address

OnTransportError = Callable[[Address, OSError | str], None]

DEFAULT_IDLE_TIMEOUT: Final = 120.0
DEFAULT_MAX_CONNECTIONS: Final = 10_000
DEFAULT_WRITE_BUFFER_HIGH: Final = 256 * 1024
DEFAULT_WRITE_BUFFER_MAX: Final = 4 * 1024 * 1024
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_UDP_BUFFER: Final = 4 * 1024 * 1024
DEFAULT_UDP_BATCH: Final = 64
DEFAULT_UDP_QUEUE: Final = 10_000
PROBE_UDP_BUFFER: Final = 256 * 1024
"""SO_RCVBUF of the probe socket: it receives only the answers to the monitor's OPTIONS."""
_STOP_GRACE: Final = 1.0  # seconds connections get to flush their buffers on stop()


class TransportManager:
    """UDP sockets and TCP servers/connections for the proxy, behind one ``send``.

    ``on_message(data, source, local)`` gets every datagram and every framed
    stream message; ``source`` is the peer (for TCP: the connection's remote
    address, which is also the key that routes a response back over it).
    ``on_transport_error(destination, error)`` gets ICMP errors for UDP
    datagrams we sent, failed TCP connects and connections reset or dropped
    with data queued.  ``on_bad_stream(error, source)``, if given, is called
    on a stream framing error before the connection is closed, so the core
    can answer 400/513 on it.  ``on_batch_end()``, if given, is called after
    each batch of datagrams a UDP socket delivered (one wakeup's reads);
    ``on_backlog(socket, level)`` when a UDP socket falls behind (level 1 to 3) or catches up (0)
    (:attr:`sipha.net.udp.UdpEndpoint.behind`).
    """

    def __init__(
        self,
        on_message: OnMessage,
        on_transport_error: OnTransportError,
        on_bad_stream: OnBadStream | None = None,
        *,
        limits: ParserLimits = DEFAULT_LIMITS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        write_buffer_high: int = DEFAULT_WRITE_BUFFER_HIGH,
        write_buffer_max: int = DEFAULT_WRITE_BUFFER_MAX,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        udp_buffer_size: int = DEFAULT_UDP_BUFFER,
        udp_batch: int = DEFAULT_UDP_BATCH,
        udp_queue_limit: int = DEFAULT_UDP_QUEUE,
        udp_reuse_address: bool = False,
        ip_tos: int = 0,
        resolver: Resolver | None = None,
        on_batch_end: Callable[[], None] | None = None,
        on_backlog: Callable[[object, int], None] | None = None,
        tls: TlsSettings | None = None,
        on_tls: OnTlsEvent | None = None,
    ) -> None:
        self._on_message = on_message
        self._on_batch_end = on_batch_end
        self._on_backlog = on_backlog
        self._on_transport_error = on_transport_error
        self._on_bad_stream = on_bad_stream
        self._limits = limits
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._write_high = write_buffer_high
        self._write_max = write_buffer_max
        self._connect_timeout = connect_timeout
        self._udp_buffer_size = udp_buffer_size
        self._udp_batch = udp_batch
        self._udp_queue_limit = udp_queue_limit
        self._udp_reuse_address = udp_reuse_address
        self._ip_tos = ip_tos
        self.resolver = resolver or Resolver()
        self.stats = TransportStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: list[UdpEndpoint] = []
        self._udp_by_family: dict[int, UdpEndpoint] = {}
        self._probe_udp: dict[int, UdpEndpoint] = {}
        """The pair monitor's UDP sockets, one per family (:meth:`open_probe_socket`)."""
        self._servers: list[asyncio.Server] = []
        self._listen: list[Address] = []
        self._tcp: TcpContext | None = None
        self._tls_context: TcpContext | None = None
        self.tls = tls
        """The TLS contexts (None: no TLS); :meth:`set_tls` replaces them on reload."""
        self._on_tls = on_tls
        self.tls_outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        """TLS handshakes by outcome (:data:`sipha.net.tlsoutcome.OUTCOMES`), both directions."""
        self.tls_failures: dict[tuple[str, int], str] = {}
        """Destinations we connect to over TLS whose last handshake failed: (IP, port) -> why.
        Cleared by the next handshake that succeeds (read by /status)."""
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, listens: list[tuple[str, str, int]]) -> None:
        """Bind every ``(transport, host, port)``: "udp"/"tcp", an IP or name, port 0 = any.

        All or nothing: if one address cannot be bound, what was opened is
        closed again and the error is raised.
        """
        if self._loop is not None:
            raise RuntimeError("TransportManager already started")
        loop = self._loop = asyncio.get_running_loop()
        # One table of connections per transport: a TCP and a TLS connection may share a peer's
        # (host, port) key, and the limits and counters are each transport's own.
        self._tcp, self._tls_context = (
            (TlsContext if kind == "TLS" else TcpContext)(
                loop,
                stats=self.stats,
                on_message=self._on_message,
                on_error=self._report,
                on_bad_stream=self._on_bad_stream,
                limits=self._limits,
                idle_timeout=self._idle_timeout,
                write_high=self._write_high,
                write_max=self._write_max,
                max_connections=self._max_connections,
                transport=kind,
            )
            for kind in ("TCP", "TLS")
        )
        self.set_ip_tos(self._ip_tos)  # the contexts' (no socket is open yet)
        for transport, _host, _port in listens:
            try:
                check_listen_transport(transport)
            except ValueError:
                self._loop = None
                raise
        try:
            for transport, host, port in listens:
                kind = transport.upper()
                family, ip = await listen_ip(loop, kind, host, port)
                if kind == "UDP":
                    self._start_udp(loop, family, ip, port)
                else:
                    await self._start_stream(loop, kind, family, ip, port)
        except BaseException:
            await self.stop()
            raise

    def _start_udp(
        self, loop: asyncio.AbstractEventLoop, family: socket.AddressFamily, ip: str, port: int
    ) -> None:
        # No SO_REUSEPORT nor SO_REUSEADDR: a second sipha on the address fails (EADDRINUSE).
        with refused_if_in_use(listen_text("udp", ip, port)):
            sock, recverr = open_udp_socket(
                family, ip, port, buffer_size=self._udp_buffer_size, reuse_address=self._udp_reuse_address
            )
        self._serve_udp(loop, sock, family, recverr=recverr)

    def _serve_udp(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, family: int, *, recverr: bool
    ) -> None:
        endpoint = self._udp_endpoint(loop, sock, recverr=recverr)
        self._udp.append(endpoint)
        # RFC 3261 §18.2.2 lets a response leave from any socket; the first one of the family
        # is the one whose address the core should put in Via (see local_address).
        self._udp_by_family.setdefault(family, endpoint)
        self._listen.append(endpoint.local)

    def _udp_endpoint(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, *, recverr: bool
    ) -> UdpEndpoint:
        set_tos(sock, self._ip_tos)
        endpoint = UdpEndpoint(
            loop,
            sock,
            recverr=recverr,
            on_message=self._on_message,
            on_error=self._report,
            stats=self.stats,
            batch=self._udp_batch,
            queue_limit=self._udp_queue_limit,
            on_batch_end=self._on_batch_end,
            on_backlog=self._on_backlog,
        )
        endpoint.start()
        return endpoint

    def open_probe_socket(self, family: int = socket.AF_INET) -> Address:
        """A UDP socket of the pair monitor's own, on the IP of the first UDP listen of ``family``.

        The OPTIONS probes leave from it (:meth:`send_probe`) and name its port in Via, so
        their answers land in a buffer that call traffic cannot fill: under overload the
        listen socket drops datagrams, and a lost answer must not make a pair unknown
        (docs/design.md §2).  Not a listen address: nothing else is sent to it.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("TransportManager not started")
        existing = self._probe_udp.get(family)
        if existing is not None:
            return existing.local
        listen = self._udp_by_family.get(family)
        if listen is None:
            raise LookupError(f"no UDP listen address of family {socket.AddressFamily(family).name}")
        sock, recverr = open_udp_socket(
            socket.AddressFamily(family),
            listen.local.host.strip("[]"),
            0,
            buffer_size=PROBE_UDP_BUFFER,
            reuse_address=False,
        )
        endpoint = self._udp_endpoint(loop, sock, recverr=recverr)
        self._probe_udp[family] = endpoint
        return endpoint.local

    def send_probe(self, data: bytes, destination: Address) -> None:
        """Send a probe from the pair monitor's socket (:meth:`open_probe_socket`), else as :meth:`send`."""
        if destination.transport == "UDP":
            parsed = parse_ip(destination.host)
            endpoint = None if parsed is None else self._probe_udp.get(parsed[0])
            if endpoint is not None and parsed is not None:
                endpoint.send(data, (parsed[1], destination.port))
                return
        self.send(data, destination)

    def _accepting(self, kind: str) -> Callable[[], TcpConnection]:
        """The protocol factory of a TCP or TLS listen (TLS: the contexts current at accept time)."""
        if kind == "TCP":
            context = self._tcp
            assert context is not None  # noqa: S101 - started
            return lambda: TcpConnection(context)
        tls_context = self._tls_context
        assert tls_context is not None  # noqa: S101 - started
        if self.tls is None or self.tls.server is None:
            raise ValueError("a tls: listen address needs a certificate and a private key ([tls])")
        return lambda: self._accept_tls(tls_context)

    def _accept_tls(self, context: TcpContext) -> TcpConnection:
        settings = self.tls
        assert settings is not None  # noqa: S101 - checked at listen
        return new_tls_connection(settings, context, None, None, on_tls=self._tls_event)

    async def _start_stream(
        self,
        loop: asyncio.AbstractEventLoop,
        kind: str,
        family: socket.AddressFamily,
        ip: str,
        port: int,
    ) -> None:
        factory = self._accepting(kind)
        with refused_if_in_use(listen_text(kind, ip, port)):  # SO_REUSEADDR: TIME-WAIT only
            server = await loop.create_server(
                factory, ip, port, family=family, reuse_address=True, backlog=1024
            )
        self._servers.append(server)
        for sock in server.sockets:
            set_tos(sock, self._ip_tos)  # the SYN-ACKs; accepted sockets inherit it
            name = sock.getsockname()
            self._listen.append(Address(kind, name[0], name[1]))

    async def adopt_listen(
        self, sock: socket.socket, *, recverr: bool = False, transport: str = ""
    ) -> Address:
        """Serve a socket bound elsewhere: a UDP socket or a listening TCP one (``transport`` TLS: TLS).

        A ``[proxy] workers`` process gets its sockets from the parent; ``recverr``:
        IP_RECVERR is on (UDP).
        """
        loop = self._loop
        if loop is None or self._tcp is None:
            raise RuntimeError("TransportManager not started")
        before = len(self._listen)
        set_tos(sock, self._ip_tos, reset=True)  # whatever an earlier worker left on it
        if sock.type == socket.SOCK_DGRAM:
            self._serve_udp(loop, sock, sock.family, recverr=recverr)
        else:
            kind = "TLS" if transport.upper() == "TLS" else "TCP"
            server = await loop.create_server(self._accepting(kind), sock=sock, backlog=1024)
            self._servers.append(server)
            name = sock.getsockname()
            self._listen.append(Address(kind, name[0], name[1]))
        return self._listen[before]

    def set_tls(self, settings: TlsSettings | None) -> None:
        """New TLS contexts (a reload): used by connections from now on; open ones keep theirs.

        A connection we opened to a member whose name to verify changed is no longer
        used for new messages (one connection per peer *and* identity); it stays open
        for the transactions under way on it until it idles out.
        """
        self.tls = settings
        if self._tls_context is not None:
            retire_renamed(self._tls_context, settings)

    def set_ip_tos(self, tos: int) -> None:
        """A new TOS byte (a reload), 0 = the system default: every socket is marked at once."""
        self._ip_tos = tos
        for context in filter(None, (self._tcp, self._tls_context)):
            context.set_ip_tos(tos)  # its connections and those to come
        udp = [endpoint.sock for endpoint in [*self._udp, *self._probe_udp.values()]]
        for sock in udp + [sock for up in self._servers for sock in up.sockets]:
            set_tos(sock, tos, reset=True)  # OSError: the kernel refused it

    def alias(self, connection: Address, host: str, port: int) -> bool:
        """RFC 5923 §5: let requests to ``host:port`` reuse the TLS connection from ``connection``."""
        context = self._tls_context
        return context is not None and grant_alias(context, connection, host, port)

    def _tls_event(self, peer: Address, outbound: bool, outcome: str, text: str) -> None:  # noqa: FBT001
        count_outcome(self.tls_outcomes, self.tls_failures, peer, outcome, text, outbound=outbound)
        if self._on_tls is not None:
            self._on_tls(peer, outbound, outcome, text)

    async def add_listen(self, transport: str, host: str, port: int) -> list[Address]:
        """Bind one more listen address while running (SIGHUP); the addresses it bound.

        Raises OSError (cannot bind) or ValueError (transport); nothing is bound then.
        """
        loop = self._loop
        if loop is None or self._tcp is None:
            raise RuntimeError("TransportManager not started")
        check_listen_transport(transport)
        kind = transport.upper()
        if kind != "UDP":
            self._accepting(kind)  # ValueError now, before anything is bound
        family, ip = await listen_ip(loop, kind, host, port)
        before = len(self._listen)
        if kind == "UDP":
            self._start_udp(loop, family, ip, port)
        else:
            await self._start_stream(loop, kind, family, ip, port)
        return self._listen[before:]

    def remove_listen(self, address: Address) -> bool:
        """Stop listening on ``address`` (one of :attr:`listen_addresses`); False if it is not one.

        Other sockets are kept.  TCP connections accepted on it stay open until they
        close or idle out, so that transactions under way on them finish.
        """
        if address not in self._listen:
            return False
        if address.transport == "UDP":
            for endpoint in self._udp:
                if endpoint.local == address:
                    endpoint.close()
                    self._udp.remove(endpoint)
                    self._listen.remove(address)
                    break
            self._udp_by_family.clear()
            for endpoint in self._udp:
                parsed = parse_ip(endpoint.local.host)
                if parsed is not None:
                    self._udp_by_family.setdefault(parsed[0], endpoint)
            return True
        for server in self._servers:
            names = [sock.getsockname() for sock in server.sockets]
            bound = [Address(address.transport, name[0], name[1]) for name in names]
            if address in bound:
                server.close()
                self._servers.remove(server)
                self._listen = [item for item in self._listen if item not in bound]
                return True
        return False  # pragma: no cover - every TCP listen address belongs to a server

    async def stop(self) -> None:
        """Close sockets, servers and connections (connections get a moment to flush)."""
        for endpoint in [*self._udp, *self._probe_udp.values()]:
            endpoint.close()
        self._udp.clear()
        self._udp_by_family.clear()
        self._probe_udp.clear()
        for server in self._servers:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        contexts = [context for context in (self._tcp, self._tls_context) if context is not None]
        for context in contexts:
            for connection in list(context.live):
                connection.close()
        live = [connection for context in contexts for connection in context.live]
        if live:
            # Lost connections leave context.live on their own; poll it at a fine grain
            # for at most _STOP_GRACE, then abort whatever has not flushed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until_closed(contexts), _STOP_GRACE)
        for context in contexts:
            for connection in list(context.live):
                connection.abort()
        if contexts:
            await asyncio.sleep(0)  # let the aborted transports call connection_lost
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._listen.clear()
        self._loop = None

    # ------------------------------------------------------------------ addresses

    @property
    def stream_contexts(self) -> list[TcpContext]:
        """The TCP and TLS connection tables, with their limits ([limits]); none before :meth:`start`."""
        return [context for context in (self._tcp, self._tls_context) if context is not None]

    @property
    def listen_addresses(self) -> list[Address]:
        """The bound addresses, ports as the kernel assigned them (port 0 in a listen)."""
        return list(self._listen)

    @property
    def udp_buffer_sizes(self) -> dict[Address, tuple[int, int]]:
        """(SO_RCVBUF, SO_SNDBUF) the kernel granted, per UDP socket (Linux doubles the request)."""
        return {endpoint.local: endpoint.buffer_sizes for endpoint in self._udp}

    @property
    def icmp_errors_reported(self) -> bool:
        """Whether every UDP socket reports ICMP errors (IP_RECVERR, Linux only)."""
        return all(endpoint.recverr for endpoint in self._udp)

    def local_address(self, transport: str, family: int = socket.AF_INET) -> Address:
        """The first listen address of ``transport`` ("UDP"/"TCP") and ``family``, for Via sent-by.

        A wildcard listen (0.0.0.0, ::) is returned as bound: the caller puts
        the configured ``sip-address`` in Via instead.
        """
        kind = transport.upper()
        for address in self._listen:
            if address.transport == kind:
                parsed = parse_ip(address.host)
                if parsed is not None and parsed[0] == family:
                    return address
        raise LookupError(f"no {kind} listen address of family {socket.AddressFamily(family).name}")

    def has_connection(self, destination: Address) -> bool:
        """Whether a stream connection to ``destination`` exists (connecting or open).

        The core uses it for RFC 3261 §18.2.2: if the request's connection is
        gone, a response goes to ``via.response_fallback_destination`` instead.
        """
        context = self._tls_context if destination.transport.upper() == "TLS" else self._tcp
        if context is None:
            return False
        if (destination.host, destination.port) in context.connections:
            return True
        parsed = parse_ip(destination.host)
        return parsed is not None and (parsed[1], destination.port) in context.connections

    async def resolve(self, host: str) -> list[str]:
        """A/AAAA addresses of ``host`` (cached); IP literals at once.  Raises OSError."""
        return await self.resolver.resolve(host)

    # ------------------------------------------------------------------ send

    def read_pending(self, limit: int = 20_000) -> int:
        """Hand over the datagrams the kernel already holds, before timers are judged.

        Under load the read callback takes a batch per wakeup, so an answer that
        arrived in time can still sit in the socket buffer when a timeout fires; the
        caller reads the backlog first (bounded by ``limit``) so that it is not taken
        for silence.  Returns the number of datagrams read.
        """
        total = 0
        for endpoint in [*self._udp, *self._probe_udp.values()]:
            total += endpoint.read(limit)
        return total

    def send(self, data: bytes, destination: Address) -> None:
        """Send ``data`` to ``destination``; never blocks, never calls a callback directly.

        UDP: one datagram from the first socket of the destination's family
        (queued if the socket buffer is full).  TCP: over the connection to
        that (host, port), inbound or outbound (RFC 3261 §18.1.1, §18.2.2),
        else a new connection is opened and ``data`` waits for it.  A host
        name is resolved first (slow path).  Failures go to
        ``on_transport_error``.
        """
        kind = destination.transport
        if kind == "UDP":
            parsed = parse_ip(destination.host)
            if parsed is not None:
                endpoint = self._udp_by_family.get(parsed[0])
                if endpoint is not None:
                    endpoint.send(data, (parsed[1], destination.port))
                else:
                    self._report(destination, "no UDP socket of this address family")
                return
        elif kind == "TCP" or kind == "TLS":  # noqa: PLR1714 - the hot path compares str identity first
            context = self._tcp if kind == "TCP" else self._tls_context
            if context is None:
                return  # not started: nothing can be sent
            connection = context.connections.get((destination.host, destination.port))
            if destination.domain:  # a next hop located by DNS: the SIP domain it proves too
                connection = connection_for_domain(context, destination, connection, self.tls)
            if connection is not None:
                connection.send(data)
                return
            parsed = parse_ip(destination.host)
            if parsed is not None:
                at = Address(kind, parsed[1], destination.port, destination.domain)
                self._send_new_connection(context, data, at)
                return
        elif kind.upper() in TRANSPORTS:
            self.send(data, Address(kind.upper(), destination.host, destination.port))
            return
        else:
            self._report(destination, f"unsupported transport {kind!r}")
            return
        self._spawn(self._send_resolved(data, destination))

    def _send_new_connection(
        self, context: TcpContext, data: bytes, destination: Address, name: str | None = None
    ) -> None:
        existing = context.connections.get((destination.host, destination.port))
        if destination.domain:
            existing = connection_for_domain(context, destination, existing, self.tls)
        if existing is not None:  # the destination was written differently ([::1], 0:0::1)
            existing.send(data)
            return
        if len(context.live) >= context.max_connections and not context.make_room():
            self.stats.connections_refused += 1
            self._report(destination, "connection limit reached")
            return
        connection: TcpConnection
        if context.transport == "TLS":
            built = self._tls_connection(context, destination, name)
            if built is None:
                return
            connection = built
        else:
            connection = TcpConnection(context, destination)  # registered under the destination
        connection.send(data)
        self._spawn(self._connect(connection, destination))

    def _tls_connection(
        self, context: TcpContext, destination: Address, name: str | None
    ) -> TcpConnection | None:
        """A TLS connection to ``destination`` (an IP; ``name``: its host name): see new_tls_connection."""
        settings = self.tls
        if settings is None:
            self._report(destination, "no TLS configured ([tls]) to reach a tls: destination")
            return None
        return new_tls_connection(settings, context, destination, name, on_tls=self._tls_event)

    async def _connect(self, connection: TcpConnection, destination: Address) -> None:
        loop = self._loop
        assert loop is not None  # noqa: S101 - only spawned while running
        try:
            await asyncio.wait_for(connect(loop, connection, destination), self._connect_timeout)
        except TimeoutError:
            connection.connect_failed(f"connect timed out after {self._connect_timeout} s")
        except OSError as error:
            connection.connect_failed(error)
        except asyncio.CancelledError:
            connection.abort()
            raise

    async def _send_resolved(self, data: bytes, destination: Address) -> None:
        try:
            addresses = await self.resolver.resolve(destination.host)
        except OSError as error:
            self._report(destination, error)
            return
        if destination.transport == "UDP":
            usable = [ip for ip in addresses if (parse_ip(ip) or (0, ""))[0] in self._udp_by_family]
            addresses = usable or addresses
        resolved = Address(destination.transport, addresses[0], destination.port)
        if destination.transport == "TLS" and self._tls_context is not None:
            # The name it was routed by is the identity to ask for (SNI).
            self._send_new_connection(self._tls_context, data, resolved, destination.host)
            return
        self.send(data, resolved)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        loop = self._loop
        if loop is None:  # stopped: late sends from the core's timers are dropped
            coroutine.close()
            return
        task = loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _report(self, destination: Address, error: OSError | str) -> None:
        loop = self._loop
        if loop is not None:  # after stop() nobody is listening any more
            loop.call_soon(self._on_transport_error, destination, error)
