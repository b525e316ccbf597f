"""TCP: one asyncio Protocol per connection, framed with :class:`sipha.sip.StreamFramer`.

Connections are kept in one table keyed by the peer's ``(host, port)``,
whichever side opened them, so that RFC 3261 §18.2.2 ("the response MUST be
sent using the existing connection to the source of the original request")
and §18.1.1 / RFC 5923-style reuse of an open connection to the next hop
(§18.1.1: "the client transport SHOULD ... use an existing connection") both
come down to one dict lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from sipha.net.addr import parse_ip
from sipha.net.udp import SocketOptions, set_tos
from sipha.sip import Frame, ParserLimits, Ping, SipParseError, StreamFramer
from sipha.sip.address import Address

if TYPE_CHECKING:
    from sipha.net.stats import TransportStats

# RFC 5626 §3.5.1: a double-CRLF ping is answered with a single CRLF pong.
_PONG: Final = b"\r\n"
_MESSAGE_BEGUN: Final = 4
"""Bytes buffered from which a message has begun: fewer may be the start of a CRLF CRLF ping."""

DEFAULT_MESSAGE_TIMEOUT: Final = 10.0
"""s to complete a message once begun, and an accepted connection to send its first ([limits])."""
NOTICE_EVERY: Final = 60.0
"""s between two log lines about connections closed or refused for one reason."""

log = logging.getLogger("sipha")

OnMessage = Callable[[bytes, Address, Address], None]
OnError = Callable[[Address, "OSError | str"], None]
OnBadStream = Callable[[SipParseError, Address], None]


class TcpContext:
    """What the manager shares with its connections: table, limits, callbacks, counters."""

    __slots__ = (
        "by_domain",
        "connections",
        "idle_timeout",
        "ip_tos",
        "limits",
        "live",
        "loop",
        "max_connections",
        "message_timeout",
        "noticed",
        "on_bad_stream",
        "on_error",
        "on_message",
        "silent",
        "stats",
        "transport",
        "write_high",
        "write_max",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        stats: TransportStats,
        on_message: OnMessage,
        on_error: OnError,
        on_bad_stream: OnBadStream | None,
        limits: ParserLimits,
        idle_timeout: float,
        write_high: int,
        write_max: int,
        max_connections: int,
        transport: str = "TCP",
        ip_tos: int = 0,
        message_timeout: float = DEFAULT_MESSAGE_TIMEOUT,
    ) -> None:
        self.transport = transport
        """"TCP", or "TLS" for the connections of :class:`sipha.net.tls.TlsConnection`."""
        self.loop = loop
        self.stats = stats
        self.on_message = on_message
        self.on_error = on_error
        self.on_bad_stream = on_bad_stream
        self.limits = limits
        self.idle_timeout = idle_timeout
        self.write_high = write_high
        self.write_max = write_max
        self.max_connections = max_connections
        self.ip_tos = ip_tos
        """The TOS byte of the connections (:func:`sipha.net.udp.set_tos`); 0: the system default."""
        self.connections: dict[tuple[str, int], TcpConnection] = {}
        """Usable connections (connecting or open, not closing) by peer (host, port)."""
        self.by_domain: dict[tuple[str, int, str], TcpConnection] = {}
        """TLS (:class:`sipha.net.tls.TlsContext`): connections opened to (IP, port) for a SIP domain,
        verified or being verified; empty for TCP.  Here, not in a TlsContext.__init__: compiled
        (setup.py), a subclass' ``super().__init__(**kwargs)`` reaches this one garbled."""
        self.live: set[TcpConnection] = set()
        """Every connection not yet lost, closing ones included (counted against the limit)."""
        self.message_timeout = message_timeout
        """s to complete a message once begun; an accepted connection, to send its first one."""
        self.silent: dict[TcpConnection, None] = {}
        """Accepted connections that have not sent a complete message yet, oldest first: the
        first to go when ``max_connections`` is reached (:meth:`make_room`)."""
        self.noticed: dict[str, tuple[float, int]] = {}
        """Per kind of notice: when it was last logged, and the count then (:meth:`notice`)."""

    def set_ip_tos(self, tos: int) -> None:
        """Mark the connections with ``tos`` from now on, those open included (0: the default)."""
        self.ip_tos = tos
        for connection in list(self.live):
            connection.set_ip_tos(tos)

    def make_room(self) -> bool:
        """At ``max_connections``: close the oldest accepted connection that never sent a message.

        Such a peer opens connections and sends nothing, or trickles bytes (docs/design.md §3,
        "Sources and connections").  False when every connection has sent one.
        """
        for connection in self.silent:
            connection.evict()
            return True
        return False

    def notice(self, kind: str, count: int, text: str) -> None:
        """Log ``text`` at most once per :data:`NOTICE_EVERY` per ``kind`` (``count``: its counter now)."""
        now = self.loop.time()
        last = self.noticed.get(kind)
        if last is not None and now - last[0] < NOTICE_EVERY:
            return
        since = "" if last is None else f" ({count - last[1]} since the last line)"
        log.warning("%s%s", text, since)
        self.noticed[kind] = (now, count)

    def count_open(self) -> None:
        """Update the gauge of open connections of this transport."""
        if self.transport == "TLS":
            self.stats.tls_connections_open = len(self.live)
        else:
            self.stats.connections_open = len(self.live)


