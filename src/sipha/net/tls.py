"""TLS (RFC 3261 §26.2): what the transports need to know, and one TLS connection.

The configuration layer (:mod:`sipha.tlsconfig`) turns ``[tls]`` into a
:class:`TlsSettings`; the transport manager uses its contexts for ``tls:``
listens and for the connections it opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, cast

from sipha.net.sipdomain import names_sip_domain, sip_domain_identities
from sipha.net.tcp import TcpConnection, TcpContext
from sipha.sip.address import Address

DEFAULT_HANDSHAKE_TIMEOUT: Final = 5.0


class NextHopContext:
    """The client context toward TLS next hops located by DNS: verifies the chain, not the name.

    The name is the SIP domain, checked by :func:`sipha.net.sipdomain.names_sip_domain`
    once the handshake is done (RFC 5922 §7.2 rules, which OpenSSL's check does not
    follow).  The system trust store (no ``ca-file``) is read at the first use: it
    takes tens of milliseconds, and most instances never locate a TLS next hop.
    """

    __slots__ = ("_context", "_system_store")

    def __init__(self, context: ssl.SSLContext, *, system_store: bool) -> None:
        self._context = context
        self._system_store = system_store

    def context(self) -> ssl.SSLContext:
        """The context, its trust anchors loaded."""
        if self._system_store:
            self._system_store = False
            self._context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return self._context


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The TLS contexts and names the transports use; replaced as a whole on reload."""

    server: ssl.SSLContext | None
    """Context of ``tls:`` listens (our certificate, client verification per verify-clients);
    None when no certificate is configured (a ``tls:`` listen is then refused)."""
    members: ssl.SSLContext
    """Client context toward pair members: verifies their certificate and name when
    verify-members is true, and presents our certificate if one is configured."""
    others: ssl.SSLContext
    """Client context toward anyone else (an endpoint a Request-URI names): encrypts,
    does not verify (endpoints rarely hold a certificate for the address they register)."""
    next_hops: NextHopContext | None = None
    """Toward next hops located by DNS from a SIP domain (RFC 5922 §4): the chain verified against
    the trust anchors and the domain against the certificate; None: not verified (verify-members
    = false), the ``others`` context with the domain as SNI."""
    member_names: Mapping[tuple[str, int], str] = field(default_factory=dict)
    """Every ``tls:`` pair member's (host as configured, port) -> the name sent as SNI and
    verified: its ``*-server-name``, else its host (an IP is verified against the
    certificate's IP SANs).  Hosts are IPs in compressed form or lower-case names."""
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    """Seconds a handshake may take, in either direction, before the connection is dropped."""


def describe_failure(error: BaseException) -> tuple[str, str]:
    """(outcome, plain words) for a failed handshake, for the log, /status and /metrics.

    OpenSSL's texts are kept where they are precise ("certificate verify failed:
    Hostname mismatch, certificate is not valid for 'sip1.test'") and named where
    they are cryptic ("wrong version number" is what plaintext looks like to it).
    """
    if isinstance(error, ssl.SSLCertVerificationError):
        detail = (error.verify_message or error.reason or str(error)).rstrip(".")
        return "verify_failed", f"certificate verify failed: {detail}"
    if isinstance(error, ssl.SSLError):
        reason = error.reason or ""
        if reason in {
            "WRONG_VERSION_NUMBER",
            "HTTP_REQUEST",
            "HTTPS_PROXY_REQUEST",
            "UNKNOWN_PROTOCOL",
            "RECORD_LAYER_FAILURE",
        }:
            return "not_tls", f"the peer does not speak TLS ({reason.lower().replace('_', ' ')})"
        if reason.startswith(("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")):
            alert = reason.split("ALERT_", 1)[1].lower().replace("_", " ")
            return "peer_refused", f"the peer refused the handshake (TLS alert: {alert})"
        if reason in {"UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE", "TLSV1_ALERT_PROTOCOL_VERSION"}:
            return "peer_refused", "no TLS version in common (min-version)"
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "verify_failed", "the client presented no certificate (verify-clients = required)"
        if isinstance(error, ssl.SSLEOFError):
            return "closed", "the peer closed the connection during the TLS handshake"
        return "error", f"TLS error: {reason.lower().replace('_', ' ') or error}"
    return "error", f"TLS error: {error}"


