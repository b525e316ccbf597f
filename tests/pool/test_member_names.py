"""Pair members given by host name (issue 14, item 1): the test first; the feature is not built yet.

What sipha does today with ``primary = "udp:sip1.example.com:5060"`` (found by reading
config.py, assembly.py, proxy/view.py, proxy/routing.py, net/manager.py, and by running it):

* the configuration accepts the name and nothing resolves it at start;
* the member's ``Address`` keeps the name: the OPTIONS probes and forwarded requests go
  through the transport's slow path, ``loop.getaddrinfo`` (the system resolver, not
  ``[dns]``; a fixed 30 s cache; the first address only);
* "a request from a member" (docs/design.md §2, §3 rules 2 and 3) compares the source IP
  with the configured host: a name never matches, so a request from the backup does not
  switch the pair, a SIP server's own requests are routed as an endpoint's (rule 4: back to
  its pair, or 403 with a Route), and an in-dialog request to a member's Contact (an IP) is
  not sent to the active member;
* transport errors are reported for the resolved IP, which matches neither the member nor
  the branches sent to its name: a dead member is found by timeouts, not by ICMP.

This test states what the issue asks: the names resolved through ``[dns]`` (A/AAAA), the
member recognised by its resolved IP.  It is marked ``xfail(strict=True)``: it fails now,
and the day it passes the marker must go.
"""

from __future__ import annotations

import os
import signal
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.net.dns_support import Dnsmasq, dnsmasq_unusable
from tests.pool.support import BACKUP_IP, DNS_IP, HTTP_OK, PRIMARY_IP, free_port_on, wait_for
from tests.tls.support import read_text, skip_unless_usable, start_process, stop_group

pytestmark = [pytest.mark.integration, skip_unless_usable(dnsmasq_unusable())]

PROXY_IP = "127.0.0.14"


@pytest.mark.xfail(
    strict=True,
    reason="members by host name are not resolved through [dns] nor matched by IP (see the module docstring)",
)
def test_members_given_by_name_are_resolved_by_dns_and_recognised_by_ip(tmp_path: Path) -> None:
    primary_port, backup_port = free_port_on(PRIMARY_IP), free_port_on(BACKUP_IP)
    port, admin_port = free_port_on(PROXY_IP), free_port_on(PROXY_IP)
    dns = Dnsmasq()
    processes = []

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://{PROXY_IP}:{admin_port}/healthz", timeout=1) as answer:
                return int(answer.status) == HTTP_OK
        except OSError:  # refused while starting; HTTPError 503 while no member is active
            return False

    try:
        dns.start([f"--host-record=sip1.test,{PRIMARY_IP}", f"--host-record=sip2.test,{BACKUP_IP}"], ttl=5)
        config = tmp_path / "sipha.toml"
        config.write_text(
            "\n".join(
                [
                    "[proxy]",
                    f'listen = ["udp:{PROXY_IP}:{port}"]',
                    f'record-route = "sip:{PROXY_IP}:{port};lr"',
                    "[dns]",
                    f'servers = ["{DNS_IP}:{dns.port}"]',
                    "[monitor]",
                    "oos-check = 1",
                    "oos-force = 1",
                    "[admin]",
                    f'listen = "{PROXY_IP}:{admin_port}"',
                    "[[pair]]",
                    'name = "named"',
                    f'primary = "udp:sip1.test:{primary_port}"',
                    f'backup = "udp:sip2.test:{backup_port}"',
                    "serving = true",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        simulate = [sys.executable, "-m", "sipha", "simulate-server"]
        processes.append(
            start_process([*simulate, "--listen", f"udp:{PRIMARY_IP}:{primary_port}"], tmp_path, "primary")
        )
        backup = start_process(
            [*simulate, "--listen", f"udp:{BACKUP_IP}:{backup_port}", "--proxy", f"udp:{PROXY_IP}:{port}"],
            tmp_path,
            "backup",
        )
        processes.append(backup)
        processes.append(
            start_process([sys.executable, "-m", "sipha", "run", "--config", str(config)], tmp_path, "sipha")
        )
        wait_for(
            lambda: all(
                "listening on" in read_text(tmp_path / f"{name}.log")
                for name in ("primary", "backup", "sipha")
            ),
            40.0,
            "the members and sipha to listen",
        )
        # sip1.test is known to the [dns] server only: the primary answers OPTIONS once it is found.
        wait_for(healthy, 5.0, "the primary, given by name, to be found active (/healthz 200)")
        # docs/design.md §2: a request from the backup (its resolved IP and port) switches the pair.
        os.kill(backup.pid, signal.SIGHUP)
        wait_for(
            lambda: "sent a request" in read_text(tmp_path / "sipha.log"),
            5.0,
            "the request from the backup, given by name, to switch the pair",
        )
    finally:
        for process in processes:
            stop_group(process, timeout=3.0)
        dns.stop()