class TcpConnection(asyncio.Protocol):
    """One TCP connection, inbound (accepted) or outbound (opened by :meth:`send`)."""

    def __init__(self, context: TcpContext, remote: Address | None = None) -> None:
        self._context = context
        self.transport: asyncio.Transport | None = None
        # Outbound: the destination it is opened to (its table key); inbound: set on accept.
        self.remote = remote
        self.local = Address(context.transport, "", 0)
        self._framer = StreamFramer(context.limits)
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._last_activity = context.loop.time()
        self._idle: asyncio.TimerHandle | None = None
        self._message_since: float | None = None
        """When the message being received began (accepted: when the connection was); None: none."""
        self._message_timer: asyncio.TimerHandle | None = None
        self._silent = False  # accepted, and no complete message yet
        self._paused = False
        self._closing = False  # closed on purpose: no error to report when it goes
        self._reported = False  # an error was reported already
        self._socket: SocketOptions | None = None  # the transport's socket, once made
        if remote is not None:
            context.connections[remote.host, remote.port] = self
            context.live.add(self)
            context.count_open()

    def __repr__(self) -> str:
        return f"<TcpConnection {self.remote} local={self.local}>"

    @property
    def connected(self) -> bool:
        """True once the connection is established."""
        return self.transport is not None

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, base: asyncio.BaseTransport) -> None:  # noqa: D102
        # A stream transport (uvloop's is not an asyncio.Transport subclass, so no isinstance).
        transport = cast("asyncio.Transport", base)
        if self._admit(transport):
            self._established(transport)

    def _admit(self, transport: asyncio.Transport) -> bool:
        """Count and register a connection just made; False when it was refused or given up."""
        context = self._context
        stats = context.stats
        if self.remote is None:
            if len(context.live) >= context.max_connections and not context.make_room():
                # Refused beyond the bound: memory and file descriptors per peer are finite.
                stats.connections_refused += 1
                context.notice(
                    "refused",
                    stats.connections_refused,
                    f"{context.transport}: max-connections = {context.max_connections} reached, every "
                    "connection has sent SIP: new connections are refused ([limits] max-connections)",
                )
                self._closing = True
                transport.abort()
                return False
            peer = transport.get_extra_info("peername")
            self.remote = Address(context.transport, peer[0], peer[1])
            context.connections[peer[0], peer[1]] = self
            context.live.add(self)
            context.count_open()
            context.silent[self] = None
            self._silent = True
            stats.connections_accepted += 1
        elif self._closing:
            transport.abort()  # given up on (stop(), send queue overflow) while connecting
            return False
        else:
            stats.connections_opened += 1
        name = transport.get_extra_info("sockname")
        self.local = Address(context.transport, name[0], name[1])
        self._socket = transport.get_extra_info("socket")
        if context.ip_tos:
            # Accepted: inherited from the listening socket on Linux, set anyway; opened: set
            # before connect (the SYN is marked too), again here in case a reload changed it.
            self.set_ip_tos(context.ip_tos)
        return True

    def set_ip_tos(self, tos: int) -> None:
        """Mark what this connection sends from now on with ``tos`` (0: the system default)."""
        if self._socket is not None:
            with contextlib.suppress(OSError):  # a connection already reset: nothing to mark
                set_tos(self._socket, tos, reset=True)

    def _established(self, transport: asyncio.Transport) -> None:
        """Ready for SIP (for TLS: once the handshake is done): send what waited, watch idleness."""
        context = self._context
        self.transport = transport
        # Above the high-water mark pause_writing() is called: see there.
        transport.set_write_buffer_limits(high=context.write_high)
        self._last_activity = context.loop.time()
        self._idle = context.loop.call_later(context.idle_timeout, self._check_idle)
        if self._silent:  # accepted: its first message is awaited from now on
            self._begin_message(self._last_activity)
        if self._pending:
            pending, self._pending = self._pending, []
            self._pending_size = 0
            for data in pending:
                self.send(data)

    def data_received(self, data: bytes) -> None:  # noqa: D102
        context = self._context
        stats = context.stats
        self._last_activity = context.loop.time()
        stats.stream_bytes_in += len(data)
        remote = self.remote
        assert remote is not None  # noqa: S101 - set before any data arrives
        framer = self._framer
        delivered = False
        for event in framer.feed(data):
            # isinstance narrows the union for mypy and is a pointer comparison compiled (setup.py).
            if isinstance(event, Frame):
                stats.stream_messages_in += 1
                if self._silent:
                    self._silent = False
                    context.silent.pop(self, None)
                delivered = True
                context.on_message(event.data, remote, self.local)
            elif isinstance(event, Ping):
                stats.pings += 1
                if self.transport is not None:
                    self.transport.write(_PONG)
            else:
                self._framing_error(event.error)
                return
        if framer.buffered >= _MESSAGE_BEGUN:
            if delivered or self._message_since is None:  # a message began in these bytes
                self._begin_message(self._last_activity)
        elif delivered:
            self._message_since = None

    def eof_received(self) -> bool | None:  # noqa: D102
        # The peer is done sending; no more requests can come, so close our side too
        # (returning None lets the transport close once our buffered data is written; if that
        # fails, connection_lost gets the error and reports it).
        self._unregister()
        return None

    def pause_writing(self) -> None:  # noqa: D102
        # The peer does not read what we send: stop reading its requests (whose responses
        # would pile up further) until the buffer drains; send() aborts beyond write_max.
        self._paused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:  # noqa: D102
        self._paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        context = self._context
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._message_timer is not None:
            self._message_timer.cancel()
            self._message_timer = None
        self._unregister()
        if self in context.live:
            context.live.discard(self)
            context.count_open()
        if self.remote is not None and not self._closing and not self._reported and exc is not None:
            # Reset or broken: whatever was sent but not acknowledged may be lost
            # (RFC 3261 §18.4: report the failure to the transport user).
            self._reported = True
            context.on_error(self.remote, exc if isinstance(exc, OSError) else str(exc))

    # ------------------------------------------------------------------ used by the manager

    def send(self, data: bytes) -> None:
        """Write ``data``, or hold it until the connection is established."""
        transport = self.transport
        context = self._context
        if transport is None:
            if self._pending_size + len(data) > context.write_max:
                self._fail("connection not established and its send queue is full")
                return
            self._pending.append(data)
            self._pending_size += len(data)
            return
        if transport.is_closing():
            # Reset under us, connection_lost not run yet: it reports the error for this peer
            # (the transactions waiting on it fail, §18.4); writing would only be dropped
            # with a warning per message.
            return
        transport.write(data)
        self._last_activity = context.loop.time()
        stats = context.stats
        stats.stream_messages_out += 1
        stats.stream_bytes_out += len(data)
        if self._paused and transport.get_write_buffer_size() > context.write_max:
            context.stats.write_overflows += 1
            self._fail("peer does not read: write buffer limit exceeded")

    def connect_failed(self, error: OSError | str) -> None:
        """The outbound connection could not be established."""
        self._context.stats.connect_failures += 1
        self._pending.clear()
        self._fail(error)

    def close(self) -> None:
        """Close on purpose (idle, framing error, shutdown): buffered data is still sent."""
        self._closing = True
        self._unregister()
        if self.transport is not None:
            self.transport.close()
        else:
            self._forget()

    def abort(self) -> None:
        """Close at once, dropping buffered data, without reporting an error."""
        self._closing = True
        self._unregister()
        if self.transport is not None:
            self.transport.abort()
        else:
            self._forget()

    # ------------------------------------------------------------------ internals

    def evict(self) -> None:
        """Close at once to make room for a new connection (:meth:`TcpContext.make_room`), counted."""
        context = self._context
        context.stats.connections_evicted += 1
        context.notice(
            "evicted",
            context.stats.connections_evicted,
            f"{context.transport}: max-connections = {context.max_connections} reached: closed the oldest "
            f"connection that sent no complete SIP message ({_peer(self.remote)}) for a new one",
        )
        if self in context.live:
            context.live.discard(self)  # its descriptor is closed now (abort), not at connection_lost
            context.count_open()
        self.abort()

    def _unregister(self) -> None:
        if self._silent:
            self._silent = False
            self._context.silent.pop(self, None)
        remote = self.remote
        if remote is not None:
            key = (remote.host, remote.port)
            connections = self._context.connections
            if connections.get(key) is self:
                del connections[key]

    def _forget(self) -> None:
        # A connection that never got a transport: connection_lost will not run.
        context = self._context
        if self in context.live:
            context.live.discard(self)
            context.count_open()

    def _fail(self, error: OSError | str) -> None:
        """Report ``error`` for this peer once and drop the connection."""
        if not self._reported and self.remote is not None:
            self._reported = True
            self._context.on_error(self.remote, error)
        self.abort()

    def _framing_error(self, error: SipParseError) -> None:
        self._context.stats.framing_errors += 1
        on_bad_stream = self._context.on_bad_stream
        if on_bad_stream is not None and self.remote is not None:
            # Still registered: a 400/513 the core sends now goes out on this connection,
            # before the close below (RFC 3261 §18.3: the stream cannot be resynchronised).
            try:
                on_bad_stream(error, self.remote)
            finally:
                self.close()
        else:
            self.close()

    def _begin_message(self, now: float) -> None:
        """A message began at ``now`` (or an accepted connection's first one is awaited): time it."""
        self._message_since = now
        if self._message_timer is None:
            self._message_timer = self._context.loop.call_later(
                self._context.message_timeout, self._check_message
            )

    def _check_message(self) -> None:
        """A slow peer (slowloris): no complete message within ``message_timeout`` of its first bytes."""
        self._message_timer = None
        since = self._message_since
        if since is None or self._closing:
            return
        context = self._context
        waited = context.loop.time() - since
        if waited < context.message_timeout:
            remaining = context.message_timeout - waited
            self._message_timer = context.loop.call_later(remaining, self._check_message)
            return
        stats = context.stats
        stats.message_timeouts += 1
        what = "sent no complete SIP message" if self._silent else "did not complete a SIP message"
        context.notice(
            "silent" if self._silent else "slow",  # two kinds of peer: a line a minute for each
            stats.message_timeouts,
            f"{context.transport} {_peer(self.remote)}: {what} within {context.message_timeout:g} s "
            f"({self._framer.buffered} bytes waiting): connection closed ([limits] message-timeout)",
        )
        self.close()

    def _check_idle(self) -> None:
        context = self._context
        idle = context.loop.time() - self._last_activity
        if idle >= context.idle_timeout:
            self._idle = None
            context.stats.idle_closes += 1
            self.close()
        else:
            self._idle = context.loop.call_later(context.idle_timeout - idle, self._check_idle)


