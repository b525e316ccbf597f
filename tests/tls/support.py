"""Real TLS peers for sipha's TLS tests, on loopback: certificates, Kamailio, openssl, SIPp, baresip.

Everything here works without sipha (tests/tls/test_peers.py proves it), so that
sipha's TLS end-to-end tests only have to put sipha in the middle::

    SIPp uac --UDP--> Kamailio edge --TLS--> sipha --TLS--> Kamailio member --UDP--> SIPp uas
    baresip  --TLS--> sipha (or the edge, or the member) ...

* :func:`write_pki` (fixture ``pki`` in conftest.py): a trustme CA and PEM files:
  sipha's certificate (``sipha.test`` + ``127.0.0.1``), the members'
  (``sip1.test``/``sip2.test`` + ``127.0.0.1``), the edge's, a client certificate
  for mutual TLS, and the bad ones: wrong host name, expired, from an unknown CA.
* :func:`kamailio_edge` (bench/kamailio/tls-edge.cfg): UDP in, TLS out to a next
  hop, with SNI and a client certificate.
* :func:`kamailio_member` (bench/kamailio/tls-member.cfg): a pair member on TLS
  that answers OPTIONS 200 (503 in backup mode) and relays calls to a SIPp uas over UDP.
* :class:`TlsRecorder`: a Python TLS peer that answers every request 200 and
  records the SNI and client certificate of each connection.
* :func:`openssl_handshake`: ``openssl s_client`` against a TLS port: does the
  certificate verify against a CA, for a name or an IP; is a client certificate accepted.
* :func:`sip_options`: one OPTIONS over UDP or TLS (Python's ssl), its response.
* :func:`sipp_uas`: a SIPp server whose own statistics are read at the end;
  scenarios in tests/tls/scenarios/ (a uas that copies Record-Route, a callee
  that hangs up and its caller); :func:`traced_messages` reads ``-trace_msg`` logs.
* :func:`baresip_call`: baresip places one call over TLS through an outbound
  proxy, holds it, hangs up; its events and log.
* :func:`skip_unless_usable` with ``kamailio_unusable()``, ``baresip_unusable()``,
  ``openssl_unusable()``, ``sipp_unusable()``: skip markers naming what is missing.

Putting sipha in the middle (what the helpers expect of it): sipha listens on
``tls:127.0.0.1:P`` with ``pki.proxy``; the edge is ``kamailio_edge(dir, pki,
tls_uri(P), server_name="sipha.test")`` and SIPp's uac calls
``127.0.0.1:edge.udp_port``; the pair's members are ``tls:127.0.0.1:member.tls_port``
with ``primary-server-name = "sip1.test"`` (``kamailio_member(..., certificate=pki.sip1)``)
and ``pki.sip2`` for the backup; every peer trusts ``pki.ca``.  A member's
in-dialog request toward the caller (the callee hangs up) goes to sipha's
Record-Route: over TLS only if that route says ``transport=tls``.

Every process started here runs in its own session, is bounded in time and is
stopped (its whole process group) when its ``with`` block ends; all traffic is
on 127.0.0.1.  Ports come from :func:`tests.integration.support.free_port`.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import glob
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.support import HOST, SIPP, free_port

if TYPE_CHECKING:
    import trustme

REPO = Path(__file__).resolve().parents[2]
EDGE_CFG = REPO / "bench" / "kamailio" / "tls-edge.cfg"
MEMBER_CFG = REPO / "bench" / "kamailio" / "tls-member.cfg"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
START_TIMEOUT = 10.0

KAMAILIO = shutil.which("kamailio") or next(
    (path for path in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if Path(path).exists()), None
)
KAMAILIO_MODULE_DIRS = (
    "/usr/lib/*/kamailio/modules",
    "/usr/lib/kamailio/modules",
    "/usr/lib64/kamailio/modules",
    "/usr/local/lib*/kamailio/modules",
)
BARESIP = shutil.which("baresip")
BARESIP_MODULE_DIRS = ("/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules")
BARESIP_MODULES = ("account", "menu", "ctrl_tcp", "g711", "ausine", "aubridge")
OPENSSL = shutil.which("openssl")


# ---------------------------------------------------------------------------- tools


def kamailio_tls_module() -> Path | None:
    """Kamailio's tls.so (Debian: kamailio-tls-modules), or None."""
    for pattern in KAMAILIO_MODULE_DIRS:
        for directory in sorted(glob.glob(pattern)):
            module = Path(directory) / "tls.so"
            if module.exists():
                return module
    return None


def kamailio_unusable() -> str | None:
    """Why Kamailio cannot be a TLS peer here (a skip reason), or None."""
    if KAMAILIO is None:
        return "kamailio is not installed (Debian package kamailio)"
    if kamailio_tls_module() is None:
        return "Kamailio's tls module is not installed (Debian package kamailio-tls-modules)"
    return None


def baresip_modules_dir() -> Path | None:
    """The directory holding the baresip modules :func:`baresip_call` loads, or None."""
    for directory in BARESIP_MODULE_DIRS:
        if all((Path(directory) / f"{name}.so").exists() for name in BARESIP_MODULES):
            return Path(directory)
    return None


def baresip_unusable() -> str | None:
    """Why baresip cannot be a TLS user agent here (a skip reason), or None."""
    if BARESIP is None:
        return "baresip is not installed (Debian package baresip-core)"
    if baresip_modules_dir() is None:
        return f"baresip modules {', '.join(BARESIP_MODULES)} not found in {', '.join(BARESIP_MODULE_DIRS)}"
    return None


def openssl_unusable() -> str | None:
    """Why ``openssl s_client`` cannot be used here (a skip reason), or None."""
    return None if OPENSSL is not None else "openssl is not installed (Debian package openssl)"


