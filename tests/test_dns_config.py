"""``[dns]``: validated, applied to the resolver at start and on reload, and wired to the core.

The last test runs a ProxyApp in-process with a real dnsmasq: a pair member's
request to a host name goes to the second SRV target when the first is dead
(RFC 3263 §4.3), through the dispatcher and the locator (docs/design.md §3 rule 3).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from sipha.app import ProxyApp
from sipha.assembly import describe_changes
from sipha.config import ConfigError, load_config, load_config_text
from sipha.configtext import render_config
from sipha.dnsconfig import parse_dns_server
from sipha.net.dns import SipResolver
from sipha.poolcheck import configure_resolver, new_resolver
from tests.net.dns_support import Dnsmasq, dnsmasq_unusable
from tests.net.support import free_port


def dns(text: str) -> str:
    return f"[dns]\n{text}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    return caught.value.problems


def servers_of(resolver: SipResolver) -> list[tuple[str, int]] | None:
    """The servers a resolver asks (a function: mypy would narrow the attribute for good)."""
    return resolver.nameservers


def test_the_defaults() -> None:
    section = load_config_text("").dns
    assert (section.servers, section.timeout, section.min_ttl, section.max_ttl) == ([], 2.0, 0, 3600)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("192.0.2.53", ("192.0.2.53", 53)),
        ("192.0.2.53:5353", ("192.0.2.53", 5353)),
        ("2001:DB8::53", ("2001:db8::53", 53)),
        ("[2001:db8::53]", ("2001:db8::53", 53)),
        ("[::1]:5353", ("::1", 5353)),
    ],
)
def test_servers_are_ip_and_port(text: str, parsed: tuple[str, int]) -> None:
    assert parse_dns_server(text) == parsed
    assert load_config_text(dns(f'servers = ["{text}"]')).dns.servers == [text]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("ns1.example.com", "an IP address"),
        ("192.0.2.53:0", "port must be 1-65535"),
        ("192.0.2.53:99999", "port must be 1-65535"),
        ("192.0.2.53:dns", "port must be 1-65535"),
        ("[::1", "in brackets"),
        ("[::1]5353", "in brackets"),
        ("", "an IP address"),
    ],
)
def test_a_bad_server_is_refused_naming_it(text: str, why: str) -> None:
    (problem,) = problems(dns(f'servers = ["192.0.2.1", "{text}"]'))
    assert problem.startswith("dns.servers = ['192.0.2.1', ")
    assert repr(text) in problem
    assert why in problem
    assert "IP[:PORT]" in problem or "1-65535" in problem


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ("timeout = 0", "dns.timeout = 0", "greater than 0"),
        ("timeout = 31", "dns.timeout = 31", "less than or equal to 30"),
        ("min-ttl = -1", "dns.min-ttl = -1", "greater than or equal to 0"),
        ("max-ttl = 700000", "dns.max-ttl = 700000", "less than or equal to 604800"),
        ("min-ttl = 600\nmax-ttl = 60", "dns.max-ttl = 60", "must be at least dns.min-ttl = 600"),
        ("retries = 3", "dns.retries = 3", "unknown option"),
    ],
)
def test_bad_values_are_refused_naming_key_value_and_what_is_allowed(
    text: str, key: str, allowed: str
) -> None:
    (problem,) = problems(dns(text))
    assert problem.startswith(key), problem
    assert allowed in problem, problem


def test_the_section_renders_and_reloads() -> None:
    config = load_config_text(dns('servers = ["192.0.2.53:5353"]\ntimeout = 0.5\nmin-ttl = 5\nmax-ttl = 600'))
    text = render_config(config)
    assert '\n[dns]\nservers = ["192.0.2.53:5353"]\ntimeout = 0.5\nmin-ttl = 5\nmax-ttl = 600\n' in text
    assert load_config_text(text) == config


def test_the_resolver_takes_the_section() -> None:
    resolver = new_resolver(load_config_text("").dns)
    assert servers_of(resolver) is None  # /etc/resolv.conf
    assert (resolver.timeout, resolver.min_ttl, resolver.max_ttl) == (2.0, 0.0, 3600.0)
    configure_resolver(
        resolver, load_config_text(dns('servers = ["[::1]:5353", "192.0.2.53"]\nmax-ttl = 60')).dns
    )
    assert servers_of(resolver) == [("::1", 5353), ("192.0.2.53", 53)]
    assert resolver.max_ttl == 60.0


def test_a_reload_names_what_changed() -> None:
    old = load_config_text("")
    new = load_config_text(dns('servers = ["192.0.2.53"]\ntimeout = 1.0'))
    assert describe_changes(old, new) == ["dns.servers [] -> ['192.0.2.53']", "dns.timeout 2.0 -> 1.0"]


PAIR = '[[pair]]\nname = "p"\nprimary = "udp:127.0.0.1:{a}"\nbackup = "udp:127.0.0.1:{b}"\nserving = true\n'


async def test_a_reload_applies_the_section(tmp_path: Path) -> None:
    path = tmp_path / "sipha.toml"
    base = f'[proxy]\nlisten = ["udp:127.0.0.1:{free_port()}"]\n[monitor]\noos-check = 0\n'
    base += PAIR.format(a=free_port(), b=free_port())
    path.write_text(base, encoding="utf-8")
    app = ProxyApp(load_config(path), admin=False, config_path=path)
    await app.start()
    try:
        assert servers_of(app.resolver) is None
        path.write_text(base + dns('servers = ["127.0.0.1:5399"]\ntimeout = 0.5'), encoding="utf-8")
        assert await app.reload()
        assert (servers_of(app.resolver), app.resolver.timeout) == ([("127.0.0.1", 5399)], 0.5)
    finally:
        await app.stop()


# ---------------------------------------------------------------------- wired: app, dispatcher, locator, core


def message(uri: str, member: int) -> bytes:
    return (
        f"MESSAGE {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{member};branch=z9hG4bK-dns-1\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:server@127.0.0.1:{member}>;tag=m1\r\n"
        f"To: <{uri}>\r\n"
        "Call-ID: dns-wired@test\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def ok_to(request: bytes) -> bytes:
    """A 200 to ``request``: its Via, From, To (tagged), Call-ID and CSeq lines copied."""
    head = request.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
    kept = [line for line in head if line.split(":", 1)[0].lower() in {"via", "from", "call-id", "cseq"}]
    kept += [line + ";tag=t1" for line in head if line.lower().startswith("to:")]
    return ("\r\n".join(["SIP/2.0 200 OK", *kept, "Content-Length: 0", "", ""])).encode()


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


@pytest.mark.integration
async def test_a_member_request_to_a_host_name_reaches_the_second_srv_target(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    reason = dnsmasq_unusable()
    if reason is not None:
        pytest.skip(reason)
    server = Dnsmasq()
    request.addfinalizer(server.stop)
    member, target = udp_socket(), udp_socket()
    request.addfinalizer(member.close)
    request.addfinalizer(target.close)
    member_port, target_port, dead = member.getsockname()[1], target.getsockname()[1], free_port()
    server.start(
        [
            f"--srv-host=_sip._udp.carrier.test,dead.carrier.test,{dead},10,0",
            f"--srv-host=_sip._udp.carrier.test,live.carrier.test,{target_port},20,0",
            "--host-record=dead.carrier.test,127.0.0.1",
            "--host-record=live.carrier.test,127.0.0.1",
        ]
    )
    port = free_port()
    path = tmp_path / "sipha.toml"
    path.write_text(
        f'[proxy]\nlisten = ["udp:127.0.0.1:{port}"]\n[monitor]\noos-check = 0\n'
        f'[dns]\nservers = ["127.0.0.1:{server.port}"]\ntimeout = 1.0\n'
        + PAIR.format(a=member_port, b=free_port()),
        encoding="utf-8",
    )
    app = ProxyApp(load_config(path), admin=False, config_path=path)
    await app.start()
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(10):
            await loop.sock_sendto(member, message("sip:bob@carrier.test", member_port), ("127.0.0.1", port))
            forwarded, proxy = await loop.sock_recvfrom(target, 65535)
            assert forwarded.startswith(b"MESSAGE sip:bob@carrier.test SIP/2.0\r\n")
            branch = forwarded.split(b";branch=", 1)[1].split(b"\r\n", 1)[0].split(b";", 1)[0]
            assert branch.endswith(b".1")  # the second attempt: a new branch (RFC 3263 §4.3)
            await loop.sock_sendto(target, ok_to(forwarded), proxy)
            answer, _ = await loop.sock_recvfrom(member, 65535)
        assert answer.startswith(b"SIP/2.0 200 OK\r\n")
        assert app.core is not None
        assert app.core.counters.target_failovers == 1
    finally:
        await app.stop()