OnTlsEvent = Callable[[Address, bool, str, str], None]
"""``(peer, outbound, outcome, text)``: a handshake ended (outcome "ok": text is the
protocol version); ``outbound``: we opened the connection."""


class TlsSession:
    """One TLS endpoint on memory buffers (``ssl.SSLObject``): bytes in, bytes out, no socket.

    asyncio's own TLS support hides handshake failures of accepted connections
    (they never reach the protocol), and a proxy must count and name them: so the
    record layer is driven here, on the connection's raw bytes.
    """

    __slots__ = ("_incoming", "_object", "_outgoing", "established")

    def __init__(self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self.established = False

    def handshake(self) -> bool:
        """Advance the handshake; True once it is complete.  Raises ssl.SSLError on failure."""
        try:
            self._object.do_handshake()
        except ssl.SSLWantReadError:
            return False
        self.established = True
        return True

    def feed(self, data: bytes) -> None:
        """Ciphertext received from the peer."""
        self._incoming.write(data)

    def feed_eof(self) -> None:
        """The peer closed its side of the connection."""
        self._incoming.write_eof()

    def read(self) -> tuple[bytes, bool]:
        """(the plaintext available, whether the peer closed the TLS session)."""
        chunks: list[bytes] = []
        obj = self._object
        while True:
            try:
                chunk = obj.read(65536)
            except ssl.SSLWantReadError:
                return b"".join(chunks), False
            except ssl.SSLZeroReturnError:
                return b"".join(chunks), True
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)

    def encrypt(self, data: bytes) -> None:
        """Plaintext to send: its records go to the output buffer."""
        view = memoryview(data)
        obj = self._object
        while view:
            written = obj.write(view)
            view = view[written:]

    def close(self) -> None:
        """Send close_notify (RFC 8446 §6.1) if the session is up; errors are moot then."""
        if self.established:
            with contextlib.suppress(ssl.SSLError):
                self._object.unwrap()

    def output(self) -> bytes:
        """Ciphertext to write to the socket."""
        return self._outgoing.read()

    @property
    def version(self) -> str:
        """The negotiated protocol version (TLSv1.3), once established."""
        return self._object.version() or ""

    def peer_certificate(self) -> dict[str, object] | None:
        """The peer's certificate, decoded.

        None before the handshake completes or when none was presented; {} when not verified.
        """
        if not self.established:
            return None
        return self._object.getpeercert()  # type: ignore[return-value]


class _TlsWriter:
    """What :class:`TlsConnection` gives its TCP half as ``transport``: writes are encrypted.

    The TCP connection code (buffer limits, pause/resume, close, abort) then works
    unchanged on top of TLS.
    """

    __slots__ = ("_raw", "_session")

    def __init__(self, raw: asyncio.Transport, session: TlsSession) -> None:
        self._raw = raw
        self._session = session

    def write(self, data: bytes) -> None:
        self._session.encrypt(data)
        self._raw.write(self._session.output())

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self._raw.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._raw.is_closing()

    def pause_reading(self) -> None:
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._raw.resume_reading()

    def close(self) -> None:
        if not self._raw.is_closing():
            self._session.close()
            self._raw.write(self._session.output())
        self._raw.close()

    def abort(self) -> None:
        self._raw.abort()


class TlsContext(TcpContext):
    """The TLS connection table: by peer (host, port) as for TCP, and by SIP domain.

    A connection opened to a next hop of SIP domain D (RFC 5922) serves requests for D
    and for any domain its certificate proves; one for another domain at the same IP
    and port gets a connection of its own (a server may present one certificate per
    SNI name), kept in :attr:`by_domain` so the two are not opened and closed in turn.
    """

    __slots__ = ()  # its table by domain is TcpContext.by_domain (compiled: see there)


