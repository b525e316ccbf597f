"""The TLS peers of tests/tls/support.py, proven without sipha.

What sipha's TLS end-to-end tests will stand on, each checked here on its own,
all on 127.0.0.1:

* the trustme certificates say what they should (names, dates, issuer);
* SIPp uac --UDP--> Kamailio edge --TLS--> Kamailio member --UDP--> SIPp uas:
  200 calls at 50 calls/s, all successful, every INVITE over TLS in the middle;
  and calls the *callee* hangs up, whose BYE goes back over a TLS connection
  the member opens toward the edge;
* ``openssl s_client`` against the member: its certificate verifies against the
  CA for ``sip1.test`` and 127.0.0.1, not for another name, not against another
  CA; bad certificates fail with the reason; mutual TLS refuses a client without
  a (trusted) certificate;
* the edge sends the SNI and the client certificate it is given (seen by a
  recording TLS peer), and refuses a next hop whose certificate does not verify;
* a member in backup mode answers OPTIONS 503;
* baresip places a call over TLS (to the member, or through the edge), it is
  answered, held, hung up, and the BYE reaches SIPp over the route set; it
  presents its client certificate to a member that requires one;
* ``kamailio -c`` accepts the syntax of both configurations.

Every test is bounded (SIPp's ``-timeout``, subprocess and socket timeouts)
and stops every process it started; skipped, naming the tool, when Kamailio's
tls module, openssl, baresip or SIPp is missing.
"""

from __future__ import annotations

import datetime
import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.integration.support import HOST, run_sipp_client
from tests.tls.support import (
    EDGE_CFG,
    MEMBER_CFG,
    SCENARIOS,
    CertFiles,
    Pki,
    TlsRecorder,
    baresip_call,
    baresip_unusable,
    kamailio_args,
    kamailio_edge,
    kamailio_member,
    kamailio_unusable,
    openssl_handshake,
    openssl_unusable,
    sip_options,
    sipp_uas,
    sipp_unusable,
    skip_unless_usable,
    status_of,
    traced_messages,
    write_kamailio_tls_cfg,
)

pytestmark = [pytest.mark.integration, pytest.mark.tls]

needs_kamailio = skip_unless_usable(kamailio_unusable())
needs_calls = skip_unless_usable(kamailio_unusable(), sipp_unusable())
needs_openssl = skip_unless_usable(kamailio_unusable(), openssl_unusable())
needs_baresip = skip_unless_usable(kamailio_unusable(), sipp_unusable(), baresip_unusable())


def header_values(message: str, name: str) -> list[str]:
    """Every value of header ``name`` in ``message`` (one per line; no comma splitting)."""
    head = message.split("\n\n", 1)[0]
    return [
        line.partition(":")[2].strip()
        for line in head.splitlines()[1:]
        if line.partition(":")[0].strip().lower() == name.lower()
    ]


def no_sipp_failures(directory: Path, name: str) -> str:
    """The failures a SIPp server logged (its caller may still have succeeded); '' if none."""
    errors = directory / f"{name}_errors.log"
    text = errors.read_text(encoding="utf-8", errors="replace") if errors.exists() else ""
    return text if any(word in text for word in ("Aborting call", "unexpected message", "Failed")) else ""


# ---------------------------------------------------------------------------- certificates


def load(files: CertFiles) -> x509.Certificate:
    return x509.load_pem_x509_certificate(files.cert.read_bytes())


def san(files: CertFiles) -> list[str]:
    names = load(files).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in names]


def test_certificates(pki: Pki) -> None:
    """The names, dates and issuers the negative tests rely on."""
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    other = x509.load_pem_x509_certificate(pki.other_ca.read_bytes())
    assert san(pki.proxy) == ["sipha.test", HOST]
    assert san(pki.sip1) == ["sip1.test", HOST]
    assert san(pki.sip2) == ["sip2.test", HOST]
    assert san(pki.client) == ["client.test", HOST]
    assert san(pki.wrong_host) == ["wrong.test"]
    for files in (pki.proxy, pki.sip1, pki.sip2, pki.edge, pki.client, pki.wrong_host, pki.expired):
        assert load(files).issuer == ca.subject
    assert load(pki.unknown_ca).issuer == other.subject != ca.subject
    now = datetime.datetime.now(datetime.UTC)
    assert load(pki.expired).not_valid_after_utc < now
    assert load(pki.proxy).not_valid_after_utc > now + datetime.timedelta(days=30)
    assert pki.proxy.combined.read_bytes().startswith(b"-----BEGIN EC PRIVATE KEY-----")
    for files in (pki.proxy, pki.sip1, pki.client):
        assert files.key.stat().st_mode & 0o077 == 0, files