def sipp_unusable() -> str | None:
    """Why SIPp cannot be used here (a skip reason), or None."""
    return None if SIPP is not None else "sipp is not installed (Debian package sip-tester)"


# ---------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class CertFiles:
    """One certificate as PEM files.

    ``cert``: the leaf then its chain (trustme's: the issuing CA's certificate,
    which a peer still has to trust on its own); ``key``: its private key (ECDSA
    P-256); ``combined``: key, leaf and chain in one file (baresip's
    ``sip_certificate``); ``names``: its subjectAltNames.
    """

    cert: Path
    key: Path
    combined: Path
    names: tuple[str, ...]


@dataclass(frozen=True)
class Pki:
    """The PEM files of :func:`write_pki`, all in ``directory``.

    Good certificates, issued by the CA ``ca`` (the trust anchor every peer gets):

    * ``proxy``: sipha's (``sipha.test``, ``127.0.0.1``): ``[tls] certificate`` / ``key``;
    * ``sip1``, ``sip2``: the pair members' (``sip1.test`` / ``sip2.test``, ``127.0.0.1``);
    * ``edge``: the Kamailio edge's server certificate (``edge.test``, ``127.0.0.1``);
    * ``client``: the client certificate for mutual TLS (``client.test``,
      ``127.0.0.1``), which the edge presents when it connects to sipha.

    Bad ones, for negative tests:

    * ``wrong_host``: from ``ca`` but for ``wrong.test`` (and no IP address);
    * ``expired``: from ``ca``, ``sipha.test``, ``sip1.test`` and ``127.0.0.1``, valid until yesterday;
    * ``unknown_ca``: ``sipha.test`` + ``127.0.0.1`` and ``sip1.test``, from a second CA
      whose certificate is ``other_ca`` (trusted by nobody unless a test says so).
    """

    directory: Path
    ca: Path
    proxy: CertFiles
    sip1: CertFiles
    sip2: CertFiles
    edge: CertFiles
    client: CertFiles
    wrong_host: CertFiles
    expired: CertFiles
    unknown_ca: CertFiles
    other_ca: Path


def _write_leaf(directory: Path, name: str, leaf: trustme.LeafCert, names: tuple[str, ...]) -> CertFiles:
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    key = leaf.private_key_pem.bytes()
    files = CertFiles(
        directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.combined.pem", names
    )
    files.cert.write_bytes(chain)
    files.key.write_bytes(key)
    files.combined.write_bytes(key + chain)
    for path in (files.key, files.combined):
        path.chmod(0o600)
    return files


def write_pki(directory: Path) -> Pki:
    """Create a CA and the certificates of :class:`Pki` as PEM files in ``directory``.

    Needs trustme (a dev dependency; imported here so that a missing trustme skips
    the tests that need certificates, see conftest.py, rather than breaking collection).
    """
    import trustme  # noqa: PLC0415 - see above

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="sipha tests")
    other = trustme.CA(organization_name="sipha tests, unknown CA")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    other.cert_pem.write_to_path(str(directory / "other-ca.pem"))

    def issue(authority: trustme.CA, name: str, *identities: str, **kwargs: Any) -> CertFiles:
        return _write_leaf(directory, name, authority.issue_cert(*identities, **kwargs), identities)

    now = datetime.datetime.now(datetime.UTC)
    return Pki(
        directory=directory,
        ca=directory / "ca.pem",
        proxy=issue(ca, "sipha", "sipha.test", HOST),
        sip1=issue(ca, "sip1", "sip1.test", HOST),
        sip2=issue(ca, "sip2", "sip2.test", HOST),
        edge=issue(ca, "edge", "edge.test", HOST),
        client=issue(ca, "client", "client.test", HOST),
        wrong_host=issue(ca, "wrong-host", "wrong.test"),
        expired=issue(
            ca,
            "expired",
            "sipha.test",
            "sip1.test",
            HOST,
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        ),
        unknown_ca=issue(other, "unknown-ca", "sipha.test", "sip1.test", HOST),
        other_ca=directory / "other-ca.pem",
    )


# ---------------------------------------------------------------------------- processes


def start_process(args: list[str], directory: Path, name: str) -> subprocess.Popen[bytes]:
    """Start ``args`` in ``directory``, in its own session, output to ``directory/name.log``."""
    with (directory / f"{name}.log").open("wb") as out:
        return subprocess.Popen(
            args,
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                # comm may hold spaces and parentheses: fields after the last ')' (state, ppid, pgrp)
                if int(stat[stat.rindex(")") + 2 :].split()[2]) == pgid:
                    members.append(int(entry.name))
    return members


def stop_group(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM to the process's group, wait, then SIGKILL: no child outlives its test.

    Only for processes of :func:`start_process`: each leads its own session, so its
    group holds its own children and nothing else.  Kamailio's main process stops
    its children itself; any left in the group when it is gone are killed.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
    for pid in group_members(process.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


# ---------------------------------------------------------------------------- SIP probes


def tls_uri(port: int, host: str = HOST) -> str:
    """``sip:HOST:PORT;transport=tls``: a next hop for Kamailio, an outbound proxy for baresip."""
    return f"sip:{host}:{port};transport=tls"


def client_context(
    ca: Path | None, server_name: str | None, client_certificate: CertFiles | None = None
) -> ssl.SSLContext:
    """A client context: verifies the peer against ``ca`` (and ``server_name`` when given; else
    only the chain), presents ``client_certificate`` if given; no verification without ``ca``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=str(ca))
        context.check_hostname = server_name is not None
    if client_certificate is not None:
        context.load_cert_chain(str(client_certificate.cert), str(client_certificate.key))
    return context


def _content_length(head: bytes) -> int:
    """The Content-Length of a message head (0 when absent)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            return int(value.strip())
    return 0


def _read_sip_message(sock: socket.socket | ssl.SSLSocket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65535)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = _content_length(head)
    while len(body) < length:
        chunk = sock.recv(65535)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode("utf-8", "replace")


def sip_options(
    port: int,
    *,
    host: str = HOST,
    transport: str = "udp",
    ca: Path | None = None,
    server_name: str | None = None,
    client_certificate: CertFiles | None = None,
    uri: str | None = None,
    timeout: float = 5.0,
) -> str:
    """Send one OPTIONS (no user part: a keepalive) to ``host:port`` and return its final response.

    ``transport="tls"``: over a new TLS connection, SNI ``server_name``, verifying the
    peer against ``ca`` (and ``server_name``, when given); ``client_certificate`` is
    presented if given.  Raises ``OSError`` (``ssl.SSLError``, ``TimeoutError``, ...)
    when no response comes.
    """
    call_id = f"{uuid.uuid4().hex}@{host}"
    uri = uri or (f"sip:{host}:{port}" if transport == "udp" else tls_uri(port, host))

    def request(via_transport: str, local_port: int) -> bytes:
        return "\r\n".join(
            [
                f"OPTIONS {uri} SIP/2.0",
                f"Via: SIP/2.0/{via_transport} {HOST}:{local_port};branch=z9hG4bK{uuid.uuid4().hex};rport",
                f"From: <sip:probe@{HOST}>;tag={uuid.uuid4().hex[:8]}",
                f"To: <{uri}>",
                f"Call-ID: {call_id}",
                "CSeq: 1 OPTIONS",
                "Max-Forwards: 70",
                "Content-Length: 0",
                "",
                "",
            ]
        ).encode()

    deadline = time.monotonic() + timeout
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            udp.settimeout(timeout)
            udp.sendto(request("UDP", int(udp.getsockname()[1])), (host, port))
            while True:
                udp.settimeout(max(0.01, deadline - time.monotonic()))
                response = udp.recv(65535).decode("utf-8", "replace")
                if not response.startswith("SIP/2.0 1"):
                    return response
    if transport != "tls":
        raise ValueError(f"transport {transport!r}: udp or tls")
    context = client_context(ca, server_name, client_certificate)
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        tls.sendall(request("TLS", int(tls.getsockname()[1])))
        while True:
            tls.settimeout(max(0.01, deadline - time.monotonic()))
            response = _read_sip_message(tls)
            if not response.startswith("SIP/2.0 1"):
                return response


def status_of(response: str) -> int:
    """The status code of a response's status line."""
    return int(response.split(" ", 2)[1])


# ---------------------------------------------------------------------------- a recording TLS peer


@dataclass
class TlsAccepted:
    """One TLS connection a :class:`TlsRecorder` accepted (or failed to).

    ``server_name``: the SNI the client sent (None: none); ``client_names``: the
    DNS and IP subjectAltNames of the client certificate it presented and that
    verified against the recorder's CA (empty: none presented); ``error``: why the
    handshake failed (e.g. the client refused our certificate: an alert), else None;
    ``requests``: the request lines it sent (each answered 200).
    """

    server_name: str | None = None
    client_names: tuple[str, ...] = ()
    error: str | None = None
    requests: list[str] = field(default_factory=list)


def _sip_ok(request: str) -> bytes:
    """A 200 to ``request``: its Via, From, Call-ID and CSeq, its To with a tag."""
    head = request.split("\r\n\r\n", 1)[0].split("\r\n")
    kept = [line for line in head[1:] if line.split(":", 1)[0].strip().lower() in ("via", "v", "from", "f")]
    kept += [line for line in head[1:] if line.split(":", 1)[0].strip().lower() in ("call-id", "i", "cseq")]
    to = next(
        (line for line in head[1:] if line.split(":", 1)[0].strip().lower() in ("to", "t")), "To: <sip:x>"
    )
    if ";tag=" not in to:
        to += ";tag=recorder"
    return "\r\n".join(["SIP/2.0 200 OK", *kept, to, "Content-Length: 0", "", ""]).encode()


class TlsRecorder:
    """A TLS SIP peer in a thread: records what each client showed, answers every request 200.

    Listens on ``127.0.0.1:port`` (a free port), presents ``certificate``, asks for
    a client certificate and verifies it against ``ca`` (``require_client``: a
    client without one is refused), and records per connection the SNI and the
    client certificate's names (:class:`TlsAccepted`).  As a pair member
    (``tls:127.0.0.1:PORT``) it answers sipha's OPTIONS 200, so a test can check
    which SNI sipha sends (its ``primary-server-name``) and which certificate it
    presents.  Use as a context manager; the thread and sockets end with it.
    """

    def __init__(self, certificate: CertFiles, ca: Path, *, require_client: bool = False) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(str(certificate.cert), str(certificate.key))
        self.context.load_verify_locations(cafile=str(ca))
        self.context.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
        self.context.sni_callback = self._sni
        self._names: dict[int, str | None] = {}
        self.accepted: list[TlsAccepted] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _sni(self, sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _context: ssl.SSLContext) -> None:
        self._names[id(sock)] = name

    def __enter__(self) -> TlsRecorder:
        thread = threading.Thread(target=self._accept, name=f"tls-recorder-{self.port}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5.0)
        self.listener.close()

    @property
    def uri(self) -> str:
        return tls_uri(self.port)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, raw: socket.socket) -> None:
        seen = TlsAccepted()
        self.accepted.append(seen)
        raw.settimeout(5.0)
        try:
            with self.context.wrap_socket(raw, server_side=True) as tls:
                seen.server_name = self._names.pop(id(tls), None)
                alt_names = (tls.getpeercert() or {}).get("subjectAltName", ())
                seen.client_names = tuple(str(entry[1]) for entry in alt_names if isinstance(entry, tuple))
                tls.settimeout(0.2)
                buffer = b""
                while not self._stop.is_set():
                    try:
                        chunk = tls.recv(65535)
                    except TimeoutError:
                        continue
                    if not chunk:
                        return
                    buffer += chunk
                    while True:
                        buffer = buffer.lstrip(b"\r\n")  # CRLF keep-alives (RFC 5626)
                        head, found, rest = buffer.partition(b"\r\n\r\n")
                        length = _content_length(head)
                        if not found or len(rest) < length:
                            break
                        buffer = rest[length:]
                        text = head.decode("utf-8", "replace")
                        if not text.startswith("SIP/2.0"):
                            seen.requests.append(text.split("\r\n", 1)[0])
                            tls.sendall(_sip_ok(text))
        except (OSError, ValueError) as error:
            seen.error = f"{type(error).__name__}: {error}"
        finally:
            raw.close()


# ---------------------------------------------------------------------------- openssl


def openssl_handshake(
    host: str,
    port: int,
    ca: Path,
    servername: str | None,
    *,
    verify_hostname: str | None = None,
    verify_ip: str | None = None,
    client_certificate: CertFiles | None = None,
    tls_version: str | None = None,
    settle: float = 0.3,
    timeout: float = 10.0,
) -> tuple[bool, str]:
    """``openssl s_client`` to ``host:port``: (the handshake succeeded and the peer verified, output).

    The peer's certificate must chain to ``ca``; ``servername`` is sent as SNI (None:
    ``-noservername``) and is the name verified (``-verify_hostname``) unless
    ``verify_hostname`` names another one; ``verify_ip`` checks an IP SAN instead.
    ``-verify_return_error``: a verification failure aborts the handshake.
    ``client_certificate`` is presented (mutual TLS).  ``tls_version`` ``"1.2"`` or
    ``"1.3"`` pins the version.  In TLS 1.3 a server refuses a missing or bad
    *client* certificate only after the client's side of the handshake is done:
    s_client's stdin stays open ``settle`` seconds so that the refusal (an alert)
    arrives before it exits; pinning 1.2 makes that refusal part of the handshake.
    The output (stdout and stderr) holds ``Verify return code: 0 (ok)``, or the
    reason (``hostname mismatch``, ``certificate has expired``, ``unable to get
    local issuer certificate``, an alert from the peer).
    """
    assert OPENSSL is not None, openssl_unusable()
    args = [OPENSSL, "s_client", "-connect", f"{host}:{port}", "-CAfile", str(ca), "-verify_return_error"]
    args += ["-servername", servername] if servername else ["-noservername"]
    name = verify_hostname or (servername if verify_ip is None else None)
    if name:
        args += ["-verify_hostname", name]
    if verify_ip:
        args += ["-verify_ip", verify_ip]
    if client_certificate is not None:
        args += ["-cert", str(client_certificate.cert), "-key", str(client_certificate.key)]
    if tls_version is not None:
        args.append({"1.2": "-tls1_2", "1.3": "-tls1_3"}[tls_version])
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # stdin stays open ``settle`` s: s_client reads what the server sends after the
        # handshake (TLS 1.3: its verdict on our client certificate), then EOF ends it
        settled = time.monotonic() + settle
        while process.poll() is None and time.monotonic() < settled:
            time.sleep(0.02)
        stdout, _ = process.communicate(timeout=timeout)  # closes stdin: EOF
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, _ = process.communicate()
        return False, stdout.decode("utf-8", "replace") + f"\n(openssl s_client: no end within {timeout} s)"
    output = stdout.decode("utf-8", "replace")
    ok = process.returncode == 0 and "Verify return code: 0 (ok)" in output and " alert " not in output
    return ok, output


# ---------------------------------------------------------------------------- Kamailio


def write_kamailio_tls_cfg(
    path: Path,
    *,
    ca: Path,
    certificate: CertFiles,
    client_certificate: CertFiles | None = None,
    verify_clients: bool = False,
    verify_servers: bool = True,
) -> Path:
    """Write the tls.cfg of Kamailio's tls module (its ``config`` parameter) and return ``path``.

    ``[server:default]``: Kamailio's TLS listen presents ``certificate``; with
    ``verify_clients`` it requires a client certificate chaining to ``ca``.
    ``[client:default]``: the connections Kamailio opens verify the server's chain
    against ``ca`` when ``verify_servers`` (Kamailio 5.6 checks the chain and the
    dates, not the name) and present ``client_certificate``.  TLS 1.2 and later.
    The SNI of those connections is not set here: a ``server_name`` in a client
    profile is not sent; the configs send the ``TLS_SNI`` define (``$xavp(tls=>server_name)``).
    """
    yes = {True: "yes", False: "no"}
    lines = [
        "# written by tests/tls/support.py",
        "[server:default]",
        "method = TLSv1.2+",
        f"verify_certificate = {yes[verify_clients]}",
        f"require_certificate = {yes[verify_clients]}",
        f"certificate = {certificate.cert}",
        f"private_key = {certificate.key}",
        f"ca_list = {ca}",
        "",
        "[client:default]",
        "method = TLSv1.2+",
        f"verify_certificate = {yes[verify_servers]}",
        f"require_certificate = {yes[verify_servers]}",
        f"ca_list = {ca}",
    ]
    if client_certificate is not None:
        lines += [f"certificate = {client_certificate.cert}", f"private_key = {client_certificate.key}"]
    path.write_text("\n".join([*lines, ""]), encoding="utf-8")
    return path


@dataclass
class Kamailio:
    """A Kamailio process of :func:`kamailio_edge` or :func:`kamailio_member`.

    ``udp_port`` and ``tls_port``: its sockets on 127.0.0.1 (the edge's UDP side
    faces SIPp's uac, the member's faces the uas); ``defines``: the ``-A``
    defines it was started with; ``args``: its whole command line.
    """

    name: str
    cfg: Path
    tls_cfg: Path
    udp_port: int
    tls_port: int
    log: Path
    process: subprocess.Popen[bytes]
    defines: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)

    @property
    def tls_uri(self) -> str:
        """``sip:127.0.0.1:TLS_PORT;transport=tls``."""
        return tls_uri(self.tls_port)

    def log_text(self) -> str:
        return read_text(self.log)


def kamailio_args(cfg: Path, rundir: Path, defines: Mapping[str, str | None]) -> list[str]:
    """Kamailio in the foreground (``-DD -E``: no daemon, log to stderr), runtime dir ``rundir``,
    64 MB shared and 8 MB private memory, one ``-A`` per define (``None``: defined, no value)."""
    assert KAMAILIO is not None, kamailio_unusable()
    args = [KAMAILIO, "-DD", "-E", "-f", str(cfg), "-Y", str(rundir), "-m", "64", "-M", "8"]
    for key, value in defines.items():
        args += ["-A", key if value is None else f"{key}={value}"]
    return args


@contextlib.contextmanager
def run_kamailio(
    directory: Path,
    name: str,
    cfg: Path,
    *,
    udp_port: int,
    tls_port: int,
    tls_cfg: Path,
    defines: Mapping[str, str | None],
    timeout: float = START_TIMEOUT,
) -> Iterator[Kamailio]:
    """Start Kamailio with ``cfg`` and wait until it answers an OPTIONS on ``udp_port`` and
    accepts TCP connections on ``tls_port``; stop its process group at the end.

    Its run directory is ``directory/NAME-run``, its log ``directory/NAME.log``.
    """
    rundir = directory / f"{name}-run"
    rundir.mkdir(parents=True, exist_ok=True)
    args = kamailio_args(cfg, rundir, defines)
    process = start_process(args, directory, name)
    kamailio = Kamailio(
        name,
        cfg,
        tls_cfg,
        udp_port,
        tls_port,
        directory / f"{name}.log",
        process,
        {key: value or "" for key, value in defines.items()},
        args,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name}: kamailio exited with {process.returncode}:\n{kamailio.log_text()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: kamailio not ready within {timeout} s:\n{kamailio.log_text()}")
            try:
                sip_options(udp_port, timeout=0.3)
                with socket.create_connection((HOST, tls_port), timeout=0.3):
                    break
            except OSError:
                time.sleep(0.1)
        yield kamailio
    finally:
        stop_group(process)


@contextlib.contextmanager
def kamailio_edge(
    directory: Path,
    pki: Pki,
    next_hop: str,
    *,
    server_name: str | None = "sipha.test",
    client_certificate: CertFiles | None = None,
    present_client_certificate: bool = True,
    certificate: CertFiles | None = None,
    verify_next_hop: bool = True,
    verify_clients: bool = False,
    tcp: bool = False,
    name: str = "edge",
) -> Iterator[Kamailio]:
    """Kamailio as the TLS edge (bench/kamailio/tls-edge.cfg), ready, stopped at the end.

    It listens on 127.0.0.1, UDP on ``edge.udp_port`` (SIPp's uac calls
    ``127.0.0.1:udp_port``) and TLS on ``edge.tls_port``, and relays every request
    without a Route to ``next_hop`` (e.g. ``tls_uri(sipha_port)``) over TLS,
    record-routing both sides.  Its connections to ``next_hop`` verify the chain
    against ``pki.ca`` (``verify_next_hop``), send ``server_name`` as SNI and present
    ``client_certificate`` (default ``pki.client``; none when
    ``present_client_certificate`` is false): sipha with client verification on
    accepts it.  On its TLS port it presents ``certificate`` (default ``pki.edge``)
    and, with ``verify_clients``, requires a client certificate from ``pki.ca``.
    Files: ``directory/NAME.log``, ``NAME-tls.cfg``, ``NAME-run/``.
    """
    udp_port, tls_port = free_port(), free_port()
    tls_cfg = write_kamailio_tls_cfg(
        directory / f"{name}-tls.cfg",
        ca=pki.ca,
        certificate=certificate or pki.edge,
        client_certificate=(client_certificate or pki.client) if present_client_certificate else None,
        verify_clients=verify_clients,
        verify_servers=verify_next_hop,
    )
    defines: dict[str, str | None] = {
        "EDGE_UDP_PORT": str(udp_port),
        "EDGE_TLS_PORT": str(tls_port),
        "NEXT_HOP": f'"{next_hop}"',
        "TLS_CFG": f'"{tls_cfg}"',
    }
    if server_name is not None:
        defines["TLS_SNI"] = f'"{server_name}"'
    if tcp:
        defines["EDGE_TCP"] = None  # also TCP on udp_port: SIPp's uac with -t t1
    with run_kamailio(
        directory, name, EDGE_CFG, udp_port=udp_port, tls_port=tls_port, tls_cfg=tls_cfg, defines=defines
    ) as edge:
        yield edge


@contextlib.contextmanager
def kamailio_member(
    directory: Path,
    pki: Pki,
    uas_port: int,
    *,
    certificate: CertFiles | None = None,
    backup: bool = False,
    verify_clients: bool = False,
    verify_servers: bool = True,
    server_name: str | None = None,
    record_route: bool = True,
    answer_calls: bool = False,
    name: str = "member",
) -> Iterator[Kamailio]:
    """Kamailio as a pair member on TLS (bench/kamailio/tls-member.cfg), ready, stopped at the end.

    It listens for TLS on ``127.0.0.1:member.tls_port`` (sipha's pair member
    ``tls:127.0.0.1:PORT``) presenting ``certificate`` (default ``pki.sip1``:
    ``sip1.test`` + 127.0.0.1; ``pki.sip2`` for the other member; a bad one for a
    negative test), and on UDP ``member.udp_port`` toward the SIPp uas on
    ``127.0.0.1:uas_port``.  It answers an OPTIONS without user part 200
    (``backup``: 503), relays every other request to the uas, record-routing both
    sides.  With ``verify_clients`` its TLS port requires a client certificate
    from ``pki.ca``.  The TLS connections it opens itself (an in-dialog request
    from the uas toward the caller, through whoever record-routed: sipha) verify
    the server's chain against ``pki.ca`` (``verify_servers``), send
    ``server_name`` as SNI if given and present ``certificate`` as client certificate.
    Files: ``directory/NAME.log``, ``NAME-tls.cfg``, ``NAME-run/``.
    """
    certificate = certificate or pki.sip1
    udp_port, tls_port = free_port(), free_port()
    tls_cfg = write_kamailio_tls_cfg(
        directory / f"{name}-tls.cfg",
        ca=pki.ca,
        certificate=certificate,
        client_certificate=certificate,
        verify_clients=verify_clients,
        verify_servers=verify_servers,
    )
    defines: dict[str, str | None] = {
        "MEMBER_TLS_PORT": str(tls_port),
        "MEMBER_UDP_PORT": str(udp_port),
        "UAS": f'"sip:{HOST}:{uas_port}"',
        "TLS_CFG": f'"{tls_cfg}"',
    }
    if server_name is not None:
        defines["TLS_SNI"] = f'"{server_name}"'
    if backup:
        defines["BACKUP"] = None
    if not record_route:
        defines["NO_RECORD_ROUTE"] = None  # out of the route set: in-dialog requests go to the active member
    if answer_calls:
        defines["ANSWER_CALLS"] = None  # the member is the UAS (INVITE/BYE 200): ``uas_port`` unused
    with run_kamailio(
        directory, name, MEMBER_CFG, udp_port=udp_port, tls_port=tls_port, tls_cfg=tls_cfg, defines=defines
    ) as member:
        yield member


# ---------------------------------------------------------------------------- SIPp


@dataclass
class SippStats:
    """What a SIPp run counted (its ``-trace_stat`` file) and its error log."""

    returncode: int | None
    successful: int
    failed: int
    created: int
    stats: dict[str, str]
    errors: str


def read_sipp_stats(stats_file: Path, errors_file: Path, returncode: int | None) -> SippStats:
    rows = list(csv.reader(stats_file.open(encoding="utf-8"), delimiter=";")) if stats_file.exists() else []
    stats = dict(zip(rows[0], rows[-1], strict=False)) if len(rows) > 1 else {}
    return SippStats(
        returncode,
        int(stats.get("SuccessfulCall(C)", "0") or 0),
        int(stats.get("FailedCall(C)", "0") or 0),
        int(stats.get("TotalCallCreated", "0") or 0),
        stats,
        read_text(errors_file),
    )


@dataclass
class SippServer:
    """A SIPp server of :func:`sipp_uas`; ``result()`` reads its statistics so far."""

    port: int
    process: subprocess.Popen[bytes]
    stats_file: Path
    errors_file: Path

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for SIPp to exit (after ``-m`` calls); its return code or None."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.process.wait(timeout)
        return None

    def result(self) -> SippStats:
        return read_sipp_stats(self.stats_file, self.errors_file, self.process.poll())


@contextlib.contextmanager
def sipp_uas(
    directory: Path,
    *args: str,
    scenario: str = "uas",
    name: str = "uas",
    port: int | None = None,
) -> Iterator[SippServer]:
    """A SIPp server on UDP ``127.0.0.1:server.port`` (built-in ``uas`` by default, which
    answers an INVITE 180 + 200 and expects the ACK and a BYE; or an XML file), with
    ``-trace_stat`` (every second) and ``-trace_err`` files named after ``name``;
    ``-m N`` in ``args`` makes it exit, 0 when all N calls succeeded.  Stopped at the end."""
    assert SIPP is not None, sipp_unusable()
    port = port or free_port()
    stats_file, errors_file = directory / f"{name}_stats.csv", directory / f"{name}_errors.log"
    scenario_args = ["-sf", scenario] if scenario.endswith(".xml") else ["-sn", scenario]
    process = start_process(
        [
            SIPP,
            *scenario_args,
            "-i",
            HOST,
            "-p",
            str(port),
            "-nostdin",
            "-trace_stat",
            "-fd",
            "1",
            "-stf",
            str(stats_file),
            "-trace_err",
            "-error_file",
            str(errors_file),
            *args,
        ],
        directory,
        f"{name}_sipp",
    )
    try:
        time.sleep(0.3)  # SIPp binds at once; give it the moment to do so
        if process.poll() is not None:
            raise RuntimeError(f"SIPp server exited early with {process.returncode}")
        yield SippServer(port, process, stats_file, errors_file)
    finally:
        stop_group(process)


# ---------------------------------------------------------------------------- baresip


def free_port_pair() -> int:
    """A port P such that P and P + 1 are free for UDP and TCP on 127.0.0.1: baresip's
    ``sip_listen`` P is its UDP and TCP port, and P + 1 its TLS port."""
    for _ in range(50):
        port = free_port()
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        ):
            try:
                tcp.bind((HOST, port + 1))
                udp.bind((HOST, port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports found")


@dataclass
class BaresipCall:
    """What :func:`baresip_call` saw.

    ``established``: the call was answered (event ``CALL_ESTABLISHED``);
    ``closed``: it ended (``CALL_CLOSED``), after our hang-up or the peer's;
    ``events``: every ctrl_tcp event (dicts with ``type``, ``param``, ...);
    ``log``: baresip's output (with ``-s``: every SIP message it sent and received);
    ``returncode``: baresip's, None if it had to be killed.
    """

    established: bool
    closed: bool
    events: list[dict[str, Any]]
    log: str
    returncode: int | None

    def event_types(self) -> list[str]:
        return [str(event.get("type")) for event in self.events]


def _netstring(payload: dict[str, str]) -> bytes:
    data = json.dumps(payload).encode()
    return str(len(data)).encode() + b":" + data + b","


class _Control:
    """baresip's ctrl_tcp: JSON commands and events in netstrings over TCP."""

    def __init__(self, port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
        while True:
            try:
                self.sock = socket.create_connection((HOST, port), timeout=0.5)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.buffer = b""
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, command: str, params: str = "") -> None:
        self.sock.sendall(_netstring({"command": command, "params": params, "token": uuid.uuid4().hex[:8]}))

    def _messages(self) -> Iterator[dict[str, Any]]:
        while True:
            length, colon, rest = self.buffer.partition(b":")
            if not colon or not length.isdigit() or len(rest) < int(length) + 1:
                return
            payload, self.buffer = rest[: int(length)], rest[int(length) + 1 :]
            message: dict[str, Any] = json.loads(payload)
            yield message

    def until(self, types: set[str], deadline: float) -> str | None:
        """Read events until one of ``types`` (returned) or the deadline (None)."""
        while True:
            for message in self._messages():
                if message.get("event"):
                    self.events.append(message)
                    if message.get("type") in types:
                        return str(message["type"])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65535)
            except TimeoutError:
                return None
            if not chunk:
                return None
            self.buffer += chunk


def write_baresip_config(
    directory: Path,
    *,
    outbound: str,
    ca: Path,
    sip_port: int,
    ctrl_port: int,
    certificate: CertFiles | None = None,
    user: str = "alice",
) -> Path:
    """baresip's ``config`` and ``accounts`` in ``directory`` (its ``-f``); returns ``directory``.

    One account ``<sip:USER@127.0.0.1;transport=tls>``, no registration, every
    request through ``outbound``; trust anchors ``ca`` (``sip_cafile``); the client
    certificate ``certificate`` if given (``sip_certificate``; key and certificate in
    one file).  SIP on 127.0.0.1:``sip_port`` (UDP, TCP) and ``sip_port + 1`` (TLS:
    baresip's choice); no audio device: ``ausine`` as source,
    ``aubridge`` as player; G.711 only; the ``ctrl_tcp`` commands on
    127.0.0.1:``ctrl_port``; no STUN/TURN/ICE, no stdin.
    """
    assert baresip_unusable() is None, baresip_unusable()
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "# written by tests/tls/support.py",
        "poll_method\t\tepoll",
        "net_interface\t\t127.0.0.1",  # SDP and RTP on 127.0.0.1, not the machine's address
        f"sip_listen\t\t{HOST}:{sip_port}",
        f"sip_cafile\t\t{ca}",
        "call_local_timeout\t30",
        "call_max_calls\t\t1",
        "audio_player\t\taubridge,nowhere",
        "audio_source\t\tausine,440",
        "ausrc_srate\t\t48000",  # ausine makes 48 kHz stereo only; baresip resamples for G.711
        "ausrc_channels\t\t2",
        "audio_alert\t\taubridge,nowhere",
        "audio_level\t\tno",
        "rtp_stats\t\tno",
        f"module_path\t\t{baresip_modules_dir()}",
        "module\t\t\tg711.so",
        "module\t\t\tausine.so",
        "module\t\t\taubridge.so",
        "module\t\t\tctrl_tcp.so",
        "module_tmp\t\taccount.so",
        "module_app\t\tmenu.so",
        f"ctrl_tcp_listen\t\t{HOST}:{ctrl_port}",
    ]
    if certificate is not None:
        lines.append(f"sip_certificate\t\t{certificate.combined}")
    (directory / "config").write_text("\n".join([*lines, ""]), encoding="utf-8")
    account = (
        f'<sip:{user}@{HOST};transport=tls>;regint=0;answermode=manual;outbound="{outbound}"'
        ";audio_codecs=pcmu,pcma"
    )
    (directory / "accounts").write_text(account + "\n", encoding="utf-8")
    (directory / "contacts").write_text("", encoding="utf-8")
    return directory


def baresip_call(
    directory: Path,
    *,
    outbound: str,
    target: str,
    ca: Path,
    hold: float = 2.0,
    certificate: CertFiles | None = None,
    timeout: float = 30.0,
    name: str = "baresip",
) -> BaresipCall:
    """baresip places one call to ``target`` through ``outbound``, holds it ``hold`` s, hangs up.

    ``outbound``: the outbound proxy, ``tls_uri(PORT)`` (sipha's TLS listen, or a
    Kamailio's ``tls_port``; baresip adds ``;lr`` itself), sent as the Route of
    every request outside and inside the dialog (until the route set replaces it),
    over TLS.  ``target``: the Request-URI (``sip:service@127.0.0.1:UAS``).
    ``certificate``: presented as client certificate when the server asks (mutual TLS).

    baresip 1.0 (Debian 12) as a TLS client: it loads ``ca`` (``sip_cafile``) but
    does **not** verify the server's certificate (unknown CA, expired, wrong name:
    the call goes through), and sends no SNI.  So it is a TLS user agent for calls,
    not a probe of sipha's certificate: :func:`openssl_handshake` and
    :func:`sip_options` are.

    baresip runs with its own config directory ``directory/NAME/``
    (:func:`write_baresip_config`), ``-t`` bounding its life, ``-s`` tracing SIP
    into ``directory/NAME.log``; it is driven through ``ctrl_tcp``: ``dial``, then
    after ``CALL_ESTABLISHED`` and ``hold`` seconds ``hangup``, then after
    ``CALL_CLOSED`` ``quit``.  Bounded by ``timeout`` (a call never answered,
    e.g. its TLS connection refused, just ends there: ``established`` false).
    """
    assert BARESIP is not None, baresip_unusable()
    sip_port, ctrl_port = free_port_pair(), free_port()
    config = write_baresip_config(
        directory / name,
        outbound=outbound,
        ca=ca,
        sip_port=sip_port,
        ctrl_port=ctrl_port,
        certificate=certificate,
    )
    deadline = time.monotonic() + timeout
    process = start_process(
        [BARESIP, "-4", "-s", "-f", str(config), "-t", str(int(timeout) + 5)], directory, name
    )
    established = closed = False
    control: _Control | None = None
    try:
        control = _Control(ctrl_port, process, min(deadline, time.monotonic() + START_TIMEOUT))
        control.send("dial", target)
        first = control.until({"CALL_ESTABLISHED", "CALL_CLOSED"}, deadline)
        established = first == "CALL_ESTABLISHED"
        closed = first == "CALL_CLOSED"
        if established:
            closed = control.until({"CALL_CLOSED"}, min(deadline, time.monotonic() + hold)) is not None
            if not closed:
                control.send("hangup")
                closed = control.until({"CALL_CLOSED"}, deadline) is not None
        control.send("quit")
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(3.0)
    except OSError:
        pass  # no control connection, or baresip went away: the log tells
    finally:
        if control is not None:
            control.close()
        stop_group(process, timeout=3.0)
    return BaresipCall(
        established,
        closed,
        control.events if control is not None else [],
        read_text(directory / f"{name}.log"),
        process.returncode if process.returncode is not None and process.returncode >= 0 else None,
    )


# ---------------------------------------------------------------------------- SIPp traces

# SIPp -trace_msg: each message follows a line of 47 dashes and a timestamp.
_TRACED = re.compile(
    r"^(?:UDP|TCP|TLS) message (received|sent) (?:\[\d+\] bytes :|\(\d+ bytes\):)\n\n(.*?)(?=^-{47}|\Z)",
    re.M | re.S,
)


def traced_messages(directory: Path, scenario: str, direction: str) -> list[str]:
    """The messages a SIPp run with ``-trace_msg`` logged as ``received`` or ``sent``
    (``scenario``: the scenario's name, e.g. ``uas`` or ``uac_callee_hangup``)."""
    messages: list[str] = []
    for log in sorted(directory.glob(f"{scenario}_*_messages.log")):
        messages += [body for kind, body in _TRACED.findall(read_text(log)) if kind == direction]
    return messages


# ---------------------------------------------------------------------------- skips


def skip_unless_usable(*reasons: str | None) -> pytest.MarkDecorator:
    """A ``skipif`` marker for the tools a test needs, e.g.
    ``skip_unless_usable(kamailio_unusable(), sipp_unusable())``: skipped, with
    every missing tool named, when any of them is missing."""
    missing = [reason for reason in reasons if reason is not None]
    return pytest.mark.skipif(bool(missing), reason="; ".join(missing) or "all tools present")


# ---------------------------------------------------------------------------- hostile clients, renewals
# (tests/tls/test_tls_operations.py)


@dataclass(frozen=True)
class Authority:
    """A trustme CA kept in memory, to issue more certificates during a test (a renewal).

    :func:`write_pki` keeps only PEM files (not the CA's key); a test that must put a
    second certificate from the *same* CA in place while sipha runs makes its own
    authority with :func:`new_authority`: ``ca`` is its certificate (the trust anchor).
    """

    directory: Path
    ca: Path
    authority: trustme.CA

    def issue(self, name: str, *identities: str, **kwargs: Any) -> CertFiles:
        """A leaf for ``identities`` (DNS names, IPs) as PEM files ``NAME.pem``/``NAME.key``."""
        return _write_leaf(self.directory, name, self.authority.issue_cert(*identities, **kwargs), identities)


def new_authority(directory: Path, organization: str = "sipha tests, renewals") -> Authority:
    """A new CA whose certificate is written to ``directory/NAME-ca.pem``; issue with ``.issue()``."""
    import trustme  # noqa: PLC0415 - see write_pki

    directory.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA(organization_name=organization)
    ca = directory / "authority-ca.pem"
    authority.cert_pem.write_to_path(str(ca))
    return Authority(directory, ca, authority)


def client_hello(server_name: str | None = "sipha.test") -> bytes:
    """The first flight of a Python TLS client (a ClientHello, TLS 1.2 and 1.3 offered), as bytes:
    what a hostile client sends before going silent (whole, or cut)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    session = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        session.do_handshake()
    return outgoing.read()


@contextlib.contextmanager
def tls_client(
    port: int,
    context: ssl.SSLContext,
    server_name: str | None,
    *,
    host: str = HOST,
    timeout: float = 5.0,
) -> Iterator[ssl.SSLSocket]:
    """A TLS connection to ``host:port`` with ``context`` (e.g. :func:`client_context`), SNI
    ``server_name``, handshake done; kept open for the ``with`` block (several requests:
    :func:`options_on`), closed at its end."""
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        yield tls


def options_on(sock: ssl.SSLSocket | socket.socket, uri: str, *, timeout: float = 5.0) -> str:
    """One OPTIONS (a keepalive when ``uri`` has no user part) on an open stream connection
    (Via ``TLS`` for an ``ssl.SSLSocket``, else ``TCP``); its final response."""
    transport = "TLS" if isinstance(sock, ssl.SSLSocket) else "TCP"
    local_port = int(sock.getsockname()[1])
    request = "\r\n".join(
        [
            f"OPTIONS {uri} SIP/2.0",
            f"Via: SIP/2.0/{transport} {HOST}:{local_port};branch=z9hG4bK{uuid.uuid4().hex};rport",
            f"From: <sip:probe@{HOST}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <{uri}>",
            f"Call-ID: {uuid.uuid4().hex}@{HOST}",
            "CSeq: 1 OPTIONS",
            "Max-Forwards: 70",
            "Content-Length: 0",
            "",
            "",
        ]
    ).encode()
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    sock.sendall(request)
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        response = _read_sip_message(sock)
        if not response.startswith("SIP/2.0 1"):
            return response
