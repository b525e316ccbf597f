"""Unit tests of sipha.config: loading, validation messages, rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipha.config import (
    AdminSection,
    Config,
    ConfigError,
    MonitorSection,
    PairSection,
    ProxySection,
    SipAddress,
    TlsSection,
    default_config_text,
    is_server_name,
    load_config,
    load_config_text,
    parse_address,
)
from sipha.configtext import render_config
from sipha.ha.settings import AliveCodes
from sipha.reference import render_reference

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sipha.toml"

PAIR = """
[[pair]]
name = "p"
primary = "udp:10.0.0.1:5060"
backup = "udp:10.0.0.2:5060"
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, source="test.toml")
    assert caught.value.source == "test.toml"
    assert str(caught.value).startswith("test.toml: ")
    assert caught.value.problems
    return caught.value.problems


# ============================================================================ good files


def test_embedded_default_loads() -> None:
    config = load_config(None)
    assert config == load_config_text(default_config_text())
    assert config.proxy.listen == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    assert config.proxy.record_route == "sip:127.0.0.1;lr"
    assert config.monitor.oos_check == 5
    assert config.monitor.oos_force == 5
    assert config.monitor.alive_codes == ["2xx"]
    assert config.monitor.failover_timeout == 1.0
    assert config.admin.listen == "127.0.0.1:8080"
    assert [pair.name for pair in config.pair] == ["demo"]
    assert config.pair[0].serving is True


def test_example_file_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.proxy.listen == ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
    assert config.proxy.sip_address == "192.0.2.10"
    assert config.proxy.resolve_host is False
    assert config.proxy.record_route == "sip:proxy.example.com;lr"
    assert config.proxy.overload_ctrl_dialog_rate == 0
    assert [pair.name for pair in config.pair] == ["site-a", "site-b"]
    assert [pair.serving for pair in config.pair] == [True, False]
    assert config.pair[0].primary == "udp:10.0.1.10:5060"
    assert config.pair[1].match.domain == ["b.example.com"]
    assert config.pair[0].match.domain == []


def test_empty_file_is_all_defaults() -> None:
    config = load_config_text("")
    assert config == Config()
    assert config.pair == []
    assert config.admin.token == ""


def test_every_option_set() -> None:
    config = load_config_text(
        """
        [proxy]
        listen = ["udp:[::1]:5060", "TLS:proxy.example.com:5061"]
        sip-address = "proxy.example.com"
        resolve-host = true
        record-route = "sips:proxy.example.com;transport=tls;lr"
        overload-ctrl-dialog-rate = 1000000

        [monitor]
        oos-check = 0
        oos-force = 32
        alive-codes = ["200", "2xx", "404", "6xx"]
        failover-timeout = 32

        [admin]
        listen = "[::1]:8080"
        token = "s3cr3t"

        [tls]
        certificate = "/etc/sipha/chain.pem"
        private-key = "/etc/sipha/key.pem"
        ca-file = "/etc/sipha/ca.pem"
        verify-members = false
        verify-clients = "required"
        min-version = "1.3"
        handshake-timeout = 60
        keylog-file = "/tmp/keys.log"

        [[pair]]
        name = "A.b-c_1"
        primary = "tcp:[2001:db8::1]:5060"
        backup = "tcp:[2001:db8::2]:5060"
        serving = true
        match = { domain = ["a.example.com", "b.example.com"] }

        [[pair]]
        name = "secure"
        primary = "tls:10.0.0.1:5061"
        backup = "tls:[2001:db8::3]:5061"
        primary-server-name = "sip1.example.com"
        backup-server-name = "2001:db8::3"
        """
    )
    assert config.proxy.resolve_host is True
    assert config.proxy.overload_ctrl_dialog_rate == 1_000_000
    assert config.monitor.oos_check == 0
    assert config.monitor.oos_force == 32
    assert config.monitor.failover_timeout == 32.0
    assert config.admin.token == "s3cr3t"  # noqa: S105 - a test value
    assert config.pair[0].match.domain == ["a.example.com", "b.example.com"]
    assert config.tls.model_dump() == {
        "certificate": "/etc/sipha/chain.pem",
        "private_key": "/etc/sipha/key.pem",
        "ca_file": "/etc/sipha/ca.pem",
        "verify_members": False,
        "verify_clients": "required",
        "min_version": "1.3",
        "handshake_timeout": 60.0,
        "keylog_file": "/tmp/keys.log",  # noqa: S108 - a test value, never opened
    }
    assert (config.pair[1].primary_server_name, config.pair[1].backup_server_name) == (
        "sip1.example.com",
        "2001:db8::3",
    )
    assert (config.pair[0].primary_server_name, config.pair[0].backup_server_name) == ("", "")


def test_tls_defaults() -> None:
    tls = load_config(None).tls
    assert tls == TlsSection()
    assert (tls.certificate, tls.private_key, tls.ca_file, tls.keylog_file) == ("", "", "", "")
    assert tls.verify_members is True
    assert tls.verify_clients == "none"
    assert tls.min_version == "1.2"
    assert tls.handshake_timeout == 5.0


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("oos-check", "0"),
        ("oos-check", "300"),
        ("oos-force", "1"),
        ("oos-force", "32"),
        ("failover-timeout", "0.001"),
        ("failover-timeout", "32.0"),
        ("takeover-timeout", "0"),
        ("takeover-timeout", "32"),
        ("takeover-timeout", "0.5"),
    ],
)
def test_monitor_range_limits_accepted(option: str, value: str) -> None:
    load_config_text(f"[monitor]\n{option} = {value}\n")


def test_one_serving_pair_and_several_non_serving() -> None:
    text = "".join(
        f'[[pair]]\nname = "p{index}"\nprimary = "udp:10.0.0.1:{5060 + index}"\n'
        f'backup = "udp:10.0.0.2:5060"\nserving = {"true" if index == 0 else "false"}\n'
        for index in range(3)
    )
    assert len(load_config_text(text).pair) == 3


# ============================================================================ bad files


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        # [monitor]
        ("[monitor]\noos-check = 301", "monitor.oos-check", "301"),
        ("[monitor]\noos-check = -1", "monitor.oos-check", "-1"),
        ('[monitor]\noos-check = "five"', "monitor.oos-check", "'five'"),
        ("[monitor]\noos-check = 1.5", "monitor.oos-check", "1.5"),
        ("[monitor]\noos-force = 0", "monitor.oos-force", "0"),
        ("[monitor]\noos-force = 33", "monitor.oos-force", "33"),
        ("[monitor]\nfailover-timeout = 0", "monitor.failover-timeout", "0"),
        ("[monitor]\nfailover-timeout = 32.5", "monitor.failover-timeout", "32.5"),
        ("[monitor]\ntakeover-timeout = -1", "monitor.takeover-timeout", "-1"),
        ("[monitor]\ntakeover-timeout = 33", "monitor.takeover-timeout", "33"),
        ('[monitor]\ntakeover-timeout = "5s"', "monitor.takeover-timeout", "'5s'"),
        ('[monitor]\nalive-codes = ["2x"]', "monitor.alive-codes", "'2x'"),
        ('[monitor]\nalive-codes = ["700"]', "monitor.alive-codes", "'700'"),
        ('[monitor]\nalive-codes = ["20"]', "monitor.alive-codes", "'20'"),
        ('[monitor]\nalive-codes = ["200", "bad"]', "monitor.alive-codes", "'bad'"),
        ("[monitor]\nalive-codes = []", "monitor.alive-codes", "[]"),
        ('[monitor]\nalive-codes = "2xx"', "monitor.alive-codes", "'2xx'"),
        ("[monitor]\nunknown = 1", "monitor.unknown", "1"),
        # [proxy]
        ('[proxy]\nlisten = ["udp:1.2.3.4"]', "proxy.listen", "'udp:1.2.3.4'"),
        ('[proxy]\nlisten = ["sctp:1.2.3.4:5060"]', "proxy.listen", "'sctp:1.2.3.4:5060'"),
        ('[proxy]\nlisten = ["1.2.3.4:5060"]', "proxy.listen", "'1.2.3.4:5060'"),
        ('[proxy]\nlisten = ["udp:1.2.3.4:0"]', "proxy.listen", "'udp:1.2.3.4:0'"),
        ('[proxy]\nlisten = ["udp:1.2.3.4:65536"]', "proxy.listen", "'udp:1.2.3.4:65536'"),
        ('[proxy]\nlisten = ["udp:1.2.3.4:port"]', "proxy.listen", "'udp:1.2.3.4:port'"),
        ('[proxy]\nlisten = ["udp::5060"]', "proxy.listen", "'udp::5060'"),
        ('[proxy]\nlisten = ["udp:[::1:5060"]', "proxy.listen", "'udp:[::1:5060'"),
        ('[proxy]\nlisten = ["udp:[::1]5060"]', "proxy.listen", "'udp:[::1]5060'"),
        ('[proxy]\nlisten = ["udp:[zz::1]:5060"]', "proxy.listen", "'udp:[zz::1]:5060'"),
        ('[proxy]\nlisten = ["udp:127.0.0.1:5060", "tcp:bad"]', "proxy.listen", "'tcp:bad'"),
        ("[proxy]\nlisten = []", "proxy.listen", "[]"),
        ('[proxy]\nlisten = "udp:127.0.0.1:5060"', "proxy.listen", "'udp:127.0.0.1:5060'"),
        ('[proxy]\nrecord-route = "sip:proxy.example.com"', "proxy.record-route", "'sip:proxy.example.com'"),
        ('[proxy]\nrecord-route = "http://x;lr"', "proxy.record-route", "'http://x;lr'"),
        ('[proxy]\nrecord-route = "<sip:x;lr>"', "proxy.record-route", "'<sip:x;lr>'"),
        ('[proxy]\nrecord-route = "sip:a b;lr"', "proxy.record-route", "'sip:a b;lr'"),
        ('[proxy]\nrecord-route = ""', "proxy.record-route", "''"),
        ("[proxy]\noverload-ctrl-dialog-rate = -1", "proxy.overload-ctrl-dialog-rate", "-1"),
        ("[proxy]\noverload-ctrl-dialog-rate = 1000001", "proxy.overload-ctrl-dialog-rate", "1000001"),
        ("[proxy]\nworkers = 0", "proxy.workers", "0"),
        ("[proxy]\nworkers = 65", "proxy.workers", "65"),
        ('[proxy]\nworkers = "auto"', "proxy.workers", "'auto'"),
        ('[proxy]\nresolve-host = "maybe"', "proxy.resolve-host", "'maybe'"),
        ("[proxy]\nsip-address = 5", "proxy.sip-address", "5"),
        ("[proxy]\nfoo = 1", "proxy.foo", "1"),
        # [admin]
        ('[admin]\nlisten = "nohost"', "admin.listen", "'nohost'"),
        ('[admin]\nlisten = ":8080"', "admin.listen", "':8080'"),
        ('[admin]\nlisten = "host:"', "admin.listen", "'host:'"),
        ('[admin]\nlisten = "host:99999"', "admin.listen", "'host:99999'"),
        ('[admin]\nlisten = "[::1]8080"', "admin.listen", "'[::1]8080'"),
        ("[admin]\ntoken = 1", "admin.token", "(hidden)"),  # a secret, even a wrong one, is never shown
        ('[admin]\nuser = "x"', "admin.user", "'x'"),
        # top level
        ("[extra]\nx = 1", "extra", "{'x': 1}"),
        ("verbose = true", "verbose", "True"),
        ('proxy = "x"', "proxy", "'x'"),
        # [[pair]]
        (PAIR + 'name2 = "x"', "pair.0.name2", "'x'"),
        (PAIR.replace('"p"', '"bad name"'), "pair.0.name", "'bad name'"),
        (PAIR.replace('"p"', '""'), "pair.0.name", "''"),
        (PAIR.replace('"p"', '"' + "n" * 65 + '"'), "pair.0.name", "'" + "n" * 65 + "'"),
        (PAIR.replace("udp:10.0.0.1:5060", "udp:10.0.0.1"), "pair.0.primary", "'udp:10.0.0.1'"),
        (PAIR.replace("udp:10.0.0.2:5060", "sctp:10.0.0.2:5060"), "pair.0.backup", "'sctp:10.0.0.2:5060'"),
        (PAIR + "serving = 2", "pair.0.serving", "2"),
        (PAIR + 'match = { domain = "a.example.com" }', "pair.0.match.domain", "'a.example.com'"),
        (PAIR + "match = { host = 1 }", "pair.0.match.host", "1"),
        ('pair = "x"', "pair", "'x'"),
        # [tls]
        ("[tls]\ncertificate = 1", "tls.certificate", "1"),
        ("[tls]\nprivate-key = true", "tls.private-key", "True"),
        ('[tls]\nca-file = ["a"]', "tls.ca-file", "['a']"),
        ('[tls]\nverify-members = "maybe"', "tls.verify-members", "'maybe'"),
        ('[tls]\nverify-clients = "always"', "tls.verify-clients", "'always'"),
        ("[tls]\nverify-clients = true", "tls.verify-clients", "True"),
        ('[tls]\nmin-version = "1.1"', "tls.min-version", "'1.1'"),
        ("[tls]\nmin-version = 1.2", "tls.min-version", "1.2"),
        ('[tls]\nmin-version = "TLSv1.3"', "tls.min-version", "'TLSv1.3'"),
        ("[tls]\nhandshake-timeout = 0", "tls.handshake-timeout", "0"),
        ("[tls]\nhandshake-timeout = -1", "tls.handshake-timeout", "-1"),
        ("[tls]\nhandshake-timeout = 60.5", "tls.handshake-timeout", "60.5"),
        ('[tls]\nhandshake-timeout = "5s"', "tls.handshake-timeout", "'5s'"),
        ("[tls]\nkeylog-file = 0", "tls.keylog-file", "0"),
        ('[tls]\ncert = "x.pem"', "tls.cert", "'x.pem'"),
        (PAIR + "primary-server-name = 1", "pair.0.primary-server-name", "1"),
        (PAIR + 'primary_server_name = "x"', "pair.0.primary_server_name", "'x'"),
    ],
)
def test_each_problem_names_the_key_and_the_value(text: str, key: str, value: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    line = problems[0]
    assert line.startswith(f"{key} = "), line
    assert value in line, line


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (
            '[[pair]]\nname = "p"\nbackup = "udp:10.0.0.2:5060"',
            "pair.0.primary",
            "required option is missing",
        ),
        (
            '[[pair]]\nname = "p"\nprimary = "udp:10.0.0.2:5060"',
            "pair.0.backup",
            "required option is missing",
        ),
        ('[[pair]]\nprimary = "udp:10.0.0.1:5060"\nbackup = "udp:10.0.0.2:5060"', "pair.0.name", "missing"),
    ],
)
def test_missing_required_options(text: str, key: str, message: str) -> None:
    problems = problems_of(text)
    assert problems == [f"{key}: required option is missing"]
    assert message in problems[0]


