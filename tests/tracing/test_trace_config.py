"""[trace] in the configuration: what is refused and how it is named; ``sipha run --trace``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipha.config import ConfigError, load_config_text
from sipha.configtext import render_config
from tests.integration.support import HOST, free_port, stop_process


def problems(trace: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(f"[trace]\n{trace}\n", source="t.toml")
    return caught.value.problems


def test_the_defaults_trace_nothing() -> None:
    trace = load_config_text("").trace
    assert (trace.hep, trace.hep_capture_id, trace.hep_password, trace.log) == ("", 2001, "", False)


@pytest.mark.parametrize(
    "hep",
    ["udp:192.0.2.5:9060", "UDP:192.0.2.5:9060", "udp:[2001:db8::5]:9060", "udp:homer.example.com:9060"],
)
def test_a_collector_is_udp_and_an_ip_or_a_name(hep: str) -> None:
    assert load_config_text(f'[trace]\nhep = "{hep}"\n').trace.hep == hep


@pytest.mark.parametrize(
    ("hep", "why"),
    [
        ("tcp:192.0.2.5:9060", "expected udp:host:port (HEP goes over UDP), e.g. udp:192.0.2.5:9060"),
        ("192.0.2.5:9060", "expected udp:host:port (HEP goes over UDP), e.g. udp:192.0.2.5:9060"),
        ("udp:192.0.2.5", "expected host:port"),
        ("udp:192.0.2.5:0", "port must be 1-65535"),
        ("udp:::1:9060", "an IPv6 host must be in brackets: expected [IPv6]:port, e.g. udp:[::1]:5060"),
        ("udp:homer_1:9060", "expected udp:host:port with host an IP address or a DNS host name"),
    ],
)
def test_a_bad_collector_is_refused_naming_key_value_and_what_is_allowed(hep: str, why: str) -> None:
    assert problems(f'hep = "{hep}"') == [f"trace.hep = {hep!r}: {why}"]


def test_options_that_would_do_nothing_without_hep_are_refused() -> None:
    assert problems('hep-password = "secret"\nhep-capture-id = 7') == [
        "trace.hep-password = (hidden): unused without trace.hep (HEP export off): set hep or remove it",
        "trace.hep-capture-id = 7: unused without trace.hep (HEP export off): set hep or remove it",
    ]


def test_the_password_is_never_printed_in_a_problem() -> None:
    (line,) = problems(f'hep = "udp:192.0.2.5:9060"\nhep-password = "{"s" * 65}"')
    assert line == "trace.hep-password = (hidden): String should have at most 64 characters"


def test_capture_id_is_a_uint32() -> None:
    assert load_config_text('[trace]\nhep = "udp:192.0.2.5:9060"\nhep-capture-id = 4294967295').trace
    (line,) = problems('hep = "udp:192.0.2.5:9060"\nhep-capture-id = 4294967296')
    assert line == "trace.hep-capture-id = 4294967296: Input should be less than or equal to 4294967295"


def test_the_effective_configuration_shows_trace_and_reads_back() -> None:
    config = load_config_text('[trace]\nhep = "udp:192.0.2.5:9060"\nhep-capture-id = 7\nlog = true\n')
    text = render_config(config)
    assert (
        '\n[trace]\nhep = "udp:192.0.2.5:9060"\nhep-capture-id = 7\nhep-password = ""\nlog = true\n' in text
    )
    assert load_config_text(text) == config


@pytest.mark.integration
def test_run_trace_logs_every_message_and_keeps_doing_so_after_a_reload(tmp_path: Path) -> None:
    sip = free_port()
    config = tmp_path / "sipha.toml"
    text = (
        f'[proxy]\nlisten = ["udp:{HOST}:{sip}"]\nrecord-route = "sip:{HOST}:{sip};lr"\n'
        f'[admin]\nlisten = "{HOST}:{free_port()}"\n[monitor]\noos-check = 0\n'
        f'[[pair]]\nname = "p"\nprimary = "udp:{HOST}:{free_port()}"\nbackup = "udp:{HOST}:{free_port()}"\n'
    )
    config.write_text(text, encoding="utf-8")
    log = tmp_path / "sipha.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "sipha", "run", "--config", str(config), "--trace"],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for(log, "listening on udp")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            phone.bind((HOST, 0))
            phone.settimeout(5)
            port = phone.getsockname()[1]
            options = keepalive(sip, port, 1)
            phone.sendto(options, (HOST, sip))
            answer = phone.recv(65535)
            wait_for(log, f"SIP sent to udp:{HOST}:{port} from udp:{HOST}:{sip} ({len(answer)} bytes):")
            assert f"SIP received from udp:{HOST}:{port} on udp:{HOST}:{sip} ({len(options)} bytes):" in read(
                log
            )
            assert "INFO sipha.trace: SIP received from" in read(log)
            config.write_text(text + "[trace]\nlog = false\n", encoding="utf-8")
            process.send_signal(signal.SIGHUP)
            wait_for(log, "configuration reloaded")
            phone.sendto(keepalive(sip, port, 2), (HOST, sip))
            phone.recv(65535)
            wait_for(log, "CSeq: 2 OPTIONS")  # --trace holds over the file's log = false
    finally:
        stop_process(process)


def keepalive(sip: int, port: int, number: int) -> bytes:
    """An OPTIONS to sipha itself (a keepalive), which it answers."""
    return (
        f"OPTIONS sip:{HOST}:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK-run-{number}\r\n"
        f"Max-Forwards: 0\r\nFrom: <sip:phone@{HOST}>;tag=p\r\nTo: <sip:{HOST}:{sip}>\r\n"
        f"Call-ID: run-trace@{HOST}\r\nCSeq: {number} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def read(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")


def wait_for(log: Path, text: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while text not in read(log):
        assert time.monotonic() < deadline, f"{text!r} not in the log:\n{read(log)}"
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_collector_that_does_not_resolve_refuses_the_start_in_one_line(
    tmp_path: Path, workers: int
) -> None:
    config = tmp_path / "sipha.toml"
    config.write_text(
        f'[proxy]\nlisten = ["udp:{HOST}:{free_port()}"]\nworkers = {workers}\n'
        f'[admin]\nlisten = "{HOST}:{free_port()}"\n[trace]\nhep = "udp:no-such-host.invalid:9060"\n',
        encoding="utf-8",
    )
    completed = subprocess.run(
        [sys.executable, "-m", "sipha", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    assert completed.stderr.startswith(
        "sipha: cannot start: trace.hep = 'udp:no-such-host.invalid:9060': cannot send there: "
    ), completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout
