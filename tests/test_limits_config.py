"""``[limits]``: validated (key, value, what is allowed), applied at start and on reload, counted.

The last tests run a ProxyApp in-process on loopback: a source over its rate and a
scanner's request are dropped before the core (the member gets nothing of them), the
counters reach /metrics' transport counters, and a reload applies new limits to the guard
and to the connection tables, saying what changed.
"""

from __future__ import annotations

import asyncio
import resource
import socket
from pathlib import Path

import pytest

from sipha.app import ProxyApp
from sipha.config import ConfigError, load_config, load_config_text
from sipha.configtext import render_config
from sipha.limits import guard_settings, raise_file_limit
from sipha.limitsconfig import SCANNER_USER_AGENTS, LimitsSection
from tests.net.support import free_port


def limits(text: str) -> str:
    return f"[limits]\n{text}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    return caught.value.problems


def test_the_defaults() -> None:
    section = load_config_text("").limits
    assert section == LimitsSection()
    assert (section.source_rate, section.source_burst, section.trusted) == (0, 100, [])
    assert section.scanner_user_agents == list(SCANNER_USER_AGENTS)
    assert (section.max_connections, section.idle_timeout, section.message_timeout) == (10_000, 120.0, 10.0)
    assert "[limits]" in render_config(load_config_text(""))
    assert 'scanner-user-agents = ["friendly", "scanner"' in render_config(load_config_text(""))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("source-rate = -1", "limits.source-rate = -1: Input should be greater than or equal to 0"),
        (
            "source-rate = 2.5",
            "limits.source-rate = 2.5: Input should be a valid integer, got a number with a fractional part",
        ),
        (
            "source-rate = 10\nsource-burst = 0",
            "limits.source-burst = 0: Input should be greater than or equal to 1",
        ),
        ("max-connections = 0", "limits.max-connections = 0: Input should be greater than or equal to 1"),
        ("idle-timeout = 0", "limits.idle-timeout = 0: Input should be greater than 0"),
        ("message-timeout = 301", "limits.message-timeout = 301: Input should be less than or equal to 300"),
        ("message-timeout = -2", "limits.message-timeout = -2: Input should be greater than 0"),
        (
            "source-burst = 50",
            (
                "limits.source-burst = 50: unused while limits.source-rate = 0 (no limit): "
                "set source-rate or remove it"
            ),
        ),
        ("rate = 5", "limits.rate = 5: unknown option"),
    ],
)
def test_a_bad_value_is_refused_naming_key_value_and_what_is_allowed(text: str, expected: str) -> None:
    assert problems(limits(text)) == [expected]


@pytest.mark.parametrize("network", ["10.0.0.1/8", "192.0.2.0/33", "sip.example.com", "", "2001:db8::1/129"])
def test_a_bad_trusted_network_is_refused(network: str) -> None:
    (problem,) = problems(limits(f'trusted = ["192.0.2.1", "{network}"]'))
    assert problem.startswith(
        f"limits.trusted = ['192.0.2.1', {network!r}]: {network!r}: expected an IP address"
    )
    assert "CIDR notation with no host bits set" in problem


@pytest.mark.parametrize("word", ["", " ", "x" * 65, "bad\\tword", "é"])
def test_a_bad_scanner_word_is_refused(word: str) -> None:
    (problem,) = problems(limits(f'scanner-user-agents = ["sipcli", "{word}"]'))
    assert problem.startswith("limits.scanner-user-agents = ")
    assert "each entry is a word of printable ASCII, 1-64 characters" in problem


def test_good_values_are_taken() -> None:
    section = load_config_text(
        limits(
            "source-rate = 50\nsource-burst = 20\n"
            'trusted = ["192.0.2.7", "198.51.100.0/24", "2001:db8::/32", "[2001:db8::5]"]\n'
            "scanner-user-agents = []\nmax-connections = 500\nidle-timeout = 30\nmessage-timeout = 2.5"
        )
    ).limits
    assert (section.source_rate, section.source_burst, section.max_connections) == (50, 20, 500)
    assert (section.idle_timeout, section.message_timeout, section.scanner_user_agents) == (30.0, 2.5, [])


def test_the_guard_exempts_the_pair_members_by_ip() -> None:
    config = load_config_text(
        limits('source-rate = 5\ntrusted = ["198.51.100.0/24"]\nscanner-user-agents = ["SIPVicious"]')
        + '[[pair]]\nname = "p"\nprimary = "udp:192.0.2.10:5060"\nbackup = "tcp:[2001:DB8::10]:5060"\n'
    )
    settings = guard_settings(config)
    assert settings.exempt == frozenset({"192.0.2.10", "2001:db8::10"})
    assert (settings.rate, settings.burst, settings.scanner_agents) == (5, 100.0, (b"sipvicious",))
    assert [str(network) for network in settings.trusted] == ["198.51.100.0/24"]