class TlsConnection(TcpConnection):
    """A TCP connection carrying TLS: the handshake first, then SIP framed as on TCP.

    Until the handshake completes nothing is framed and what the core sends waits
    (as for a TCP connection still connecting).  A handshake that fails or does not
    finish in ``handshake_timeout`` drops the connection, is counted by outcome and
    reported through ``on_tls``; on a connection we opened it is also a transport
    error for what waited on it (RFC 3261 §18.4: the branch or probe fails at once).
    """

    def __init__(
        self,
        context: TcpContext,
        remote: Address | None = None,
        *,
        tls: ssl.SSLContext,
        server_hostname: str | None = None,
        handshake_timeout: float,
        on_tls: OnTlsEvent,
        verify_domain: bool = False,
    ) -> None:
        domain = "" if remote is None else remote.domain
        slot = None if remote is None or not domain else context.connections.get((remote.host, remote.port))
        super().__init__(context, remote)
        if slot is not None and remote is not None:
            # A next hop's connection for another identity keeps the (IP, port) entry.
            context.connections[remote.host, remote.port] = slot
        self._outbound = remote is not None
        self.server_hostname = server_hostname
        """The name this connection verified the peer's certificate against (outbound)."""
        self.domain = domain if verify_domain else ""
        """The SIP domain the peer must prove (RFC 5922 §7.2) before anything is sent; "" none."""
        if self.domain and remote is not None and isinstance(context, TlsContext):
            context.by_domain[remote.host, remote.port, domain] = self
        self._aliases: list[tuple[str, int]] = []
        """RFC 5923 aliases granted (sent-by host, port): unregistered with the connection."""
        self._session = TlsSession(tls, server_side=not self._outbound, server_hostname=server_hostname)
        self._raw: asyncio.Transport | None = None
        self._handshake_timeout = handshake_timeout
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._on_tls = on_tls

    def __repr__(self) -> str:
        return f"<TlsConnection {self.remote} local={self.local}>"

    @property
    def outbound(self) -> bool:
        """Whether we opened this connection (else the peer did)."""
        return self._outbound

    def retire(self) -> None:
        """Not used for new messages any more (its identity changed); closes when idle."""
        self._unregister()

    def proves(self, domain: str) -> bool:
        """Whether the peer's verified certificate carries the SIP domain ``domain`` (RFC 5922 §7.2)."""
        return names_sip_domain(self._session.peer_certificate(), domain)

    def certified_for(self, host: str) -> bool:
        """Whether the peer's verified certificate names ``host`` (a DNS or IP subjectAltName).

        RFC 5923 §5.3 and RFC 5922 §7.1: the identity is the subjectAltName; a
        wildcard covers exactly one leftmost label.  No certificate, or one not
        verified (verify-clients = "none"), names nothing.
        """
        certificate = self._session.peer_certificate() or {}
        names = certificate.get("subjectAltName", ())
        wanted = host.strip("[]").lower()
        try:
            wanted_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(wanted)
        except ValueError:
            wanted_ip = None
        for kind, value in names:  # type: ignore[attr-defined]
            if kind == "IP Address" and wanted_ip is not None:
                with contextlib.suppress(ValueError):
                    if ipaddress.ip_address(str(value).strip()) == wanted_ip:
                        return True
            elif kind == "DNS" and wanted_ip is None:
                name = str(value).lower()
                if name == wanted or (
                    name.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == name[2:]
                ):
                    return True
        return False

    def add_alias(self, host: str, port: int) -> None:
        """Register this connection for requests to ``host:port`` too (until it goes)."""
        self._aliases.append((host, port))
        self._context.connections[host, port] = self

    def _unregister(self) -> None:
        super()._unregister()
        context = self._context
        connections = context.connections
        for key in self._aliases:
            if connections.get(key) is self:
                del connections[key]
        remote = self.remote
        if remote is None or not isinstance(context, TlsContext) or not context.by_domain:
            return
        by_domain = context.by_domain
        if by_domain.get((remote.host, remote.port, self.domain)) is self:
            del by_domain[remote.host, remote.port, self.domain]
        if (remote.host, remote.port) not in connections:
            # Another connection to that peer, opened for another domain, answers for it now
            # (a response to a request that came on it finds it: has_connection).
            for (host, port, _), other in by_domain.items():
                if (host, port) == (remote.host, remote.port):
                    connections[host, port] = other
                    break

    def connection_made(self, base: asyncio.BaseTransport) -> None:  # noqa: D102
        raw = cast("asyncio.Transport", base)
        if not self._admit(raw):
            return
        self._raw = raw
        self._handshake_timer = self._context.loop.call_later(self._handshake_timeout, self._timed_out)
        if self._outbound:
            self._advance()  # our ClientHello
        # An accepted connection waits for the peer's ClientHello: OpenSSL allocates its
        # record buffers (about 33 KB) at the first handshake step, so a connection that
        # never sends anything costs only the SSL object until the handshake timeout.

    def data_received(self, data: bytes) -> None:  # noqa: D102
        session = self._session
        session.feed(data)
        if not session.established:
            self._context.stats.stream_bytes_in += len(data)
            if not self._advance():
                return
        plaintext, closed = session.read()
        if plaintext:
            super().data_received(plaintext)
        if closed and self._raw is not None and not self._raw.is_closing():
            self.close()

    def eof_received(self) -> bool | None:  # noqa: D102
        if not self._session.established:
            self._handshake_failed("closed", "the peer closed the connection during the TLS handshake")
            return None
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self._cancel_handshake_timer()
        if not self._session.established and not self._closing and not self._reported:
            self._handshake_failed("closed", f"the connection was lost during the TLS handshake ({exc})")
        super().connection_lost(exc)

    def _advance(self) -> bool:
        """Drive the handshake with what arrived; True once it is complete (the caller reads)."""
        session = self._session
        raw = self._raw
        assert raw is not None  # noqa: S101 - connection_made set it
        try:
            done = session.handshake()
        except ssl.SSLError as error:
            output = session.output()
            if output:
                raw.write(output)  # our alert: tells the peer why
            outcome, text = describe_failure(error)
            self._handshake_failed(outcome, text)
            return False
        output = session.output()
        if output:
            raw.write(output)
        if not done:
            return False
        if self.domain and not self.proves(self.domain):
            # RFC 5922 §4: the certificate must carry the SIP domain that was resolved.  One
            # that does not is a transport error (RFC 3263 §4.3: the next target is tried).
            self._handshake_failed("verify_failed", self._not_proven(session))
            return False
        self._cancel_handshake_timer()
        remote = self.remote
        assert remote is not None  # noqa: S101 - set by _admit
        self._context.stats.tls_handshakes += 1
        self._on_tls(remote, self._outbound, "ok", session.version)
        self._established(_TlsWriter(raw, session))  # type: ignore[arg-type]
        return True

    def _not_proven(self, session: TlsSession) -> str:
        names = sip_domain_identities(session.peer_certificate() or {})
        named = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "") or "no SIP domain"  # noqa: PLR2004
        return (
            f"certificate verify failed: it does not name the SIP domain {self.domain!r} (RFC 5922: "
            f"it names {named}; no wildcard, no SRV target name)"
        )

    def _timed_out(self) -> None:
        self._handshake_timer = None
        if not self._session.established:
            self._handshake_failed(
                "timeout", f"the TLS handshake did not complete in {self._handshake_timeout:g} s"
            )

    def _handshake_failed(self, outcome: str, text: str) -> None:
        self._cancel_handshake_timer()
        if self._reported or self._closing:
            return
        stats = self._context.stats
        stats.tls_handshake_failures += 1
        if self.domain and repr(self.domain) not in text:
            text = f"{text} (next hop of SIP domain {self.domain!r})"
        remote = self.remote
        if remote is not None:
            self._on_tls(remote, self._outbound, outcome, text)
        if self._outbound:
            self._pending.clear()
            self._fail(f"TLS handshake failed: {text}")
        else:
            self._reported = True
            self._closing = True
            self._unregister()
            if self._raw is not None:
                self._raw.abort()
            else:
                self._forget()

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def abort(self) -> None:  # noqa: D102
        self._cancel_handshake_timer()
        if self.transport is None and self._raw is not None:
            self._closing = True
            self._unregister()
            self._raw.abort()
            return
        super().abort()

    def close(self) -> None:  # noqa: D102
        self._cancel_handshake_timer()
        if self.transport is None and self._raw is not None:
            self._closing = True
            self._unregister()
            self._raw.close()
            return
        super().close()