def test_unknown_option_message() -> None:
    assert problems_of("[proxy]\nfoo = 1") == ["proxy.foo = 1: unknown option"]


def test_primary_equal_to_backup() -> None:
    text = '[[pair]]\nname = "p"\nprimary = "udp:10.0.0.1:5060"\nbackup = "UDP:10.0.0.1:5060"\n'
    (line,) = problems_of(text)
    # A section-level rule names the section, and the values in its message (never the
    # whole section, which could hold a secret such as the admin token).
    assert line.startswith("pair.0: ")
    assert line.endswith(": primary and backup must be different addresses")
    assert "'udp:10.0.0.1:5060'" in line
    assert "'UDP:10.0.0.1:5060'" in line


def test_primary_equal_to_backup_after_normalisation() -> None:
    text = '[[pair]]\nname = "p"\nprimary = "tcp:[::1]:5060"\nbackup = "TCP:[::1]:05060"\n'
    (line,) = problems_of(text)
    assert "primary and backup must be different" in line


def test_duplicate_pair_names() -> None:
    (line,) = problems_of(PAIR + PAIR)
    assert "pair names must be unique" in line
    assert "['p', 'p']" in line
    assert "pair" in line.split(":", 1)[0] or "(file)" in line.split(":", 1)[0]


def test_two_serving_pairs() -> None:
    text = (PAIR + "serving = true\n") + (PAIR.replace('"p"', '"q"') + "serving = true\n")
    (line,) = problems_of(text)
    assert "at most one pair may have serving = true" in line
    assert "['p', 'q']" in line


def test_invalid_toml() -> None:
    (line,) = problems_of("[proxy\nlisten = 1")
    assert line.startswith("not valid TOML: ")
    (line,) = problems_of("[proxy]\nlisten = [")
    assert line.startswith("not valid TOML: ")
    (line,) = problems_of("[proxy]\nlisten = 1\nlisten = 2")
    assert line.startswith("not valid TOML: ")


def test_every_problem_is_listed() -> None:
    text = """
    [proxy]
    listen = ["bad"]
    record-route = "sip:x"
    bogus = 1
    [monitor]
    oos-check = 301
    oos-force = 0
    alive-codes = ["2x"]
    """
    problems = problems_of(text)
    keys = sorted(line.split(" ", 1)[0] for line in problems)
    assert keys == sorted(
        [
            "proxy.listen",
            "proxy.record-route",
            "proxy.bogus",
            "monitor.oos-check",
            "monitor.oos-force",
            "monitor.alive-codes",
        ]
    )


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.source == str(path)
    assert caught.value.problems == ["cannot read: No such file or directory"]


def test_load_config_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.problems[0].startswith("cannot read: ")


def test_load_config_bad_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[monitor]\noos-check = 301\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.source == str(path)
    assert str(caught.value) == f"{path}: monitor.oos-check = 301: Input should be less than or equal to 300"


@pytest.mark.parametrize("uri", ["sip:proxy.example.com;lrx=1", "sip:proxy.example.com;lr-not"])
def test_record_route_needs_the_lr_parameter_itself(uri: str) -> None:
    problems_of(f'[proxy]\nrecord-route = "{uri}"\n')


@pytest.mark.parametrize("uri", ["sip:p.example.com;lr", "sip:p;transport=tcp;lr", "sips:p;lr;maddr=x"])
def test_record_route_with_lr(uri: str) -> None:
    assert load_config_text(f'[proxy]\nrecord-route = "{uri}"\n').proxy.record_route == uri


def test_record_route_lr_is_case_insensitive() -> None:
    load_config_text('[proxy]\nrecord-route = "sip:p.example.com;LR"\n')


# ============================================================================ addresses


