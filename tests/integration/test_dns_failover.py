"""RFC 3263 end to end: a SIP server's calls to a host name, located by a real DNS server.

A pair member (SIPp, on the member's own address) places calls through sipha to
``sip:service@carrier.test`` (docs/design.md §3 rule 3).  dnsmasq, started by the
test on a loopback port and given to sipha as ``[dns] servers``, publishes three
SRV records for ``_sip._udp.carrier.test``:

* priority 10: a port where nothing listens (ICMP port unreachable: a transport error),
* priority 20: a SIPp that answers every INVITE 503 (``uas_503.xml``),
* priority 30: a SIPp that answers the call (the built-in ``uas``).

RFC 3263 §4.3: the first call goes to the dead target, then to the one that answers
503, then to the third, each time on a new branch; the caller sees one call that
succeeds.  The two targets that failed are then tried last (for a minute): the next
calls go straight to the third.  The branches are read from the SIPp message traces;
the failovers from sipha's /metrics.

Two more, with a pair member that is a UDP socket of the test sending one OPTIONS at a
time (:func:`tests.net.dns_support.member_request`), so that each request's moment is
known:

* **the TTL is honoured**: ``_sip._udp.carrier.test`` names target A with a TTL of
  :data:`TTL` s; the record is changed to target B (dnsmasq restarted); a request sent
  before the first answer expires still goes to A, one sent after it to B;
* **``_sips._tcp`` selects TLS**: a ``sips:`` Request-URI whose domain publishes an SRV
  record for ``_sips._tcp`` only (besides a cleartext one for ``_sip._udp``), and a
  ``sip:`` one whose NAPTR offers only ``SIPS+D2T``, both reach a TLS peer
  (:class:`tests.tls.support.TlsRecorder`, a trustme certificate) over TLS, and the
  cleartext target nothing.  What sipha's TLS client verifies there (RFC 5922: the SIP
  domain, sent as SNI and proven by the certificate; a target that does not prove it is
  failed over like a dead one): the last two tests.
"""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import (
    HOST,
    SIPP,
    Pair,
    free_port,
    run_sipha,
    run_sipp_client,
    sipp_server,
)
from tests.net.dns_support import Dnsmasq, UdpRecorder, dnsmasq_unusable, member_request
from tests.tls.support import CertFiles, TlsRecorder, new_authority, read_text, start_process, stop_group

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (Debian package sip-tester)"),
]

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
CALLS = 100
RATE = 20  # calls/s: the run takes 5 s


@pytest.fixture
def dnsmasq() -> Iterator[Dnsmasq]:
    reason = dnsmasq_unusable()
    if reason is not None:
        pytest.skip(reason)
    server = Dnsmasq()
    try:
        yield server
    finally:
        server.stop()


def received_invites(trace: Path) -> dict[str, list[str]]:
    """Call-ID -> the top Via branches of the INVITEs a SIPp received, from its -trace_msg file."""
    found: dict[str, list[str]] = {}
    text = trace.read_text(encoding="utf-8", errors="replace") if trace.exists() else ""
    for block in re.split(r"^-{10,}.*$", text, flags=re.MULTILINE):
        if "message received" not in block:
            continue
        message = block.split("\n\n", 1)[-1].lstrip()
        if not message.startswith("INVITE "):
            continue
        call_id = re.search(r"^Call-ID:\s*(\S+)", message, re.MULTILINE | re.IGNORECASE)
        branch = re.search(r"^Via:[^\n]*?;branch=([^;,\s]+)", message, re.MULTILINE | re.IGNORECASE)
        assert call_id is not None, message
        assert branch is not None, message
        found.setdefault(call_id.group(1), []).append(branch.group(1))
    return found


def metric(admin: str, name: str) -> float:
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in /metrics"
    return float(match.group(1))