def test_a_member_given_by_name_is_exempt_at_its_resolved_ip() -> None:
    """Requests come from the member's IP: its name, or nothing, would leave it to source-rate."""
    config = load_config_text(
        limits("source-rate = 5")
        + '[[pair]]\nname = "p"\nprimary = "udp:sip1.example.com:5060"\nbackup = "udp:192.0.2.11:5060"\n'
    )
    assert guard_settings(config, {"sip1.example.com": "192.0.2.10"}).exempt == frozenset(
        {"192.0.2.10", "192.0.2.11"}
    )
    # not resolved yet: nothing to exempt but the name (no source has it)
    assert "192.0.2.10" not in guard_settings(config).exempt


def test_the_file_limit_is_raised_within_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        assert raise_file_limit(soft) == soft  # enough already: unchanged
        if hard != resource.RLIM_INFINITY and hard > soft:
            assert raise_file_limit(hard + 1) == hard  # capped at the hard limit (and logged)
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---------------------------------------------------------------------------- in a running ProxyApp

CALLER = "127.0.0.1"


def request(number: int, agent: str = "Zoiper rv2.10", port: int = 5060) -> bytes:
    return (
        f"OPTIONS sip:{number}@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {CALLER}:{port};branch=z9hG4bK-limits-{number}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:scan@{CALLER}>;tag=s{number}\r\nTo: <sip:{number}@127.0.0.1>\r\n"
        f"Call-ID: limits-{number}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: {agent}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def test_a_running_instance_drops_counts_and_reloads_its_limits(tmp_path: Path) -> None:
    """The member (a UDP socket of the test, on 127.0.0.2) receives only what the limits let through."""
    member = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    member.bind(("127.0.0.2", 0))
    member.setblocking(False)
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller.bind((CALLER, 0))
    port = free_port()
    base = (
        f'[proxy]\nlisten = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]\n[monitor]\noos-check = 0\n'
        f'[[pair]]\nname = "p"\nprimary = "udp:127.0.0.2:{member.getsockname()[1]}"\n'
        f'backup = "udp:127.0.0.2:{free_port(host="127.0.0.2")}"\nserving = true\n'
    )
    path = tmp_path / "sipha.toml"
    path.write_text(base + limits("source-rate = 2\nsource-burst = 3"), encoding="utf-8")
    app = ProxyApp(load_config(path), admin=False, config_path=path)
    await app.start()
    try:
        caller.sendto(request(0, agent="friendly-scanner"), (CALLER, port))
        for number in range(1, 9):
            caller.sendto(request(number, port=caller.getsockname()[1]), (CALLER, port))
        received = await _member_received(member, seconds=0.5)
        counters = app.transport_counters()
        assert counters["scanner_requests"] == 1
        assert counters["source_rate_limited"] == 5  # 8 sent at once, burst 3
        assert received == {"limits-1", "limits-2", "limits-3"}  # the burst, and not the scanner's
        tcp = next(c for c in app.transports.stream_contexts if c.transport == "TCP")
        assert (tcp.max_connections, tcp.idle_timeout, tcp.message_timeout) == (10_000, 120.0, 10.0)

        path.write_text(
            base + limits("scanner-user-agents = []\nmax-connections = 50\nmessage-timeout = 3"),
            encoding="utf-8",
        )
        assert await app.reload()
        last = app.telemetry.last_reload
        assert last is not None
        assert "limits.source-rate 2 -> 0" in last.changes
        assert "limits.max-connections 10000 -> 50" in last.changes
        assert (tcp.max_connections, tcp.message_timeout) == (50, 3.0)
        caller.sendto(request(20, agent="friendly-scanner"), (CALLER, port))  # no words, no rate: through
        assert "limits-20" in await _member_received(member, seconds=0.5)
        assert app.transport_counters()["scanner_requests"] == 1  # the counters go on
    finally:
        await app.stop()
        member.close()
        caller.close()


async def _member_received(member: socket.socket, *, seconds: float) -> set[str]:
    """The Call-IDs of the requests the member got within ``seconds`` (it answers none: sipha
    retransmits them; no OPTIONS probe of sipha's: oos-check = 0)."""
    loop = asyncio.get_running_loop()
    received: set[str] = set()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            data = await asyncio.wait_for(loop.sock_recv(member, 65535), left)
        except TimeoutError:
            break
        received.add(data.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0].decode())
    return received