@pytest.mark.parametrize(
    ("text", "transport", "host", "port", "rendered"),
    [
        ("udp:10.0.1.10:5060", "udp", "10.0.1.10", 5060, "udp:10.0.1.10:5060"),
        ("TCP:host.example.com:1", "tcp", "host.example.com", 1, "tcp:host.example.com:1"),
        ("tls:[2001:db8::1]:5061", "tls", "2001:db8::1", 5061, "tls:[2001:db8::1]:5061"),
        ("udp:h:65535", "udp", "h", 65535, "udp:h:65535"),
    ],
)
def test_parse_address(text: str, transport: str, host: str, port: int, rendered: str) -> None:
    address = parse_address(text)
    assert (address.transport, address.host, address.port) == (transport, host, port)
    assert str(address) == rendered
    assert parse_address(rendered) == address


def test_parse_address_without_transport() -> None:
    assert parse_address("127.0.0.1:8080", need_transport=False) == SipAddress(
        transport="udp", host="127.0.0.1", port=8080
    )
    assert parse_address("[::1]:8080", need_transport=False).host == "::1"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "udp",
        "udp:",
        "udp:host",
        "host:5060",
        "udp:host:0",
        "udp:host:x",
        "udp:[::1]",
        "udp:[nope]:1",
        "udp::1",
        "udp:::1",
        "udp:::1:5060",
        "udp:2001:db8::1:5060",
    ],
)
def test_parse_address_errors(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic turns any ValueError into a problem line
        parse_address(text)


@pytest.mark.parametrize(
    ("text", "key", "example"),
    [
        # Once read as host ":" and port 1, accepted, then `run` failed on a name lookup.
        ('[proxy]\nlisten = ["udp:::1"]', "proxy.listen = ['udp:::1']", "udp:[::1]:5060"),
        ('[proxy]\nlisten = ["tcp:::1:5060"]', "proxy.listen = ['tcp:::1:5060']", "tcp:[::1]:5060"),
        ('[admin]\nlisten = "::1:8080"', "admin.listen = '::1:8080'", "e.g. [::1]:5060"),
        (
            PAIR.replace("udp:10.0.0.1:5060", "udp:2001:db8::1:5060"),
            "pair.0.primary = 'udp:2001:db8::1:5060'",
            "udp:[::1]:5060",
        ),
        ('[proxy]\nlisten = ["udp:[::1:5060"]', "proxy.listen = ['udp:[::1:5060']", "udp:[::1]:5060"),
    ],
)
def test_an_ipv6_host_must_be_in_brackets(text: str, key: str, example: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(key), problems
    assert "expected [IPv6]:port, e.g. " in problems[0], problems
    assert example in problems[0], problems


def test_bracketed_ipv6_hosts_are_accepted_everywhere() -> None:
    config = load_config_text(
        '[proxy]\nlisten = ["udp:[::1]:5060"]\n[admin]\nlisten = "[::1]:8080"\n'
        + PAIR.replace("udp:10.0.0.1:5060", "udp:[2001:db8::1]:5060"),
        source="test.toml",
    )
    assert parse_address(config.proxy.listen[0]).host == "::1"
    assert parse_address(config.admin.listen, need_transport=False).host == "::1"
    assert parse_address(config.pair[0].primary).host == "2001:db8::1"


# ============================================================================ rendering


def test_render_default() -> None:
    text = render_config(load_config(None))
    assert text.startswith("[proxy]\nlisten = [")
    assert '\nrecord-route = "sip:127.0.0.1;lr"\n' in text
    assert (
        '\n[monitor]\noos-check = 5\noos-force = 5\nalive-codes = ["2xx"]\ntakeover-timeout = 5.0\n'
        "failover-timeout = 1.0\n" in text
    )
    assert '\n[[pair]]\nname = "demo"\n' in text
    assert "\nserving = true\n" in text
    assert "\nmatch = { domain = [] }\n" in text
    assert "\nresolve-host = false\n" in text


ROUND_TRIP_TEXTS = [
    "",
    (
        '[proxy]\nlisten = ["tls:127.0.0.1:5061"]\n[tls]\ncertificate = "c.pem"\nprivate-key = "k.pem"\n'
        'ca-file = "ca.pem"\nverify-clients = "optional"\nmin-version = "1.3"\nhandshake-timeout = 0.25\n'
        'keylog-file = "keys \\" log"\n[[pair]]\nname = "t"\nprimary = "tls:10.0.0.1:5061"\n'
        'backup = "tls:10.0.0.2:5061"\nbackup-server-name = "sip2.example.com"\n'
    ),
    # Escapes in a string (not in a secret: those are not rendered, configtext.py).
    (
        '[proxy]\nlisten = ["tls:127.0.0.1:5061"]\n[tls]\ncertificate = "c.pem"\nprivate-key = "k.pem"\n'
        'keylog-file = "quote \\" and backslash \\\\ and tab \\t"\n'
    ),
    "[monitor]\nfailover-timeout = 0.00001\n",
    "[monitor]\nfailover-timeout = 0.1\noos-check = 0\nalive-codes = ['200', '2xx', '3xx']\n",
    '[proxy]\nlisten = ["udp:[::1]:5060", "tls:h:5061"]\nsip-address = "pool.example.com"\n'
    "resolve-host = true\n"
    '[tls]\ncertificate = "/c\u00e9t\u00e9.pem"\nprivate-key = "/k.pem"\n'
    '[admin]\nlisten = "[::1]:9000"\n' + PAIR + 'match = { domain = ["a.example", "b.example"] }\n',
]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_render_reloads_to_an_equal_config(text: str) -> None:
    config = load_config_text(text)
    rendered = render_config(config)
    assert load_config_text(rendered) == config
    # rendering is stable
    assert render_config(load_config_text(rendered)) == rendered


@pytest.mark.parametrize("path", [None, EXAMPLE])
def test_render_of_shipped_files_reloads(path: Path | None) -> None:
    config = load_config(path)
    assert load_config_text(render_config(config)) == config


@pytest.mark.parametrize("escape", ["\\n", "\\r", "\\u0001", "\\u007f"])
def test_render_escapes_control_characters(escape: str) -> None:
    tls = '[proxy]\nlisten = ["tls:127.0.0.1:5061"]\n[tls]\ncertificate = "c.pem"\nprivate-key = "k.pem"\n'
    config = load_config_text(f'{tls}keylog-file = "a{escape}b"\n')
    assert load_config_text(render_config(config)) == config


def test_config_error() -> None:
    error = ConfigError("file.toml", ["one", "two"])
    assert str(error) == "file.toml: one; two"
    assert error.source == "file.toml"
    assert error.problems == ["one", "two"]


def test_wildcard_listen_needs_sip_address() -> None:
    (line,) = problems_of('[proxy]\nlisten = ["udp:0.0.0.0:5060", "tcp:[::]:5060"]\n')
    assert line.startswith("proxy: sip-address is required when listening on a wildcard address")
    assert "udp:0.0.0.0:5060" in line
    assert "tcp:[::]:5060" in line
    assert load_config_text('[proxy]\nlisten = ["udp:0.0.0.0:5060"]\nsip-address = "192.0.2.1"\n')


def test_configuration_reference_in_docs_matches_the_model() -> None:
    # docs/configuration.md is generated by `sipha config-reference`: regenerate it when
    # an option changes (this test names the command to run).
    docs = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    assert docs.read_text(encoding="utf-8") == render_reference(), (
        "docs/configuration.md is stale: run `.venv/bin/sipha config-reference > docs/configuration.md`"
    )


def test_every_option_is_in_the_reference() -> None:
    reference = render_reference()
    for model in (ProxySection, MonitorSection, AdminSection, TlsSection, PairSection):
        for name, info in model.model_fields.items():
            assert f"`{info.alias or name}`" in reference
            assert info.description, f"{model.__name__}.{name} has no one-line doc"


def test_alive_codes_are_read_as_the_monitor_reads_them() -> None:
    """One parser for alive-codes: a class may be spelled 2xx or 2XX, in the file as in the monitor."""
    config = load_config_text('[monitor]\nalive-codes = ["2XX", "486"]')
    assert config.monitor.alive_codes == ["2XX", "486"]
    assert AliveCodes.parse(config.monitor.alive_codes).matches(204)


# ============================================================================ [tls]

TLS_LISTEN = '[proxy]\nlisten = ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]\n'
TLS_FILES = '[tls]\ncertificate = "/etc/sipha/chain.pem"\nprivate-key = "/etc/sipha/key.pem"\n'


def tls_pair(primary: str = "tls:10.0.0.1:5061", backup: str = "tls:10.0.0.2:5061", extra: str = "") -> str:
    return f'[[pair]]\nname = "t"\nprimary = "{primary}"\nbackup = "{backup}"\n{extra}'


def test_tls_listen_with_certificate_and_key() -> None:
    config = load_config_text(TLS_LISTEN + TLS_FILES)
    assert config.tls.certificate == "/etc/sipha/chain.pem"
    assert config.tls.private_key == "/etc/sipha/key.pem"


def test_tls_listen_needs_certificate_and_key() -> None:
    assert problems_of(TLS_LISTEN) == [
        (
            "tls.certificate = '': required by the tls: listen address in proxy.listen "
            "('tls:127.0.0.1:5061'): the certificate chain this instance presents (RFC 3261 §26.2)"
        ),
        (
            "tls.private-key = '': required by the tls: listen address in proxy.listen "
            "('tls:127.0.0.1:5061'): the private key of tls.certificate"
        ),
    ]


def test_tls_listen_needs_the_key_too() -> None:
    text = '[proxy]\nlisten = ["TLS:[::1]:5061", "tls:127.0.0.1:5061"]\n[tls]\ncertificate = "c.pem"\n'
    assert problems_of(text) == [
        (
            "tls.private-key = '': required by the tls: listen address in proxy.listen ('TLS:[::1]:5061', "
            "'tls:127.0.0.1:5061'): the private key of tls.certificate"
        )
    ]


def test_certificate_without_key_and_the_reverse() -> None:
    assert problems_of('[tls]\ncertificate = "c.pem"\n') == [
        "tls.private-key = '': required when tls.certificate is set: the private key of tls.certificate"
    ]
    assert problems_of('[tls]\nprivate-key = "k.pem"\n') == [
        (
            "tls.certificate = '': required when tls.private-key is set: "
            "the certificate chain this instance presents (RFC 3261 §26.2)"
        )
    ]


def test_certificate_without_tls_listen_is_for_outgoing_connections() -> None:
    """Our chain is presented to members that ask for a client certificate (mutual TLS)."""
    config = load_config_text(TLS_FILES + tls_pair())
    assert config.tls.certificate == "/etc/sipha/chain.pem"


@pytest.mark.parametrize("mode", ["optional", "required"])
def test_verify_clients_needs_a_tls_listen(mode: str) -> None:
    assert problems_of(f'[tls]\nverify-clients = "{mode}"\n') == [
        (
            f"tls.verify-clients = '{mode}': client certificates are asked for on tls: listens only, and "
            'proxy.listen has none: add a tls: listen address or set verify-clients = "none"'
        )
    ]
    config = load_config_text(TLS_LISTEN + TLS_FILES + f'verify-clients = "{mode}"\n')
    assert config.tls.verify_clients == mode


def test_ca_file_needs_a_verification() -> None:
    assert problems_of('[tls]\nca-file = "ca.pem"\nverify-members = false\n') == [
        (
            "tls.ca-file = 'ca.pem': unused: it verifies peers' certificates, and verify-members = false "
            'with verify-clients = "none" verifies none; remove it or turn a verification on'
        )
    ]
    assert load_config_text('[tls]\nca-file = "ca.pem"\n').tls.ca_file == "ca.pem"
    text = (
        TLS_LISTEN + TLS_FILES + 'ca-file = "ca.pem"\nverify-members = false\nverify-clients = "optional"\n'
    )
    assert load_config_text(text).tls.verify_members is False


def test_every_tls_rule_is_listed() -> None:
    problems = problems_of('[tls]\nprivate-key = "k.pem"\nverify-clients = "required"\n')
    assert [line.split(" = ", 1)[0] for line in problems] == ["tls.certificate", "tls.verify-clients"]


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("sip1.example.com", True),
        ("SIP1.Example.COM", True),
        ("localhost", True),
        ("a", True),
        ("1sip.example.com", True),
        ("xn--bcher-kva.example", True),
        ("a-b.c-d", True),
        ("l" * 63 + ".example", True),
        (".".join(["a" * 63] * 3 + ["b" * 61]), True),  # 253 characters
        ("10.0.0.1", True),
        ("2001:db8::1", True),
        ("::1", True),
        ("l" * 64 + ".example", False),
        (".".join(["a" * 63] * 3 + ["b" * 62]), False),  # 254 characters
        ("sip1.example.com.", False),
        (".example.com", False),
        ("a..b", False),
        ("-sip.example.com", False),
        ("sip-.example.com", False),
        ("sip_1.example.com", False),
        ("*.example.com", False),
        ("sip 1.example.com", False),
        ("sip1.example.com:5061", False),
        ("[2001:db8::1]", False),
        ("fe80::1%eth0", False),
        ("10.0.0", False),
        ("10.0.0.256", False),
        ("bücher.example", False),
        ("", False),
    ],
)
def test_server_names(value: str, allowed: bool) -> None:
    assert is_server_name(value) is allowed
    if value:
        text = tls_pair(extra=f'primary-server-name = "{value}"\nbackup-server-name = "{value}"\n')
        if allowed:
            pair = load_config_text(text).pair[0]
            assert (pair.primary_server_name, pair.backup_server_name) == (value, value)
        else:
            problem = (
                "expected a DNS host name (letters, digits and hyphens, dot-separated labels of 1-63 "
                "characters, RFC 1123) or an IP address"
            )
            assert problems_of(text) == [
                f"pair.0.primary-server-name = {value!r}: {problem}",
                f"pair.0.backup-server-name = {value!r}: {problem}",
            ]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_server_name_only_on_a_tls_member(transport: str) -> None:
    text = tls_pair(primary=f"{transport}:10.0.0.1:5060", extra='primary-server-name = "sip1.example.com"\n')
    assert problems_of(text) == [
        (
            f"pair.0.primary-server-name = 'sip1.example.com': allowed only when primary is a tls: address "
            f"(primary = '{transport}:10.0.0.1:5060'): the name is sent as SNI and checked in the member's "
            "certificate"
        )
    ]
    text = tls_pair(backup=f"{transport}:10.0.0.2:5060", extra='backup-server-name = "sip2.example.com"\n')
    (line,) = problems_of(text)
    assert line.startswith(
        "pair.0.backup-server-name = 'sip2.example.com': allowed only when backup is a tls:"
    )
    # The other member, over TLS, may have one.
    pair = load_config_text(
        tls_pair(backup=f"{transport}:10.0.0.2:5060", extra='primary-server-name = "s"\n')
    )
    assert pair.pair[0].primary_server_name == "s"