@needs_kamailio
@pytest.mark.parametrize("cfg", [EDGE_CFG, MEMBER_CFG], ids=["tls-edge", "tls-member"])
def test_kamailio_configs_check(tmp_path: Path, pki: Pki, cfg: Path) -> None:
    """``kamailio -c`` accepts both configurations (the benchmark runs them too), with every
    optional define set: a syntax check (modules are not initialised, tls.cfg not read)."""
    tls_cfg = write_kamailio_tls_cfg(tmp_path / "tls.cfg", ca=pki.ca, certificate=pki.sip1)
    args = kamailio_args(cfg, tmp_path, {"TLS_CFG": f'"{tls_cfg}"', "TLS_SNI": '"sip1.test"', "BACKUP": None})
    checked = subprocess.run([*args, "-c"], capture_output=True, text=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# ---------------------------------------------------------------------------- calls through the peers


@needs_calls
def test_calls_over_tls_between_kamailios(tmp_path: Path, pki: Pki) -> None:
    """SIPp uac -> edge (UDP in, TLS out) -> member (TLS in, UDP out) -> SIPp uas: 200 calls at 50/s.

    The uas sees every INVITE come through both Kamailios with the TLS hop in its
    Via and Record-Route (double record-route: the TLS sockets face each other).
    ``-d 100``: 100 ms between the ACK and the BYE.  SIPp's uac sends them back to
    back by default, and a proxy with several workers (Kamailio's ``children=2``,
    sipha's ``workers``) may then relay the BYE first: SIPp's uas aborts a call
    whose ACK comes after the BYE (seen once in 1,000 calls here), while its
    caller counts it as successful.
    """
    with (
        sipp_uas(tmp_path, "-trace_msg") as uas,
        kamailio_member(tmp_path, pki, uas.port) as member,
        kamailio_edge(tmp_path, pki, member.tls_uri, server_name="sip1.test") as edge,
    ):
        result = run_sipp_client(
            tmp_path, f"{HOST}:{edge.udp_port}", "-m", "200", "-r", "50", "-d", "100", timeout=30
        )
    assert result.failed == 0, result.errors[-4000:]
    assert result.successful == 200, result.stats
    assert not no_sipp_failures(tmp_path, "uas")
    invites = [m for m in traced_messages(tmp_path, "uas", "received") if m.startswith("INVITE ")]
    assert len(invites) == 200
    for invite in invites:
        assert f"SIP/2.0/TLS {HOST}:{edge.tls_port};" in invite, invite
        routes = header_values(invite, "Record-Route")
        assert routes == [
            f"<sip:{HOST}:{member.udp_port};r2=on;lr=on>",
            f"<sip:{HOST}:{member.tls_port};transport=tls;r2=on;lr=on>",
            f"<sip:{HOST}:{edge.tls_port};transport=tls;r2=on;lr=on>",
            f"<sip:{HOST}:{edge.udp_port};r2=on;lr=on>",
        ], invite


@needs_calls
def test_callee_hangs_up_back_over_tls(tmp_path: Path, pki: Pki) -> None:
    """The uas hangs up (tests/tls/scenarios/uas_hangup.xml): its BYE follows the route set,
    so the member opens a TLS connection of its own to the edge; 20 calls, all complete."""
    with (
        sipp_uas(tmp_path, "-m", "20", scenario=str(SCENARIOS / "uas_hangup.xml")) as uas,
        kamailio_member(tmp_path, pki, uas.port) as member,
        kamailio_edge(tmp_path, pki, member.tls_uri, server_name="sip1.test") as edge,
    ):
        result = run_sipp_client(
            tmp_path,
            f"{HOST}:{edge.udp_port}",
            "-m",
            "20",
            "-r",
            "20",
            "-trace_msg",
            scenario=str(SCENARIOS / "uac_callee_hangup.xml"),
            timeout=20,
        )
        uas_code = uas.wait(10)
        uas_result = uas.result()
    assert result.failed == 0, result.errors[-4000:]
    assert result.successful == 20, result.stats
    assert uas_code == 0, uas_result.errors[-4000:]
    assert uas_result.successful == 20, uas_result.stats
    byes = [m for m in traced_messages(tmp_path, "uac_callee_hangup", "received") if m.startswith("BYE ")]
    assert len(byes) >= 20
    for bye in byes:
        vias = header_values(bye, "Via")
        assert f"SIP/2.0/UDP {HOST}:{edge.udp_port};" in vias[0], bye
        assert vias[1].startswith(f"SIP/2.0/TLS {HOST}:{member.tls_port};"), bye


@needs_calls
def test_edge_refuses_a_next_hop_it_cannot_verify(tmp_path: Path, pki: Pki) -> None:
    """The member presents a certificate from the unknown CA: the edge's handshake fails
    (Kamailio verifies the chain), no call gets through."""
    with (
        sipp_uas(tmp_path) as uas,
        kamailio_member(tmp_path, pki, uas.port, certificate=pki.unknown_ca) as member,
        kamailio_edge(tmp_path, pki, member.tls_uri, server_name="sip1.test") as edge,
    ):
        result = run_sipp_client(
            tmp_path, f"{HOST}:{edge.udp_port}", "-m", "2", "-r", "10", "-recv_timeout", "3000", timeout=15
        )
        edge_log = edge.log_text()
    assert result.successful == 0, result.stats
    assert "certificate verify failed" in edge_log, edge_log[-3000:]


# ---------------------------------------------------------------------------- handshakes


@needs_openssl
def test_member_certificate_verifies_for_its_name_only(tmp_path: Path, pki: Pki) -> None:
    """openssl s_client against the member (sip1.test): OK for sip1.test and for 127.0.0.1;
    a hostname mismatch for sip2.test; unverifiable against the other CA."""
    with kamailio_member(tmp_path, pki, 9) as member:
        ok, output = openssl_handshake(HOST, member.tls_port, pki.ca, "sip1.test")
        assert ok, output
        assert "Verified peername: sip1.test" in output
        ok, output = openssl_handshake(HOST, member.tls_port, pki.ca, None, verify_ip=HOST)
        assert ok, output
        ok, output = openssl_handshake(HOST, member.tls_port, pki.ca, "sip2.test")
        assert not ok
        assert "hostname mismatch" in output
        ok, output = openssl_handshake(
            HOST, member.tls_port, pki.ca, "sip1.test", verify_hostname="sip2.test"
        )
        assert not ok
        ok, output = openssl_handshake(HOST, member.tls_port, pki.other_ca, "sip1.test")
        assert not ok
        assert re.search(
            r"unable to get local issuer certificate|self-signed certificate in certificate chain", output
        )
        response = sip_options(member.tls_port, transport="tls", ca=pki.ca, server_name="sip1.test")
        assert status_of(response) == 200, response


@needs_openssl
@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("wrong_host", "hostname mismatch"),
        ("expired", "certificate has expired"),
        ("unknown_ca", "unable to get local issuer certificate"),
    ],
)
def test_bad_member_certificates_fail(tmp_path: Path, pki: Pki, bad: str, reason: str) -> None:
    """A member presenting a bad certificate: s_client (verifying sip1.test) fails, and says why."""
    certificate: CertFiles = getattr(pki, bad)
    with kamailio_member(tmp_path, pki, 9, certificate=certificate) as member:
        ok, output = openssl_handshake(HOST, member.tls_port, pki.ca, "sip1.test")
    assert not ok
    assert reason in output, output