async def connect(loop: asyncio.AbstractEventLoop, connection: TcpConnection, destination: Address) -> None:
    """Connect ``connection`` (opened by us) to ``destination``, an IP address.

    With a TOS byte to set (``[proxy] sip-ip-tos``) the socket is marked before it
    connects, so that the SYN is too: ``create_connection`` has no hook for it.
    """
    tos = connection._context.ip_tos  # noqa: SLF001 - this module's
    parsed = parse_ip(destination.host)
    if not tos or parsed is None:
        await loop.create_connection(lambda: connection, destination.host, destination.port)
        return
    sock = socket.socket(parsed[0], socket.SOCK_STREAM)
    try:
        sock.setblocking(False)  # noqa: FBT003 - the socket API
        set_tos(sock, tos)
        await loop.sock_connect(sock, (parsed[1], destination.port))
        if connection._context.ip_tos != tos:  # noqa: SLF001 - a reload while connecting
            set_tos(sock, connection._context.ip_tos, reset=True)  # noqa: SLF001
        await loop.create_connection(lambda: connection, sock=sock)  # connection_made marks it again
    except BaseException:
        sock.close()
        raise


def _peer(address: Address | None) -> str:
    """``host:port`` of a peer for the log (an IPv6 host in brackets)."""
    if address is None:  # pragma: no cover - set at accept
        return "?"
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{host}:{address.port}"


async def until_closed(contexts: list[TcpContext]) -> None:
    """Return once every connection of ``contexts`` is lost (polled at a fine grain)."""
    while any(context.live for context in contexts):
        await asyncio.sleep(0.005)