def test_server_name_of_a_bad_member_is_not_judged_twice() -> None:
    (line,) = problems_of(tls_pair(primary="tls:10.0.0.1", extra='primary-server-name = "s"\n'))
    assert line.startswith("pair.0.primary = 'tls:10.0.0.1': ")


def test_empty_server_name_on_any_member() -> None:
    pair = load_config_text(PAIR + 'primary-server-name = ""\nbackup-server-name = ""\n').pair[0]
    assert (pair.primary_server_name, pair.backup_server_name) == ("", "")


def test_primary_and_backup_still_differ_over_tls() -> None:
    text = tls_pair(backup="tls:10.0.0.1:5061", extra='primary-server-name = "a"\nbackup-server-name = "b"\n')
    (line,) = problems_of(text)
    assert line.endswith(": primary and backup must be different addresses")


def test_render_tls() -> None:
    text = render_config(load_config(None))
    assert (
        '\n[tls]\ncertificate = ""\nprivate-key = ""\nca-file = ""\nverify-members = true\n'
        'verify-clients = "none"\nmin-version = "1.2"\nhandshake-timeout = 5.0\nkeylog-file = ""\n'
        "\n[[pair]]\n"
    ) in text
    assert '\nprimary-server-name = ""\nbackup-server-name = ""\n' in text