@needs_openssl
def test_mutual_tls(tmp_path: Path, pki: Pki) -> None:
    """A member requiring client certificates: refused without one (TLS 1.3 and 1.2) or with
    one from the unknown CA; accepted with pki.client, and then answers OPTIONS."""
    with kamailio_member(tmp_path, pki, 9, verify_clients=True) as member:
        port = member.tls_port
        for version in (None, "1.2"):
            ok, output = openssl_handshake(HOST, port, pki.ca, "sip1.test", tls_version=version)
            assert not ok, output
            assert re.search(r"alert (certificate required|handshake failure)", output), output
            ok, output = openssl_handshake(
                HOST, port, pki.ca, "sip1.test", client_certificate=pki.unknown_ca, tls_version=version
            )
            assert not ok, output
            assert "alert unknown ca" in output, output
            ok, output = openssl_handshake(
                HOST, port, pki.ca, "sip1.test", client_certificate=pki.client, tls_version=version
            )
            assert ok, output
        response = sip_options(
            port, transport="tls", ca=pki.ca, server_name="sip1.test", client_certificate=pki.client
        )
        assert status_of(response) == 200, response


@needs_kamailio
def test_backup_member_answers_503(tmp_path: Path, pki: Pki) -> None:
    """kamailio_member(backup=True): its OPTIONS answer is 503 (sipha must not find it active)."""
    with kamailio_member(tmp_path, pki, 9, certificate=pki.sip2, backup=True) as member:
        response = sip_options(member.tls_port, transport="tls", ca=pki.ca, server_name="sip2.test")
    assert status_of(response) == 503, response