def grant_alias(context: TcpContext, connection: Address, host: str, port: int) -> bool:
    """RFC 5923 §5: requests to ``host:port`` reuse the TLS connection from ``connection``.

    Granted only when the peer's certificate, verified in the handshake
    (``verify-clients``), names ``host``: the connection is then as good as one we
    would open to it and verify (§5.3).  False when refused, or when another
    connection already serves that address.
    """
    found = context.connections.get((connection.host, connection.port))
    if not isinstance(found, TlsConnection) or found.outbound:
        return False
    existing = context.connections.get((host, port))
    if existing is not None:
        return existing is found
    if not found.certified_for(host):
        context.stats.tls_aliases_refused += 1
        return False
    found.add_alias(host, port)
    return True


def connection_for_domain(
    context: TcpContext, destination: Address, found: TcpConnection | None, settings: TlsSettings | None
) -> TcpConnection | None:
    """The connection that may carry a message to a next hop of SIP domain ``destination.domain``.

    ``found`` is the connection to its (IP, port).  One opened for that domain is used
    first; else, when next hops are verified, ``found`` only if its verified
    certificate proves the domain too (RFC 5922 §7.2; an RFC 5923 alias included);
    None: open one for the domain.
    """
    if isinstance(context, TlsContext):
        mine = context.by_domain.get((destination.host, destination.port, destination.domain))
        if mine is not None:
            return mine
    if found is None or settings is None or settings.next_hops is None:
        return found
    return found if isinstance(found, TlsConnection) and found.proves(destination.domain) else None