def test_reference_lists_the_choices() -> None:
    reference = render_reference()
    assert (
        '| `verify-clients` | string | `"none"` | one of `"none"`, `"optional"`, `"required"` |' in reference
    )
    assert '| `min-version` | string | `"1.2"` | one of `"1.2"`, `"1.3"` |' in reference
    assert "| `handshake-timeout` | number (seconds) | `5.0` | > 0, <= 60 |" in reference
    assert "## [tls]" in reference


# ============================================================================ proxy.sip-ip-tos


def test_sip_ip_tos_defaults_to_the_system_default() -> None:
    assert load_config(None).proxy.sip_ip_tos == 0
    assert ProxySection().sip_ip_tos == 0


@pytest.mark.parametrize(
    ("text", "value"), [("0x60", 0x60), ("0x68", 0x68), ("184", 0xB8), ("252", 252), ("0", 0)]
)
def test_sip_ip_tos_takes_a_dscp_shifted_left_by_two(text: str, value: int) -> None:
    config = load_config_text(f"[proxy]\nsip-ip-tos = {text}\n")
    assert config.proxy.sip_ip_tos == value
    assert load_config_text(render_config(config)) == config


@pytest.mark.parametrize("text", ["0x69", "0x6a", "0x6b", "1", "2", "255"])
def test_sip_ip_tos_with_ecn_bits_is_refused(text: str) -> None:
    (line,) = problems_of(f"[proxy]\nsip-ip-tos = {text}\n")
    assert line.startswith(f"proxy.sip-ip-tos = {int(text, 0)}: "), line
    assert "ECN" in line
    assert "DSCP << 2" in line
    assert "0x68" in line


