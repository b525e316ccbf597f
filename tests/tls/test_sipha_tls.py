"""sipha on TLS between real TLS stacks: calls, a killed primary, certificates that do not verify.

The arrangement (all on 127.0.0.1)::

    SIPp uac --UDP--> Kamailio edge --TLS--> sipha --TLS--> Kamailio member --UDP--> SIPp uas
    baresip --TLS--> sipha --UDP--> SIPp uas (a member over UDP: Record-Route per transport)

* 1,000 calls with both of sipha's legs on TLS: none fails (with 1 and 2 workers);
* the primary member (a Kamailio on TLS) is killed during 200 calls/s: none fails,
  and the time to switch to the backup is printed (``TLS-FAILOVER``);
* a member whose certificate does not verify (wrong host name, expired, unknown
  CA) is named in the log and in /status with the reason, and the pair treats it
  as down: the backup serves;
* baresip calls over TLS through sipha to a member on UDP: sipha Record-Routes
  twice (RFC 5658), so baresip's ACK and BYE come back over TLS.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.integration.support import HOST, SippResult, run_sipp_client
from tests.tls.sipha import TlsMember, TlsPair, run_sipha_tls, wait_until
from tests.tls.support import (
    SCENARIOS,
    CertFiles,
    Kamailio,
    Pki,
    baresip_call,
    baresip_unusable,
    kamailio_edge,
    kamailio_member,
    kamailio_unusable,
    sipp_uas,
    sipp_unusable,
    skip_unless_usable,
    tls_uri,
    traced_messages,
)

pytestmark = [pytest.mark.integration, pytest.mark.tls]

needs_calls = skip_unless_usable(kamailio_unusable(), sipp_unusable())
needs_baresip = skip_unless_usable(sipp_unusable(), baresip_unusable())


@needs_calls
@pytest.mark.parametrize("workers", [1, 2])
def test_calls_with_both_legs_on_tls(tmp_path: Path, pki: Pki, workers: int) -> None:
    """1,000 calls (500 with 2 workers) through edge -TLS- sipha -TLS- member: 0 failed."""
    calls = 1000 if workers == 1 else 500
    with (
        sipp_uas(tmp_path) as uas,
        kamailio_member(tmp_path, pki, uas.port, certificate=pki.sip1, name="primary") as primary,
        kamailio_member(tmp_path, pki, uas.port, certificate=pki.sip2, backup=True, name="backup") as backup,
        run_sipha_tls(
            tmp_path,
            pki,
            pair_of(primary, backup),
            proxy=f"workers = {workers}",
        ) as sipha,
        kamailio_edge(tmp_path, pki, tls_uri(sipha.tls_port), server_name="sipha.test") as edge,
    ):
        wait_until(lambda: sipha.pair("p")["active"] == "primary", "the primary active over TLS")
        result = run_sipp_client(
            tmp_path, f"{HOST}:{edge.udp_port}", "-m", str(calls), "-r", "100", "-l", "200", timeout=60
        )
        # The instance's handshakes, summed over the workers by worker 0's /status (docs/design.md
        # §4): the edge's connection lands on whichever worker the kernel picks.
        status = sipha.status()
        handshakes_ok = status["tls"]["handshakes"]["ok"]
    # The one failure this bed shows is the member Kamailio's, not sipha's: its UDP workers
    # may relay the SIPp server's 180 after its 200 (two datagrams read by two processes), and
    # SIPp's uac aborts a call that gets a 180 while it pauses after the ACK.  sipha, one
    # process reading one TLS connection, keeps the order it got.  Any other failure counts.
    late_180 = len(re.findall(r"while pausing \(index \d+\), received 'SIP/2\.0 180 ", result.errors))
    assert late_180 <= calls // 200, result.errors[-2000:]
    assert (result.successful, result.failed) == (calls - late_180, late_180), result.errors[-2000:]
    tls = status["tls"]
    assert handshakes_ok >= 2, tls  # the edge's connection and ours to the member
    assert tls["handshakes"]["verify_failed"] == 0
    members = status["pairs"][0]["members"]
    assert [member["transport_error"] for member in members] == [None, None]


def pair_of(primary: Kamailio, backup: Kamailio) -> list[TlsPair]:
    """The pair "p" of two Kamailio members on TLS, verified as sip1.test and sip2.test."""
    return [
        TlsPair(
            "p",
            TlsMember(primary.tls_port, server_name="sip1.test"),
            TlsMember(backup.tls_port, server_name="sip2.test"),
        )
    ]


def sipha_log_time(line: str) -> datetime:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


@needs_calls
def test_primary_killed_under_load_with_tls_to_the_pair(tmp_path: Path, pki: Pki) -> None:
    """SIGKILL the primary Kamailio (TLS) during 200 calls/s: 0 failed calls; the switch time.

    Both members answer OPTIONS (the classic pair: the primary is active while it
    answers) and are the UAS themselves, without dialog state (INVITE and BYE
    answered 200 by whichever member gets them), as SIP servers sharing their
    dialogs: a call the dead primary held continues on the backup.  (A Kamailio
    relaying to one SIPp uas behind both members would not do: a request re-sent
    through the backup reaches the same uas, which takes it for a retransmission
    and answers through the dead member.)  SIPp calls the edge over TCP: such a
    member does not retransmit its 200, so a datagram lost on a busy machine
    between the edge and SIPp would leave a call waiting forever.
    """
    calls, rate = 2000, 200
    outcome: list[SippResult] = []
    with (
        kamailio_member(tmp_path, pki, 0, certificate=pki.sip1, answer_calls=True, name="primary") as primary,
        kamailio_member(tmp_path, pki, 0, certificate=pki.sip2, answer_calls=True, name="backup") as backup,
        run_sipha_tls(
            tmp_path,
            pki,
            pair_of(primary, backup),
        ) as sipha,
        kamailio_edge(tmp_path, pki, tls_uri(sipha.tls_port), server_name="sipha.test", tcp=True) as edge,
    ):
        wait_until(lambda: sipha.pair("p")["active"] == "primary", "the primary active over TLS")
        caller = threading.Thread(
            target=lambda: outcome.append(
                run_sipp_client(
                    tmp_path,
                    f"{HOST}:{edge.udp_port}",
                    "-m",
                    str(calls),
                    "-r",
                    str(rate),
                    "-l",
                    "400",
                    "-t",
                    "t1",
                    timeout=60,
                )
            )
        )
        caller.start()
        time.sleep(3.0)
        killed = datetime.now()
        os.killpg(primary.process.pid, signal.SIGKILL)
        caller.join(90)
        log = sipha.log_text()
        status = sipha.pair("p")
    assert outcome, "SIPp did not finish"
    result = outcome[0]
    switched = [line for line in log.splitlines() if re.search(r"backup .*(active|takes over)", line)]
    took = (sipha_log_time(switched[0]) - killed).total_seconds() if switched else float("nan")
    print(
        f"\nTLS-FAILOVER primary SIGKILL at {rate} calls/s: {result.successful} of {calls} calls succeeded, "
        f"{result.failed} failed; switch logged {took * 1000:.0f} ms after the kill: "
        f"{switched[0] if switched else log[-1500:]}"
    )
    assert status["active"] == "backup", status
    assert (result.successful, result.failed) == (calls, 0), result.errors[-2000:]


@needs_calls
@pytest.mark.parametrize(
    ("certificate", "reason"),
    [
        ("wrong_host", "Hostname mismatch, certificate is not valid for 'sip1.test'"),
        ("expired", "certificate has expired"),
        ("unknown_ca", "unable to get local issuer certificate"),
    ],
)
def test_a_member_whose_certificate_does_not_verify_is_named_and_treated_as_down(
    tmp_path: Path, pki: Pki, certificate: str, reason: str
) -> None:
    bad: CertFiles = getattr(pki, certificate)
    with (
        sipp_uas(tmp_path) as uas,
        kamailio_member(tmp_path, pki, uas.port, certificate=bad, name="primary") as primary,
        kamailio_member(tmp_path, pki, uas.port, certificate=pki.sip2, name="backup") as backup,
        run_sipha_tls(
            tmp_path,
            pki,
            pair_of(primary, backup),
        ) as sipha,
        kamailio_edge(tmp_path, pki, tls_uri(sipha.tls_port), server_name="sipha.test") as edge,
    ):
        wait_until(lambda: sipha.pair("p")["active"] == "backup", "the backup active")
        where = f"tls:{HOST}:{primary.tls_port}"
        expected = (
            f"pair p: member {where} (primary): TLS handshake failed: certificate verify failed: {reason}"
        )
        wait_until(lambda: expected in sipha.log_text(), "the failure in the log")
        members = sipha.pair("p")["members"]
        result = run_sipp_client(tmp_path, f"{HOST}:{edge.udp_port}", "-m", "20", "-r", "20", timeout=30)
        metrics = sipha.metrics()
    assert members[0]["transport_error"] == f"TLS handshake failed: certificate verify failed: {reason}"
    assert members[1]["transport_error"] is None
    assert f'sipha_pair_member_transport_error{{address="{where}",member="primary",pair="p"}} 1.0' in metrics
    assert (result.successful, result.failed) == (20, 0), result.errors[-2000:]


@needs_baresip
def test_baresip_over_tls_to_a_udp_member_keeps_tls_for_its_in_dialog_requests(
    tmp_path: Path, pki: Pki
) -> None:
    """RFC 5658: baresip (TLS) -> sipha -> SIPp (UDP): two Record-Routes, ACK and BYE over TLS."""
    scenario = str(SCENARIOS / "uas_record_route.xml")
    with (
        sipp_uas(tmp_path, "-aa", "-trace_msg", scenario=scenario, name="member") as member,
        run_sipha_tls(
            tmp_path,
            pki,
            [
                TlsPair(
                    "p", TlsMember(member.port, transport="udp"), TlsMember(member.port + 1, transport="udp")
                )
            ],
        ) as sipha,
    ):
        wait_until(lambda: sipha.pair("p")["active"] == "primary", "the UDP member active")
        call = baresip_call(
            tmp_path,
            outbound=tls_uri(sipha.tls_port),
            target=f"sip:service@{HOST}:{sipha.udp_port}",
            ca=pki.ca,
            hold=1.0,
        )
        member.wait(5)
        received = traced_messages(tmp_path, "uas_record_route", "received")
    assert call.established, call.log[-3000:]
    assert call.closed, call.log[-3000:]
    invite = next(message for message in received if message.startswith("INVITE"))
    record_routes = re.findall(r"(?im)^Record-Route:\s*(.+)$", invite)
    # The UDP side (toward the member) on top, the TLS side (toward baresip) below it.
    assert record_routes[:2] == [
        f"<sip:{HOST}:{sipha.udp_port};lr>",
        f"<sip:{HOST}:{sipha.tls_port};transport=tls;lr>",
    ], record_routes
    assert any(message.startswith("BYE") for message in received), "the BYE did not reach the member"
    # baresip's trace: each message follows a line "TRANSPORT from -> to".
    sent = re.findall(r"(?m)^(\w+) [\d.:]+ -> ([\d.:]+)\r?\n(ACK|BYE) ", call.log)
    assert sorted(method for _, _, method in sent) == ["ACK", "BYE"], call.log[-3000:]
    for transport, destination, method in sent:
        assert (transport, destination) == ("TLS", f"{HOST}:{sipha.tls_port}"), method
