"""Hostile input and operations over TLS, end to end against a running sipha process.

Every test starts ``sipha run`` (tests/tls/sipha.py) listening on UDP and TLS on
127.0.0.1 and talks to it over real sockets:

* plaintext (SIP, HTTP) sent to the TLS port: closed at once, counted ``not_tls``,
  one log line naming the source; a good TLS client is still served;
* slowloris handshakes (nothing, half a ClientHello, a ClientHello then silence):
  dropped after ``handshake-timeout``, counted ``timeout``;
* 1,000 half-open handshakes at once, twice: sipha answers a good client within 2 s,
  its memory stays bounded, every one is dropped by the timeout, one log line in all;
* mutual TLS (``verify-clients`` required and optional, TLS 1.2 and 1.3): unknown CA
  refused (``verify_failed``, logged), no certificate refused only when required,
  pki.client served;
* SIGHUP with a new certificate (renewed in place, or another file; 1 and 2 workers):
  established connections go on, new handshakes get the new certificate, /status shows
  it; a reload to an expired certificate is refused and the old one kept;
* ``keylog-file``: the secrets of sipha's handshakes, the same as the client's;
* ``check-config`` and ``run`` with an expired certificate or a key that does not
  match: exit 2 naming the key, no traceback;
* a pair member whose certificate does not match its ``primary-server-name`` (a
  Kamailio), or that never answers the handshake: named with the reason in the log,
  /status and /metrics, never active.

Figures (close times, resident memory) are printed with ``-s`` (``TLS-OPS`` lines).
Every test is bounded (handshake timeouts of 1 to 4 s, socket timeouts, ``wait_until``)
and stops every process it started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.support import HOST, free_port
from tests.tls.sipha import SiphaTls, TlsMember, TlsPair, run_sipha_tls, wait_until, write_tls_config
from tests.tls.support import (
    CertFiles,
    Pki,
    client_context,
    client_hello,
    kamailio_member,
    kamailio_unusable,
    new_authority,
    options_on,
    sip_options,
    skip_unless_usable,
    status_of,
    tls_client,
    tls_uri,
)

pytestmark = [pytest.mark.integration, pytest.mark.tls]

needs_kamailio = skip_unless_usable(kamailio_unusable())

HALF_OPEN = 1000


# ---------------------------------------------------------------------------- helpers


def unused_pair() -> list[TlsPair]:
    """A pair whose members listen nowhere (sipha needs one to start; no test here needs it)."""
    return [
        TlsPair(
            "p",
            TlsMember(free_port(), server_name="sip1.test"),
            TlsMember(free_port(), server_name="sip2.test"),
        )
    ]


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with ``labels`` in a /metrics text (KeyError: none)."""
    for family in text_string_to_metric_families(metrics):
        for found in family.samples:
            if found.name == name and all(found.labels.get(key) == value for key, value in labels.items()):
                return float(found.value)
    raise KeyError(f"{name}{labels} not in /metrics")


def handshakes(sipha: SiphaTls, outcome: str) -> float:
    return sample(sipha.metrics(), "sipha_tls_handshakes_total", outcome=outcome)


def failed_handshakes(sipha: SiphaTls) -> float:
    """Handshakes counted with any outcome but ok."""
    metrics = sipha.metrics()
    outcomes = ("verify_failed", "peer_refused", "not_tls", "closed", "timeout", "error")
    return sum(sample(metrics, "sipha_tls_handshakes_total", outcome=outcome) for outcome in outcomes)


def tls_open(sipha: SiphaTls) -> float:
    return sample(sipha.metrics(), "sipha_tls_connections_open")


def served(
    sipha: SiphaTls, *, ca: Path, client_certificate: CertFiles | None = None, timeout: float = 5.0
) -> int:
    """A good TLS client's OPTIONS to sipha itself (a keepalive): 200 when a pair has an active
    member, else 503; either proves the TLS port serves."""
    response = sip_options(
        sipha.tls_port,
        transport="tls",
        ca=ca,
        server_name="sipha.test",
        client_certificate=client_certificate,
        timeout=timeout,
    )
    code = status_of(response)
    assert code in (200, 503), response
    return code


def keepalive_uri(sipha: SiphaTls) -> str:
    return tls_uri(sipha.tls_port)


def log_lines(sipha: SiphaTls, pattern: str) -> list[str]:
    return [line for line in sipha.log_text().splitlines() if re.search(pattern, line)]


def closed_after(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the peer closes ``sock`` (EOF or reset), reading and discarding what it
    sends (a server's handshake flight); None if still open after ``timeout``."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except ConnectionResetError:
            return time.monotonic() - start
        except TimeoutError:
            return None


def vm_rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` (VmRSS of /proc/PID/status), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@contextlib.contextmanager
def open_files_limit(needed: int) -> Iterator[None]:
    """This process's RLIMIT_NOFILE soft limit raised to ``needed`` if lower (sipha, started
    inside, inherits it), restored at the end; skip when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def leaf_der(files: CertFiles) -> bytes:
    """The DER of the first certificate of ``files.cert`` (the leaf)."""
    return x509.load_pem_x509_certificate(files.cert.read_bytes()).public_bytes(serialization.Encoding.DER)


def leaf_subject(files: CertFiles) -> str:
    return x509.load_pem_x509_certificate(files.cert.read_bytes()).subject.rfc4514_string()


def pinned(context: ssl.SSLContext, version: str) -> ssl.SSLContext:
    """``context`` limited to TLS ``version`` ("1.2" or "1.3")."""
    chosen = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
    context.minimum_version = context.maximum_version = chosen
    return context


def report(text: str) -> None:
    """A figure for the run's output (``pytest -s``)."""
    print(f"TLS-OPS {text}")


# ---------------------------------------------------------------------------- 1. plaintext on the TLS port

PLAINTEXT_OPTIONS = (
    "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    f"Via: SIP/2.0/TCP {HOST}:5060;branch=z9hG4bKplain;rport\r\n"
    f"From: <sip:probe@{HOST}>;tag=plain\r\n"
    "To: <sip:127.0.0.1>\r\n"
    "Call-ID: plaintext-on-tls\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(PLAINTEXT_OPTIONS.encode(), id="sip-options"),
        pytest.param(b"\r\n\r\n" + PLAINTEXT_OPTIONS.encode(), id="crlf-then-sip"),
        pytest.param(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", id="http-get"),
        pytest.param(b"CONNECT 127.0.0.1:5061 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", id="http-connect"),
    ],
)
def test_plaintext_on_the_tls_port_is_dropped_and_counted(tmp_path: Path, pki: Pki, payload: bytes) -> None:
    """A raw TCP client writes plaintext to the TLS port: sipha closes at once without a SIP
    answer, counts ``not_tls``, logs one line naming the source; a TLS client is still served."""
    with run_sipha_tls(tmp_path, pki, unused_pair()) as sipha:
        with socket.create_connection((HOST, sipha.tls_port), timeout=5) as plain:
            source = int(plain.getsockname()[1])
            plain.sendall(payload)
            received = b""
            plain.settimeout(3)
            start = time.monotonic()
            try:
                while chunk := plain.recv(65536):
                    received += chunk
            except ConnectionResetError:
                pass
            closed_in = time.monotonic() - start
        assert closed_in < 1.0, closed_in
        assert b"SIP/2.0" not in received, received
        wait_until(lambda: failed_handshakes(sipha) == 1, "the handshake failure counted")
        lines = log_lines(sipha, "TLS handshake from")
        served(sipha, ca=pki.ca)
        metrics = sipha.metrics()
    assert sample(metrics, "sipha_tls_handshakes_total", outcome="not_tls") == 1
    assert sample(metrics, "sipha_tls_handshakes_total", outcome="ok") == 1
    assert len(lines) == 1, lines
    assert f"TLS handshake from tls:{HOST}:{source} refused: the peer does not speak TLS" in lines[0], lines
    report(f"plaintext {len(payload)} bytes: closed after {closed_in * 1000:.1f} ms")


# ---------------------------------------------------------------------------- 2. slowloris handshakes


@pytest.mark.parametrize("sends", ["nothing", "half-client-hello", "client-hello-then-silence"])
def test_slow_handshake_is_dropped_after_the_handshake_timeout(tmp_path: Path, pki: Pki, sends: str) -> None:
    """``handshake-timeout = 1.0``: a client that sends nothing, half a ClientHello, or a whole
    one and then nothing (sipha's flight unanswered) is dropped after ~1 s, counted ``timeout``."""
    hello = client_hello()
    with run_sipha_tls(tmp_path, pki, unused_pair(), tls="handshake-timeout = 1.0") as sipha:
        with socket.create_connection((HOST, sipha.tls_port), timeout=5) as slow:
            if sends == "half-client-hello":
                slow.sendall(hello[: len(hello) // 2])
            elif sends == "client-hello-then-silence":
                slow.sendall(hello)
            closed_in = closed_after(slow, 5.0)
        assert closed_in is not None, "still open after 5 s"
        assert 0.8 <= closed_in <= 3.0, closed_in
        wait_until(lambda: handshakes(sipha, "timeout") == 1, "the timeout counted")
        assert tls_open(sipha) == 0
        assert len(log_lines(sipha, "refused: the TLS handshake did not complete in 1 s")) == 1
        served(sipha, ca=pki.ca)
    report(f"slow handshake ({sends}): closed after {closed_in:.3f} s")


# ---------------------------------------------------------------------------- 3. 1,000 half-open handshakes


@dataclasses.dataclass
class Wave:
    """One wave of half-open handshakes: its figures."""

    opened_in: float
    probe: float
    rss_before: int
    rss_peak: int
    rss_after: int
    delays: list[float]
    unclosed: int

    def text(self) -> str:
        delays = self.delays
        growth = self.rss_peak - self.rss_before
        return (
            f"opened in {self.opened_in:.2f} s; a new TLS client answered in {self.probe * 1000:.0f} ms "
            f"while they were open; closed {delays[0]:.2f}-{delays[-1]:.2f} s after opening (median "
            f"{delays[len(delays) // 2]:.2f}); VmRSS {self.rss_before} KiB before, {self.rss_peak} KiB "
            f"with all open (+{growth} KiB, {growth * 1024 // len(delays)} B each), "
            f"{self.rss_after} KiB after"
        )


def half_open_wave(sipha: SiphaTls, pki: Pki, good: ssl.SSLSocket, timeout: float) -> Wave:
    """:data:`HALF_OPEN` connections to sipha's TLS port that never finish a handshake (even ones
    send nothing, odd ones a ClientHello and then nothing, leaving sipha's flight unanswered),
    all open at once; probed while open; each waited for until sipha closes it."""
    hello = client_hello()
    uri = keepalive_uri(sipha)
    pid = sipha.process.pid
    rss_before = vm_rss_kib(pid)
    sockets: list[tuple[socket.socket, float]] = []
    try:
        started = time.monotonic()
        for index in range(HALF_OPEN):
            sock = socket.create_connection((HOST, sipha.tls_port), timeout=5)
            if index % 2:
                sock.sendall(hello)
            sockets.append((sock, time.monotonic()))
        opened_in = time.monotonic() - started
        wait_until(lambda: tls_open(sipha) == HALF_OPEN + 1, "all TLS connections open", timeout=5)
        rss_peak = vm_rss_kib(pid)
        probe_start = time.monotonic()
        served(sipha, ca=pki.ca, timeout=2.0)
        probe = time.monotonic() - probe_start
        assert status_of(options_on(good, uri, timeout=2.0)) in (200, 503)
        assert time.monotonic() - started < timeout, "the probes came too late: the timeout was over"
        close_times = wait_for_closes(sockets, deadline=started + timeout + 10.0)
    finally:
        for sock, _ in sockets:
            sock.close()
    wait_until(lambda: tls_open(sipha) == 1, "only the good client left", timeout=5)
    assert status_of(options_on(good, uri)) in (200, 503)
    delays = sorted(closed for closed in close_times if closed is not None)
    unclosed = len(close_times) - len(delays)
    return Wave(opened_in, probe, rss_before, rss_peak, vm_rss_kib(pid), delays, unclosed)


def test_a_thousand_half_open_handshakes(tmp_path: Path, pki: Pki) -> None:
    """1,000 TCP connections to the TLS port that never finish a handshake (half send nothing,
    half a ClientHello and then nothing), all open at once, with ``handshake-timeout = 4``;
    twice, one wave after the other.

    While they are open a new TLS client is answered within 2 s and an established one
    still is; sipha's resident memory grows by less than 100 MB, and the second wave
    needs less than 25 MB more than the first (bounded: no leak); each is closed by the
    timeout (3.5 to 8 s after it opened); ``sipha_tls_connections_open`` comes back to 1
    (the established client); ``timeout`` counts 2,000; one log line in all (one source IP).
    """
    timeout = 4.0
    with (
        open_files_limit(HALF_OPEN + 512),
        run_sipha_tls(tmp_path, pki, unused_pair(), tls=f"handshake-timeout = {timeout}") as sipha,
    ):
        served(sipha, ca=pki.ca)  # the first handshake loads what it needs: part of the baseline
        context = client_context(pki.ca, "sipha.test")
        with tls_client(sipha.tls_port, context, "sipha.test") as good:
            assert status_of(options_on(good, keepalive_uri(sipha))) in (200, 503)
            waves = [half_open_wave(sipha, pki, good, timeout) for _ in range(2)]
            metrics = sipha.metrics()
        lines = log_lines(sipha, "TLS handshake from")
    for number, wave in enumerate(waves, 1):
        report(f"{HALF_OPEN} half-open handshakes, wave {number}: {wave.text()}")
    for wave in waves:
        assert wave.unclosed == 0, f"{wave.unclosed} connections not closed by sipha"
        assert wave.probe < 2.0, wave.probe
        assert wave.delays[0] >= timeout - 0.5, wave.delays[0]
        assert wave.delays[-1] <= timeout + 4.0, wave.delays[-1]
        # 1,000 silent or stalled handshakes: ~12 KB each once OpenSSL's record buffers wait
        # for the ClientHello (44 KB when the handshake started at accept).
        assert wave.rss_peak - wave.rss_before < 60 * 1024, wave.text()
    assert waves[1].rss_peak - waves[0].rss_peak < 25 * 1024, [wave.text() for wave in waves]
    assert sample(metrics, "sipha_tls_handshakes_total", outcome="timeout") == 2 * HALF_OPEN
    assert sample(metrics, "sipha_tls_handshakes_total", outcome="ok") == 4
    assert len(lines) == 1, lines[:5]
    assert "refused: the TLS handshake did not complete in 4 s" in lines[0]


def wait_for_closes(sockets: list[tuple[socket.socket, float]], deadline: float) -> list[float | None]:
    """For each (socket, opened at): seconds from its opening until the peer closed it (EOF or
    reset), reading and discarding what comes before; None if still open at ``deadline``."""
    closes: list[float | None] = [None] * len(sockets)
    with selectors.DefaultSelector() as selector:
        for index, (sock, _) in enumerate(sockets):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, index)
        pending = len(sockets)
        while pending and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                index = int(key.data)
                sock, opened = sockets[index]
                try:
                    if sock.recv(65536):
                        continue  # sipha's handshake flight: the client never answers it
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    pass
                closes[index] = time.monotonic() - opened
                selector.unregister(sock)
                pending -= 1
    return closes


# ---------------------------------------------------------------------------- 4. mutual TLS


def one_options(sipha: SiphaTls, context: ssl.SSLContext) -> tuple[int, str | None]:
    """A TLS client with ``context`` sends one OPTIONS to sipha: (its source port, the answer, or
    None when sipha refused the handshake).  In TLS 1.3 a server refuses a client certificate
    after the client's side of the handshake is done: the refusal comes on the first read."""
    with socket.create_connection((HOST, sipha.tls_port), timeout=3) as raw:
        port = int(raw.getsockname()[1])
        try:
            with context.wrap_socket(raw, server_hostname="sipha.test") as sock:
                return port, options_on(sock, keepalive_uri(sipha), timeout=3)
        except (ssl.SSLError, ConnectionError):
            return port, None


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("mode", ["required", "optional"])
def test_mutual_tls(tmp_path: Path, pki: Pki, mode: str, version: str) -> None:
    """``verify-clients = "required"``: a client certificate from the unknown CA and no
    certificate are refused (``verify_failed``, a log line each naming the source and why);
    pki.client is served.  ``"optional"``: the unknown CA refused, no certificate served."""
    with run_sipha_tls(tmp_path, pki, unused_pair(), tls=f'verify-clients = "{mode}"') as sipha:
        results = {
            name: one_options(sipha, pinned(client_context(pki.ca, "sipha.test", certificate), version))
            for name, certificate in (("unknown-ca", pki.unknown_ca), ("none", None), ("client", pki.client))
        }
        refused = 2 if mode == "required" else 1
        wait_until(lambda: handshakes(sipha, "verify_failed") == refused, f"{refused} verify_failed")
        # The log line follows the count: on a loaded machine it may reach the file a moment later.
        wait_until(lambda: len(log_lines(sipha, "TLS handshake from")) >= refused, f"{refused} log lines")
        metrics = sipha.metrics()
        lines = log_lines(sipha, "TLS handshake from")
    answers = {name: None if answer is None else status_of(answer) for name, (_, answer) in results.items()}
    assert answers["unknown-ca"] is None
    assert answers["client"] in (200, 503)
    assert sample(metrics, "sipha_tls_handshakes_total", outcome="ok") == 3 - refused
    assert len(lines) == refused, lines
    unknown_ca = f"tls:{HOST}:{results['unknown-ca'][0]} refused: certificate verify failed: "
    assert unknown_ca + "unable to get local issuer certificate" in lines[0], lines
    if mode == "required":
        assert answers["none"] is None
        missing = f"tls:{HOST}:{results['none'][0]} refused: the client presented no certificate"
        assert missing + " (verify-clients = required)" in lines[1], lines
    else:
        assert answers["none"] in (200, 503)


# ------------------------------------------------------------------------ 5. SIGHUP with a new certificate


def copy_certificate(source: CertFiles, cert: Path, key: Path) -> CertFiles:
    shutil.copyfile(source.cert, cert)
    shutil.copyfile(source.key, key)
    key.chmod(0o600)
    return CertFiles(cert, key, source.combined, source.names)


def sighup_and_wait(sipha: SiphaTls, expect: str) -> str:
    """SIGHUP sipha; the log line of the reload (which must contain ``expect``)."""
    before = len(log_lines(sipha, r"SIGHUP|configuration reloaded"))
    os.kill(sipha.process.pid, signal.SIGHUP)
    wait_until(
        lambda: len(log_lines(sipha, r"SIGHUP|configuration reloaded")) > before,
        "the reload logged",
        timeout=10,
    )
    line = log_lines(sipha, r"SIGHUP|configuration reloaded")[before]
    assert expect in line, line
    return line


@pytest.mark.parametrize(("renewal", "workers"), [("same-files", 1), ("new-files", 1), ("same-files", 2)])
def test_sighup_serves_a_new_certificate_and_keeps_established_connections(
    tmp_path: Path, pki: Pki, renewal: str, workers: int
) -> None:
    """TLS connections are established; the certificate is replaced (``same-files``: new content
    under the configured names, a renewal in place; ``new-files``: the configuration names
    others) and sipha gets SIGHUP: the old connections still carry a request and its answer,
    new handshakes get the new certificate, the log says the certificates were re-read (by
    every worker) and /status ``tls.certificate`` describes the new one."""
    authority = new_authority(tmp_path / "authority")
    first = authority.issue("proxy-1", "sipha.test", HOST)
    second = authority.issue("proxy-2", "sipha.test", HOST)
    current = copy_certificate(first, tmp_path / "served.pem", tmp_path / "served.key")
    ours = dataclasses.replace(pki, ca=authority.ca, proxy=current)
    context = client_context(authority.ca, "sipha.test")
    connections = 1 if workers == 1 else 6  # with 2 workers: some on each, most likely
    with (
        run_sipha_tls(tmp_path, ours, unused_pair(), proxy=f"workers = {workers}") as sipha,
        contextlib.ExitStack() as stack,
    ):
        uri = keepalive_uri(sipha)
        olds = [
            stack.enter_context(tls_client(sipha.tls_port, context, "sipha.test")) for _ in range(connections)
        ]
        for old in olds:
            assert old.getpeercert(binary_form=True) == leaf_der(first)
            assert status_of(options_on(old, uri)) in (200, 503)
        assert sipha.status()["tls"]["certificate"]["subject"] == leaf_subject(first)
        if renewal == "same-files":
            copy_certificate(second, current.cert, current.key)
            expected_path = str(current.cert)
        else:
            text = sipha.config.read_text()
            text = text.replace(str(current.cert), str(second.cert)).replace(
                str(current.key), str(second.key)
            )
            sipha.config.write_text(text)
            expected_path = str(second.cert)
        line = sighup_and_wait(sipha, "configuration reloaded from")
        reread = "TLS certificates and trust anchors re-read"
        assert reread in line, line
        if workers > 1:
            every = [f"worker {index}: .*{reread}" for index in range(workers)]
            wait_until(lambda: all(log_lines(sipha, each) for each in every), "every worker reloaded")
        for old in olds:  # the old connections, their old sessions
            assert status_of(options_on(old, uri)) in (200, 503)
            assert old.getpeercert(binary_form=True) == leaf_der(first)
        for _ in range(3 * workers):
            with tls_client(sipha.tls_port, context, "sipha.test") as new:
                assert new.getpeercert(binary_form=True) == leaf_der(second)
                assert status_of(options_on(new, uri)) in (200, 503)
        for old in olds:
            assert status_of(options_on(old, uri)) in (200, 503)
        certificate = sipha.status()["tls"]["certificate"]
        if workers == 1:
            wait_until(lambda: tls_open(sipha) == 1, "the old connection open, the new ones closed")
            assert handshakes(sipha, "ok") == 1 + 3
    assert certificate["subject"] == leaf_subject(second) != leaf_subject(first)
    assert certificate["path"] == expected_path


def test_sighup_with_an_expired_certificate_keeps_the_running_one(tmp_path: Path, pki: Pki) -> None:
    """A renewal gone wrong: the certificate file is replaced by an expired one and sipha gets
    SIGHUP: the reload is refused (logged, naming tls.certificate and "expired"), the old
    certificate is still served, to established and new connections."""
    current = copy_certificate(pki.proxy, tmp_path / "served.pem", tmp_path / "served.key")
    ours = dataclasses.replace(pki, proxy=current)
    context = client_context(pki.ca, "sipha.test")
    with run_sipha_tls(tmp_path, ours, unused_pair()) as sipha:
        uri = keepalive_uri(sipha)
        with tls_client(sipha.tls_port, context, "sipha.test") as old:
            copy_certificate(pki.expired, current.cert, current.key)
            sighup_and_wait(sipha, "not applied, keeping the running one")
            wait_until(lambda: log_lines(sipha, r"tls\.certificate = .*expired on"), "the problem logged")
            assert status_of(options_on(old, uri)) in (200, 503)
            with tls_client(sipha.tls_port, context, "sipha.test") as new:
                assert new.getpeercert(binary_form=True) == leaf_der(pki.proxy)
            certificate = sipha.status()["tls"]["certificate"]
    assert certificate["subject"] == leaf_subject(pki.proxy)
    assert certificate["problems"] == []


# ---------------------------------------------------------------------------- 6. keylog-file


@pytest.mark.parametrize(
    ("version", "label"), [("1.3", "CLIENT_HANDSHAKE_TRAFFIC_SECRET"), ("1.2", "CLIENT_RANDOM")]
)
def test_keylog_file_holds_the_secrets_of_the_handshake(
    tmp_path: Path, pki: Pki, version: str, label: str
) -> None:
    """``keylog-file``: after a handshake the file holds its secrets (SSLKEYLOGFILE format), the
    very lines the client logged for the same handshake (so Wireshark can decrypt it)."""
    keys = tmp_path / "keys.log"
    client_keys = tmp_path / "client-keys.log"
    context = pinned(client_context(pki.ca, "sipha.test"), version)
    context.keylog_filename = str(client_keys)
    with run_sipha_tls(tmp_path, pki, unused_pair(), tls=f'keylog-file = "{keys}"') as sipha:
        with tls_client(sipha.tls_port, context, "sipha.test") as sock:
            assert status_of(options_on(sock, keepalive_uri(sipha))) in (200, 503)
        wait_until(lambda: label in (keys.read_text() if keys.exists() else ""), f"{label} in the key log")
    secrets = {line for line in keys.read_text().splitlines() if line and not line.startswith("#")}
    client = {line for line in client_keys.read_text().splitlines() if line and not line.startswith("#")}
    assert client, "the client logged nothing"
    assert client <= secrets, (client, secrets)
    assert all(re.fullmatch(r"[A-Z_0-9]+ [0-9a-f]{64} [0-9a-f]+", line) for line in secrets), secrets


# ---------------------------------------------------------------------------- 7. check-config


def bad_key(pki: Pki) -> CertFiles:
    """sipha's certificate with the key of another one."""
    return dataclasses.replace(pki.proxy, key=pki.sip1.key)


@pytest.mark.parametrize(
    ("bad", "key", "words"),
    [
        (lambda pki: pki.expired, "tls.certificate", "expired on"),
        (bad_key, "tls.private-key", "does not match tls.certificate"),
    ],
    ids=["expired", "key-mismatch"],
)
def test_bad_certificates_refused_by_check_config_and_run(
    tmp_path: Path, pki: Pki, bad: Callable[[Pki], CertFiles], key: str, words: str
) -> None:
    """``sipha check-config`` exits 2 naming the key and the problem; ``sipha run`` with the same
    file exits non-zero at once with the same line, no traceback, listening nowhere."""
    files = bad(pki)
    tls_port = free_port()
    config = write_tls_config(
        tmp_path / "bad.toml",
        dataclasses.replace(pki, proxy=files),
        unused_pair(),
        udp_port=free_port(),
        tls_port=tls_port,
        admin_port=free_port(),
    )
    checked = subprocess.run(
        [sys.executable, "-m", "sipha", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 2, checked.stdout + checked.stderr
    problems = [line.strip() for line in checked.stderr.splitlines() if line.strip().startswith(f"{key} = ")]
    assert len(problems) == 1, checked.stderr
    assert words in problems[0], problems
    start = time.monotonic()
    ran = subprocess.run(
        [sys.executable, "-m", "sipha", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    took = time.monotonic() - start
    output = ran.stdout + ran.stderr
    assert ran.returncode != 0, output
    assert took < 10.0, took  # at once: the time to start Python and read the files
    assert problems[0] in output, output
    assert "Traceback" not in output, output
    assert "listening on" not in output, output
    report(f"check-config {key}: {problems[0]}; run exited {ran.returncode} after {took:.2f} s")


# ------------------------------------------------------------------------ 8. a member that does not verify


@needs_kamailio
def test_member_with_the_wrong_host_name_is_named_everywhere(tmp_path: Path, pki: Pki) -> None:
    """The primary (a Kamailio) presents pki.wrong_host while sipha verifies ``sip1.test``: within
    seconds the log, /status (members[0].transport_error) and /metrics
    (``sipha_pair_member_transport_error``) say why, and the primary is never active."""
    with kamailio_member(tmp_path, pki, 9, certificate=pki.wrong_host, name="primary") as primary:
        pairs = [
            TlsPair(
                "p",
                TlsMember(primary.tls_port, server_name="sip1.test"),
                TlsMember(free_port(), server_name="sip2.test"),
            )
        ]
        with run_sipha_tls(tmp_path, pki, pairs) as sipha:
            where = f"tls:{HOST}:{primary.tls_port}"
            reason = "TLS handshake failed: certificate verify failed: Hostname mismatch"
            expected = f"pair p: member {where} (primary): {reason}"
            started = time.monotonic()
            wait_until(lambda: log_lines(sipha, re.escape(expected)), "the failure in the log", timeout=10)
            logged_in = time.monotonic() - started
            pair = sipha.pair("p")
            metrics = sipha.metrics()
            line = log_lines(sipha, re.escape(expected))[0]
            lines = log_lines(sipha, re.escape(f"member {where} (primary)"))
    error = pair["members"][0]["transport_error"]
    assert error is not None, pair
    assert error.startswith(reason), error
    assert "'sip1.test'" in error, error
    assert error in line, (error, line)
    assert pair["members"][1]["transport_error"] is None
    assert pair["active"] != "primary", pair
    assert not pair["members"][0]["active"]
    transport_error = "sipha_pair_member_transport_error"
    assert sample(metrics, transport_error, pair="p", member="primary", address=where) == 1
    assert sample(metrics, transport_error, pair="p", member="backup") == 0
    assert sample(metrics, "sipha_pair_active_member", pair="p", member="primary") == 0
    assert sample(metrics, "sipha_tls_handshakes_total", outcome="verify_failed") >= 1
    assert len(lines) == 1, lines  # probed again and again, logged once (the rate limit)
    report(f"member verify failure logged {logged_in:.2f} s after sipha started listening: {line}")


def test_member_that_never_finishes_the_handshake_is_named(tmp_path: Path, pki: Pki) -> None:
    """The primary accepts TCP connections (the kernel does, into a listen backlog nobody
    accepts from) but never answers sipha's ClientHello: with ``handshake-timeout = 1.0`` the
    probe fails after ~1 s, counted ``timeout``, named in the log, /status and /metrics."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind((HOST, 0))
        hung.listen(64)
        port = int(hung.getsockname()[1])
        pairs = [
            TlsPair(
                "p", TlsMember(port, server_name="sip1.test"), TlsMember(free_port(), server_name="sip2.test")
            )
        ]
        with run_sipha_tls(tmp_path, pki, pairs, tls="handshake-timeout = 1.0") as sipha:
            where = f"tls:{HOST}:{port}"
            reason = "TLS handshake failed: the TLS handshake did not complete in 1 s"
            expected = f"pair p: member {where} (primary): {reason}"
            wait_until(lambda: log_lines(sipha, re.escape(expected)), "the timeout in the log", timeout=10)
            pair = sipha.pair("p")
            metrics = sipha.metrics()
    assert pair["members"][0]["transport_error"] == reason, pair
    assert pair["active"] is None, pair
    assert (
        sample(metrics, "sipha_pair_member_transport_error", pair="p", member="primary", address=where) == 1
    )
    assert sample(metrics, "sipha_tls_handshakes_total", outcome="timeout") >= 1