@needs_kamailio
def test_edge_sends_sni_and_client_certificate(tmp_path: Path, pki: Pki) -> None:
    """The edge's TLS connection to its next hop (a TlsRecorder presenting sipha's certificate)
    carries the SNI it was given and pki.client; without them, neither."""
    with TlsRecorder(pki.proxy, pki.ca) as recorder:
        with kamailio_edge(tmp_path, pki, recorder.uri, server_name="sipha.test") as edge:
            response = sip_options(edge.udp_port, uri=f"sip:someone@{HOST}")
            assert status_of(response) == 200, response
        with kamailio_edge(
            tmp_path, pki, recorder.uri, server_name=None, present_client_certificate=False, name="bare"
        ) as edge:
            response = sip_options(edge.udp_port, uri=f"sip:someone@{HOST}")
            assert status_of(response) == 200, response
    first, second = recorder.accepted
    assert (first.server_name, first.client_names, first.error) == ("sipha.test", ("client.test", HOST), None)
    assert first.requests == [f"OPTIONS sip:someone@{HOST} SIP/2.0"]
    assert (second.server_name, second.client_names, second.error) == (None, (), None)


# ---------------------------------------------------------------------------- baresip


@needs_baresip
@pytest.mark.parametrize("first_hop", ["member", "edge"])
def test_baresip_call_over_tls(tmp_path: Path, pki: Pki, first_hop: str) -> None:
    """baresip -> TLS -> (edge -> TLS ->) member -> UDP -> SIPp uas: answered, held 1 s, hung up.

    The uas (tests/tls/scenarios/uas_record_route.xml) copies the Record-Route, so
    baresip's ACK and BYE follow the route set back over TLS; the uas exits 0
    once the BYE came (``-m 1``).
    """
    with (
        sipp_uas(tmp_path, "-m", "1", "-trace_msg", scenario=str(SCENARIOS / "uas_record_route.xml")) as uas,
        kamailio_member(tmp_path, pki, uas.port) as member,
        kamailio_edge(tmp_path, pki, member.tls_uri, server_name="sip1.test") as edge,
    ):
        proxy = member if first_hop == "member" else edge
        call = baresip_call(
            tmp_path, outbound=proxy.tls_uri, target=f"sip:service@{HOST}:{uas.port}", ca=pki.ca, hold=1.0
        )
        uas_code = uas.wait(10)
        uas_result = uas.result()
    assert call.established, call.log[-6000:]
    assert call.closed, call.event_types()
    assert call.returncode == 0, call.log[-3000:]
    assert uas_code == 0, uas_result.errors
    assert uas_result.successful == 1, uas_result.stats
    # baresip's SIP trace: INVITE and BYE went out over TLS to the first hop
    sent_over_tls = re.findall(rf"^TLS {HOST}:\d+ -> {HOST}:{proxy.tls_port}\n(\w+) ", call.log, re.M)
    assert {"INVITE", "ACK", "BYE"} <= set(sent_over_tls), call.log[-6000:]
    bye = next(m for m in traced_messages(tmp_path, "uas_record_route", "received") if m.startswith("BYE "))
    assert any(via.startswith(f"SIP/2.0/TLS {HOST}:") for via in header_values(bye, "Via")), bye


@needs_baresip
def test_baresip_presents_its_client_certificate(tmp_path: Path, pki: Pki) -> None:
    """A member requiring client certificates takes baresip's call when baresip has pki.client
    (``sip_certificate``)."""
    with (
        sipp_uas(tmp_path, "-m", "1", scenario=str(SCENARIOS / "uas_record_route.xml")) as uas,
        kamailio_member(tmp_path, pki, uas.port, verify_clients=True) as member,
    ):
        call = baresip_call(
            tmp_path,
            outbound=member.tls_uri,
            target=f"sip:service@{HOST}:{uas.port}",
            ca=pki.ca,
            hold=0.5,
            certificate=pki.client,
        )
        uas_code = uas.wait(10)
    assert call.established, call.log[-6000:]
    assert call.closed, call.event_types()
    assert uas_code == 0