def test_srv_targets_are_tried_in_order_on_new_branches(tmp_path: Path, dnsmasq: Dnsmasq) -> None:
    member, dead, busy, answering = free_port(), free_port(), free_port(), free_port()
    dnsmasq.start(
        [
            f"--srv-host=_sip._udp.carrier.test,dead.carrier.test,{dead},10,0",
            f"--srv-host=_sip._udp.carrier.test,busy.carrier.test,{busy},20,0",
            f"--srv-host=_sip._udp.carrier.test,uas.carrier.test,{answering},30,0",
            f"--host-record=dead.carrier.test,{HOST}",
            f"--host-record=busy.carrier.test,{HOST}",
            f"--host-record=uas.carrier.test,{HOST}",
        ]
    )
    extra = (
        f'\n[dns]\nservers = ["{HOST}:{dnsmasq.port}"]\ntimeout = 1.0\n'
        # The member is taken as active without OPTIONS: it is a SIPp caller, not a server.
        "\n[monitor]\noos-check = 0\n"
    )
    busy_trace, answering_trace = tmp_path / "busy_messages.log", tmp_path / "uas_messages.log"
    with (
        sipp_server(
            tmp_path,
            busy,
            "-trace_msg",
            "-message_file",
            str(busy_trace),
            scenario=str(SCENARIOS / "uas_503.xml"),
            name="busy",
        ),
        sipp_server(tmp_path, answering, "-trace_msg", "-message_file", str(answering_trace)),
        run_sipha(tmp_path, [Pair("carrier", member, free_port())], extra=extra) as proxy,
    ):
        result = run_sipp_client(
            tmp_path,
            f"{HOST}:{proxy.port}",
            "-key",
            "host",
            "carrier.test",
            "-m",
            str(CALLS),
            "-r",
            str(RATE),
            scenario=str(SCENARIOS / "uac_to_host.xml"),
            port=member,
            timeout=60,
        )
        admin = re.search(r'^listen = "([^"]+)"', proxy.config.read_text(), re.MULTILINE)
        assert admin is not None
        failovers = metric(admin.group(1), "sipha_target_failovers_total")
        log = proxy.log_text()
    assert (result.successful, result.failed) == (CALLS, 0), (result.stats, result.errors, log)
    refused = received_invites(busy_trace)
    answered = received_invites(answering_trace)
    print(  # the measured line (pytest -s)
        f"RFC 3263 failover: {result.successful}/{CALLS} calls completed; {len(refused)} went through the"
        f" dead and the busy target first ({failovers:g} failovers); the others straight to the third"
    )
    assert len(answered) == CALLS
    # The first call(s) went through the dead target and the busy one before the third.
    assert refused, "no INVITE reached the target that answers 503"
    for call_id, branches in refused.items():
        (through_busy,) = branches
        (through_answering,) = answered[call_id]
        # RFC 3263 §4.3: "a different value of the Via branch ID than the previous"; both
        # carry the §16.6 step 8 loop hash of the one request (sipha.proxy.rules.prepare).
        assert through_answering != through_busy
        assert through_answering.rsplit(".", 1)[0] == through_busy.rsplit(".", 1)[0]
    # The targets that failed are tried last for a while: later calls went straight through.
    assert len(refused) < CALLS // 2, len(refused)
    assert failovers >= 2 * len(refused)  # dead -> busy -> answering, per call that went that way
    assert "Traceback" not in log


# ---------------------------------------------------------------------------- TTL, _sips._tcp

TTL = 3
"""s: the TTL of every record in the TTL test (dnsmasq --local-ttl); [dns] min-ttl = 0 keeps it."""


def write_sipha_config(
    directory: Path, dns_port: int, member: int, *, tls: CertFiles | None = None, extra: str = ""
) -> tuple[Path, int]:
    """sipha on UDP (and TLS with ``tls``), a pair whose primary is ``member``; the config, the UDP port."""
    port = free_port()
    listen = [f"udp:{HOST}:{port}"] + ([f"tls:{HOST}:{free_port()}"] if tls is not None else [])
    lines = [
        "[proxy]",
        "listen = [" + ", ".join(f'"{address}"' for address in listen) + "]",
        f'record-route = "sip:{HOST}:{port};lr"',
        "[dns]",
        f'servers = ["{HOST}:{dns_port}"]',
        "timeout = 1.0",
        "min-ttl = 0",
        "max-ttl = 60",
        # The member is taken as active without OPTIONS: it is the test's socket, not a server.
        "[monitor]",
        "oos-check = 0",
        "[admin]",
        f'listen = "{HOST}:{free_port()}"',
        *([f'[tls]\ncertificate = "{tls.cert}"\nprivate-key = "{tls.key}"'] if tls is not None else []),
        extra,
        "[[pair]]",
        'name = "carrier"',
        f'primary = "udp:{HOST}:{member}"',
        f'backup = "udp:{HOST}:{free_port()}"',
        "serving = true",
        "",
    ]
    config = directory / "sipha.toml"
    config.write_text("\n".join(lines), encoding="utf-8")
    return config, port


