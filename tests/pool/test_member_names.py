"""Pair members given by host name (issue 14, item 1), end to end: dnsmasq, sipha, simulated members.

``primary = "udp:sip1.test:PORT"``: the names are resolved through ``[dns]`` (A/AAAA;
dnsmasq knows them, the system resolver does not) by :class:`sipha.hostnames.MemberNames`,
and the core is handed IPs.  So the member is probed at its IP, and recognised by the
source IP of its requests: a request from the backup switches the pair (docs/design.md
§2).  Each name is looked up again when its answer expires; a new address is applied as
a reload of that member (re-probed there).  A name that does not resolve at start does
not stop sipha: the member is down, said loudly, and ``/status`` shows why.  Without a
network, the same rules on a fake zone and clock: tests/pool/test_member_resolution.py.

Before this was built (the test was a strict xfail then) the name reached the transports'
``getaddrinfo`` slow path, a request from a member was never recognised as one, and
transport errors matched no member.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.net.dns_support import Dnsmasq, dnsmasq_unusable
from tests.pool.support import BACKUP_IP, DNS_IP, HTTP_OK, PRIMARY_IP, free_port_on, wait_for
from tests.tls.support import read_text, skip_unless_usable, start_process, stop_group

pytestmark = [pytest.mark.integration, skip_unless_usable(dnsmasq_unusable())]

PROXY_IP = "127.0.0.14"
MOVED_IP = "127.0.0.23"


def write_config(path: Path, port: int, admin_port: int, dns_port: int, *, primary: int, backup: int) -> Path:
    path.write_text(
        "\n".join(
            [
                "[proxy]",
                f'listen = ["udp:{PROXY_IP}:{port}"]',
                f'record-route = "sip:{PROXY_IP}:{port};lr"',
                "[dns]",
                f'servers = ["{DNS_IP}:{dns_port}"]',
                "timeout = 0.5",
                "[monitor]",
                "oos-check = 1",
                "oos-force = 1",
                "[admin]",
                f'listen = "{PROXY_IP}:{admin_port}"',
                "[[pair]]",
                'name = "named"',
                f'primary = "udp:sip1.test:{primary}"',
                f'backup = "udp:sip2.test:{backup}"',
                "serving = true",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return path


def pair_members(admin_port: int) -> dict[str, dict[str, Any]]:
    """/status: the one pair's members by role."""
    with urllib.request.urlopen(f"http://{PROXY_IP}:{admin_port}/status", timeout=2) as answer:
        (pair,) = json.loads(answer.read())["pairs"]
    return {member["role"]: member for member in pair["members"]}


def port_free_on_both(first: str, second: str) -> int:
    """A UDP port free on both addresses (the member keeps its port when its name moves)."""
    for _ in range(50):
        port = free_port_on(first)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((second, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no UDP port free on both {first} and {second}")


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


def test_a_member_name_that_moves_is_followed_and_one_that_does_not_resolve_is_a_member_down(
    tmp_path: Path,
) -> None:
    primary_port, backup_port = port_free_on_both(PRIMARY_IP, MOVED_IP), free_port_on(BACKUP_IP)
    port, admin_port = free_port_on(PROXY_IP), free_port_on(PROXY_IP)
    dns = Dnsmasq()
    processes = []
    log = tmp_path / "sipha.log"
    try:
        # sip2.test (the backup) is not published: NXDOMAIN.  A TTL of 1 s for sip1.test.
        dns.start([f"--host-record=sip1.test,{PRIMARY_IP}"], ttl=1)
        config = write_config(
            tmp_path / "sipha.toml", port, admin_port, dns.port, primary=primary_port, backup=backup_port
        )
        simulate = [sys.executable, "-m", "sipha", "simulate-server", "--listen"]
        for name, ip, member_port in (
            ("primary", PRIMARY_IP, primary_port),
            ("moved", MOVED_IP, primary_port),
            ("backup", BACKUP_IP, backup_port),
        ):
            processes.append(start_process([*simulate, f"udp:{ip}:{member_port}"], tmp_path, name))
        processes.append(
            start_process([sys.executable, "-m", "sipha", "run", "--config", str(config)], tmp_path, "sipha")
        )
        wait_for(
            lambda: all(
                "listening on" in read_text(tmp_path / f"{name}.log")
                for name in ("primary", "moved", "backup", "sipha")
            ),
            40.0,
            "the members and sipha to listen",
        )
        # Started all the same, the backup down, said loudly with the key and the value.
        text = read_text(log)
        assert f"pair.0.backup = 'udp:sip2.test:{backup_port}'" in text, text
        assert "the member is down until its name resolves" in text, text
        wait_for(
            lambda: f"primary udp:{PRIMARY_IP}:{primary_port} is active" in read_text(log),
            5.0,
            "the primary, at the address of its name, to be found active",
        )
        members = pair_members(admin_port)
        assert PRIMARY_IP in members["primary"]["address"], members
        problem = members["backup"]["transport_error"] or ""
        assert "sip2.test does not resolve through [dns]" in problem, members
        # The name moves: seen when its 1 s answer expires, applied as a reload of the member.
        dns.restart([f"--host-record=sip1.test,{MOVED_IP}"], ttl=1)
        wait_for(
            lambda: f"sip1.test moved from {PRIMARY_IP} to {MOVED_IP}" in read_text(log),
            5.0,
            "sipha to see sip1.test's new address",
        )
        wait_for(
            lambda: f"primary udp:{MOVED_IP}:{primary_port} is active" in read_text(log),
            5.0,
            "the primary, re-probed at its new address, to be active",
        )
        with urllib.request.urlopen(f"http://{PROXY_IP}:{admin_port}/metrics", timeout=2) as answer:
            metrics = answer.read().decode()
        assert 'sipha_transport_events_total{counter="member_name_failures"}' in metrics, metrics
        assert "Traceback" not in read_text(log)
    finally:
        for process in processes:
            stop_group(process, timeout=3.0)
        dns.stop()
