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
"""

from __future__ import annotations

import re
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
from tests.net.dns_support import Dnsmasq, dnsmasq_unusable

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