@pytest.mark.parametrize("text", ["256", "-1", "true", '"0x68"', "104.0"])
def test_sip_ip_tos_is_a_byte(text: str) -> None:
    (line,) = problems_of(f"[proxy]\nsip-ip-tos = {text}\n")
    assert line.startswith("proxy.sip-ip-tos = "), line


def test_sip_ip_tos_is_in_the_reference_with_dscp() -> None:
    row = next(line for line in render_reference().splitlines() if "`sip-ip-tos`" in line)
    assert "DSCP" in row
    assert "<= 255" in row


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            '[proxy]\napplications = "SIPS1"\n',
            "sipha reads no Configuration Server; give each pair a [[pair]] table",
        ),
        ('[proxy]\nserving-sipserver = "x"\n', "set serving = true in the [[pair]] table"),
        ("[proxy]\noos-check = 5\n", "a Genesys SIP Proxy option: it is [monitor] oos-check"),
        (
            "[monitor]\nds_ping_interval = 10\n",
            "a Kamailio dispatcher parameter: the OPTIONS period is [monitor]",
        ),
    ],
)
def test_an_option_brought_from_the_replaced_product_says_where_it_went(text: str, said: str) -> None:
    """Refused like any unknown option (nothing accepted and ignored), with where the job is done."""
    [line] = problems_of(text)
    assert "unknown option (" in line
    assert said in line