@contextlib.contextmanager
def sipha_process(directory: Path, config: Path) -> Iterator[Path]:
    """``sipha run`` with ``config`` until it listens (at most 40 s); its log; stopped at the end."""
    process = start_process(
        [sys.executable, "-m", "sipha", "run", "--config", str(config)], directory, "sipha"
    )
    log = directory / "sipha.log"
    try:
        deadline = time.monotonic() + 40.0
        while "listening on" not in read_text(log):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sipha did not start:\n{read_text(log)}")
            time.sleep(0.05)
        yield log
    finally:
        stop_group(process, timeout=5.0)


@contextlib.contextmanager
def member_socket() -> Iterator[socket.socket]:
    """The pair member: a UDP socket on a free port of 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, free_port()))
        yield sock


def srv_records(target: str, port: int) -> list[str]:
    """``_sip._udp.carrier.test`` -> ``TARGET.carrier.test:PORT`` -> 127.0.0.1."""
    return [
        f"--srv-host=_sip._udp.carrier.test,{target}.carrier.test,{port},10,0",
        f"--host-record={target}.carrier.test,{HOST}",
    ]


def test_the_ttl_of_a_next_hops_records_is_honoured(tmp_path: Path, dnsmasq: Dnsmasq) -> None:
    with UdpRecorder() as first, UdpRecorder() as second, member_socket() as member:
        dnsmasq.start(srv_records("a", first.port), ttl=TTL)
        config, port = write_sipha_config(tmp_path, dnsmasq.port, member.getsockname()[1])
        with sipha_process(tmp_path, config) as log:
            sent = time.monotonic()
            assert member_request(member, (HOST, port), "sip:x@carrier.test").startswith("SIP/2.0 200")
            answered = time.monotonic()
            assert (len(first.received), len(second.received)) == (1, 0)
            # The record changes: B from now on, for whoever asks the DNS again.
            dnsmasq.restart(srv_records("b", second.port), ttl=TTL)
            before_expiry = time.monotonic()
            # sipha asked the DNS after `sent`: its answers are kept until `sent + TTL` at least.
            assert before_expiry < sent + TTL - 0.5, "dnsmasq took too long to restart for this test"
            assert member_request(member, (HOST, port), "sip:x@carrier.test").startswith("SIP/2.0 200")
            assert (len(first.received), len(second.received)) == (2, 0), "the cached answer was not used"
            # ... and asked before `answered`: they have expired by `answered + TTL`.
            time.sleep(max(0.0, answered + TTL + 0.2 - time.monotonic()))
            after_expiry = time.monotonic()
            assert member_request(member, (HOST, port), "sip:x@carrier.test").startswith("SIP/2.0 200")
            assert (len(first.received), len(second.received)) == (2, 1), "the expired answer was still used"
            text = read_text(log)
        print(  # the measured line (pytest -s)
            f"RFC 3263 TTL: TTL {TTL} s, the record changed after the first lookup: a request at"
            f" +{before_expiry - sent:.2f} s went to A (cached), at +{after_expiry - sent:.2f} s to B"
        )
        assert "Traceback" not in text


@pytest.fixture
def carrier_pki(tmp_path: Path) -> tuple[Path, CertFiles, CertFiles, CertFiles]:
    """A trustme CA; sipha's certificate; the TLS target's, for the SIP domains and its SRV target
    name; and one for another name only (``wrong.test``)."""
    pytest.importorskip("trustme", reason="trustme is not installed (pip install 'trustme>=1.1')")
    authority = new_authority(tmp_path / "pki", "sipha tests, RFC 3263")
    proxy = authority.issue("sipha", "sipha.test", HOST)
    carrier = authority.issue("carrier", "carrier.test", "secure.test", "tls.carrier.test")
    wrong = authority.issue("wrong", "wrong.test")
    return authority.ca, proxy, carrier, wrong


def sips_records(tls_port: int, udp_port: int) -> list[str]:
    """carrier.test: SRV for ``_sips._tcp`` (the TLS peer) and ``_sip._udp`` (a cleartext one);
    secure.test: a NAPTR offering only SIPS+D2T, to its ``_sips._tcp`` SRV (the TLS peer)."""
    return [
        f"--srv-host=_sips._tcp.carrier.test,tls.carrier.test,{tls_port},10,0",
        f"--srv-host=_sip._udp.carrier.test,udp.carrier.test,{udp_port},10,0",
        "--naptr-record=secure.test,10,10,s,SIPS+D2T,,_sips._tcp.secure.test",
        f"--srv-host=_sips._tcp.secure.test,tls.carrier.test,{tls_port},10,0",
        f"--host-record=tls.carrier.test,{HOST}",
        f"--host-record=udp.carrier.test,{HOST}",
    ]


def test_srv_for_sips_tcp_selects_tls(
    tmp_path: Path, dnsmasq: Dnsmasq, carrier_pki: tuple[Path, CertFiles, CertFiles, CertFiles]
) -> None:
    ca, proxy, carrier, _ = carrier_pki
    with TlsRecorder(carrier, ca) as target, UdpRecorder() as cleartext, member_socket() as member:
        dnsmasq.start(sips_records(target.port, cleartext.port))
        config, port = write_sipha_config(
            tmp_path, dnsmasq.port, member.getsockname()[1], tls=proxy, extra=f'ca-file = "{ca}"'
        )
        with sipha_process(tmp_path, config) as log:
            # RFC 3263 §4.1: a SIPS URI "MUST use TLS"; without NAPTR, SRV for _sips._tcp only.
            sips = member_request(member, (HOST, port), "sips:x@carrier.test")
            # §4.1: "A client resolving a SIP URI SHOULD retain records with "SIPS" as the
            # protocol, if the client supports TLS": the NAPTR's only service.
            sip = member_request(member, (HOST, port), "sip:y@secure.test")
            text = read_text(log)
    assert sips.startswith("SIP/2.0 200"), (sips, text)
    assert sip.startswith("SIP/2.0 200"), (sip, text)
    requests = [line for accepted in target.accepted for line in accepted.requests]
    assert "OPTIONS sips:x@carrier.test SIP/2.0" in requests, target.accepted
    assert "OPTIONS sip:y@secure.test SIP/2.0" in requests, target.accepted
    assert cleartext.received == []
    assert all(accepted.error is None for accepted in target.accepted), target.accepted
    # RFC 5922: the SIP domain as SNI; the certificate proves secure.test too, so the connection
    # opened for carrier.test carries secure.test's request.
    assert [accepted.server_name for accepted in target.accepted] == ["carrier.test"]
    print(  # the measured line (pytest -s)
        f"RFC 3263 _sips._tcp: {len(requests)} requests over TLS on {len(target.accepted)} connection(s);"
        f" SNI sent: {sorted({str(accepted.server_name) for accepted in target.accepted})}"
    )
    assert "Traceback" not in text


def test_a_tls_target_located_by_dns_is_verified_against_the_sip_domain(
    tmp_path: Path, dnsmasq: Dnsmasq, carrier_pki: tuple[Path, CertFiles, CertFiles, CertFiles]
) -> None:
    """RFC 5922 §4: the client compares the SIP domain of the URI it resolved with the
    certificate's names; §7.2 (as RFC 6066 asks) it sends that domain as SNI.  A target
    whose certificate names another domain (``wrong.test``, from a CA sipha trusts) must
    not get the request: with no other target, the member gets 408 (§16.6 step 7)."""
    ca, proxy, _, wrong = carrier_pki
    with TlsRecorder(wrong, ca) as target, UdpRecorder() as cleartext, member_socket() as member:
        dnsmasq.start(sips_records(target.port, cleartext.port))
        config, port = write_sipha_config(
            tmp_path, dnsmasq.port, member.getsockname()[1], tls=proxy, extra=f'ca-file = "{ca}"'
        )
        with sipha_process(tmp_path, config) as log:
            answer = member_request(member, (HOST, port), "sips:x@carrier.test")
            text = read_text(log)
    assert answer.startswith("SIP/2.0 408"), (answer, text)
    assert [accepted.server_name for accepted in target.accepted] == ["carrier.test"]
    assert not [line for accepted in target.accepted for line in accepted.requests]
    assert cleartext.received == []
    assert "does not name the SIP domain 'carrier.test' (RFC 5922: it names wrong.test;" in text, text


def failover_records(wrong_port: int, good_port: int) -> list[str]:
    """``_sips._tcp.carrier.test``: first a target whose certificate names another domain, then one
    whose certificate names carrier.test (both from the CA sipha trusts)."""
    return [
        f"--srv-host=_sips._tcp.carrier.test,bad.carrier.test,{wrong_port},10,0",
        f"--srv-host=_sips._tcp.carrier.test,tls.carrier.test,{good_port},20,0",
        f"--host-record=bad.carrier.test,{HOST}",
        f"--host-record=tls.carrier.test,{HOST}",
    ]


def metric_value(config: Path, line_start: str) -> float:
    """The value of the /metrics line beginning with ``line_start`` (0 when absent)."""
    admin = re.search(r'^listen = "([^"]+)"', config.read_text(), re.MULTILINE)
    assert admin is not None
    with urllib.request.urlopen(f"http://{admin.group(1)}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


def test_a_tls_target_that_does_not_prove_the_sip_domain_is_failed_over(
    tmp_path: Path, dnsmasq: Dnsmasq, carrier_pki: tuple[Path, CertFiles, CertFiles, CertFiles]
) -> None:
    """RFC 5922 §4 with RFC 3263 §4.3: a failed verification is a transport error for that target;
    the request goes to the next one, which proves carrier.test; logged and counted."""
    ca, proxy, carrier, wrong = carrier_pki
    with TlsRecorder(wrong, ca) as impostor, TlsRecorder(carrier, ca) as target, member_socket() as member:
        dnsmasq.start(failover_records(impostor.port, target.port))
        config, port = write_sipha_config(
            tmp_path, dnsmasq.port, member.getsockname()[1], tls=proxy, extra=f'ca-file = "{ca}"'
        )
        with sipha_process(tmp_path, config) as log:
            started = time.monotonic()
            first = member_request(member, (HOST, port), "sips:x@carrier.test")
            took = time.monotonic() - started
            second = member_request(member, (HOST, port), "sips:y@carrier.test")
            verify_failed = metric_value(config, 'sipha_tls_handshakes_total{outcome="verify_failed"}')
            failovers = metric_value(config, "sipha_target_failovers_total")
            text = read_text(log)
    assert first.startswith("SIP/2.0 200"), (first, text)
    assert second.startswith("SIP/2.0 200"), (second, text)
    assert [accepted.server_name for accepted in impostor.accepted] == ["carrier.test"]
    assert not [line for accepted in impostor.accepted for line in accepted.requests]
    requests = [line for accepted in target.accepted for line in accepted.requests]
    assert requests == ["OPTIONS sips:x@carrier.test SIP/2.0", "OPTIONS sips:y@carrier.test SIP/2.0"]
    assert {accepted.server_name for accepted in target.accepted} == {"carrier.test"}
    assert "does not name the SIP domain 'carrier.test'" in text, text
    assert (verify_failed, failovers) == (1, 1)  # the second request went straight to the good one
    print(  # the measured line (pytest -s)
        f"RFC 5922 failover: the target naming wrong.test refused ({verify_failed:g} verify_failed),"
        f" the request answered by the next target in {took * 1000:.0f} ms; the next one went straight there"
    )
    assert "Traceback" not in text


def test_a_connection_verified_for_one_domain_is_not_used_for_another(
    tmp_path: Path, dnsmasq: Dnsmasq, carrier_pki: tuple[Path, CertFiles, CertFiles, CertFiles]
) -> None:
    """One TLS peer (IP and port) for two SIP domains, a certificate for carrier.test only: the
    connection opened for carrier.test does not carry other.test's request, which gets a
    connection of its own (SNI other.test), fails its verification and reaches nobody."""
    ca, proxy, _, _ = carrier_pki
    # The peer's certificate from a second CA that sipha trusts too; the peer verifies sipha's
    # client certificate against the first.
    only = new_authority(tmp_path / "only", "sipha tests, one domain")
    with (
        TlsRecorder(only.issue("carrier-only", "carrier.test"), ca) as target,
        member_socket() as member,
    ):
        dnsmasq.start(
            [
                f"--srv-host=_sips._tcp.carrier.test,tls.carrier.test,{target.port},10,0",
                f"--srv-host=_sips._tcp.other.test,tls.carrier.test,{target.port},10,0",
                f"--host-record=tls.carrier.test,{HOST}",
            ]
        )
        bundle = tmp_path / "anchors.pem"
        bundle.write_text(read_text(ca) + read_text(only.ca), encoding="utf-8")
        config, port = write_sipha_config(
            tmp_path, dnsmasq.port, member.getsockname()[1], tls=proxy, extra=f'ca-file = "{bundle}"'
        )
        with sipha_process(tmp_path, config) as log:
            carrier = member_request(member, (HOST, port), "sips:x@carrier.test")
            other = member_request(member, (HOST, port), "sips:x@other.test")
            again = member_request(member, (HOST, port), "sips:y@carrier.test")
            text = read_text(log)
    assert carrier.startswith("SIP/2.0 200"), (carrier, text)
    assert not other.startswith("SIP/2.0 2"), (other, text)
    assert again.startswith("SIP/2.0 200"), (again, text)
    assert [accepted.server_name for accepted in target.accepted] == ["carrier.test", "other.test"]
    requests = [accepted.requests for accepted in target.accepted]
    assert requests == [["OPTIONS sips:x@carrier.test SIP/2.0", "OPTIONS sips:y@carrier.test SIP/2.0"], []]
    assert "does not name the SIP domain 'other.test'" in text, text
    assert "Traceback" not in text