def retire_renamed(context: TcpContext, settings: TlsSettings | None) -> None:
    """A reload: stop using connections we opened to a member whose name to verify changed."""
    names = {} if settings is None else settings.member_names
    for connection in list(context.connections.values()):
        if isinstance(connection, TlsConnection) and connection.outbound:
            remote = connection.remote
            if remote is None or remote.domain:
                continue  # a next hop's: its name is the domain it was located from
            if names.get((remote.host, remote.port)) != connection.server_hostname:
                connection.retire()


def new_tls_connection(
    settings: TlsSettings,
    context: TcpContext,
    destination: Address | None,
    name: str | None,
    *,
    on_tls: OnTlsEvent,
) -> TlsConnection:
    """A TLS connection: accepted (``destination`` None) or to open to ``destination``.

    ``destination`` is an IP; ``name`` the host name it was given by.  A next hop
    located by DNS (``destination.domain``) sends its SIP domain as SNI and, with
    ``next_hops``, must prove it (RFC 5922 §4, §7.2).  A pair member is verified with
    the members context against its configured server name, else its IP (a member
    is named by the configuration); anyone else gets the non-verifying context, with
    SNI when a host name is known (RFC 6066 §3: SNI carries host names, never IP literals).
    """
    if destination is None:
        assert settings.server is not None  # noqa: S101 - a tls: listen needs it (checked at listen)
        return TlsConnection(
            context, tls=settings.server, handshake_timeout=settings.handshake_timeout, on_tls=on_tls
        )
    if destination.domain:
        verifying = settings.next_hops
        return TlsConnection(
            context,
            destination,
            tls=settings.others if verifying is None else verifying.context(),
            server_hostname=destination.domain,
            handshake_timeout=settings.handshake_timeout,
            on_tls=on_tls,
            verify_domain=verifying is not None,
        )
    member_name = settings.member_names.get((destination.host, destination.port))
    if member_name is None and name is not None:  # a member configured by host name
        member_name = settings.member_names.get((name.lower(), destination.port))
    tls = settings.others if member_name is None else settings.members
    server_hostname = name if member_name is None else member_name
    return TlsConnection(
        context,
        destination,
        tls=tls,
        server_hostname=server_hostname,
        handshake_timeout=settings.handshake_timeout,
        on_tls=on_tls,
    )
