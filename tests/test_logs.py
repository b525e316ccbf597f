"""The log formats of ``sipha run`` (sipha.logs): text unchanged, JSON fields given at the source, journal.

The unit tests format real records; the end-to-end tests run ``sipha run`` as a process
with its pair's members (``sipha simulate-server``) started late, so that the pair goes out
of service (event 40001) and comes back, and read its standard error as an operator would;
the last one hands the journal format to a real journald (systemd's, in namespaces of its own).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sipha.cli import main
from sipha.ha import Member, MemberBecameActive, PairOutOfService, PairUnknown, SplitBrain, SpreadChanged
from sipha.logs import (
    LOG_FORMATS,
    TEXT_FORMAT,
    JournalFormatter,
    JsonFormatter,
    TextFormatter,
    WorkerField,
    default_format,
    event_fields,
    is_journal_stream,
    new_formatter,
    syslog_priority,
)
from sipha.sip.address import Address
from tests.integration.support import HOST, free_port, stop_process

WAIT = 10.0

TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) [\w.]+: .*")

PRIMARY = Member("site", "primary", Address("UDP", "10.0.1.10", 5060))
BACKUP = Member("site", "backup", Address("UDP", "10.0.1.11", 5060))


def record(message: str, *args: object, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    """A record as ``logging.getLogger("sipha").log(level, message, *args, extra=extra)`` makes it."""
    made = logging.getLogger("sipha").makeRecord(
        "sipha", level, __file__, 1, message, args, None, extra=extra
    )
    made.created = 1_790_000_000.25  # 2026-09-21T14:13:20.250Z
    return made


# ---------------------------------------------------------------- the formatters


def test_text_lines_are_the_format_operators_and_tests_read() -> None:
    plain = record("listening on %s", "udp:127.0.0.1:5060")
    assert TextFormatter().format(plain) == logging.Formatter(TEXT_FORMAT).format(plain)
    assert TEXT_LINE.fullmatch(TextFormatter().format(plain))
    assert TextFormatter().format(plain).endswith(" INFO sipha: listening on udp:127.0.0.1:5060")


def test_a_workers_text_line_has_the_prefix_and_its_record_stays_as_it_was() -> None:
    line = record("pair %s: primary is active", "p")
    assert WorkerField(3).filter(line)
    assert line.worker == 3  # type: ignore[attr-defined]
    assert TextFormatter().format(line).endswith(" INFO sipha: worker 3: pair p: primary is active")
    # The JSON handler of the same process gets the same record: its message has no prefix.
    entry = json.loads(JsonFormatter().format(line))
    assert entry["message"] == "pair p: primary is active"
    assert entry["worker"] == 3


def test_json_fields_are_the_records_fields_never_parsed_from_the_message() -> None:
    fields = {"event_id": 40001, "pair": "site", "kind": "out-of-service"}
    entry = json.loads(
        JsonFormatter().format(record("event %d: %s", 40001, "down", level=logging.WARNING, **fields))
    )
    assert entry == {
        "time": "2026-09-21T14:13:20.250+00:00",
        "level": "WARNING",
        "logger": "sipha",
        "message": "event 40001: down",
        **fields,
    }
    # The same text without the fields at its source: no event_id (nothing reads it back out of the text).
    bare = json.loads(JsonFormatter().format(record("event %d: %s", 40001, "down", level=logging.WARNING)))
    assert "event_id" not in bare
    per_source = json.loads(
        JsonFormatter().format(record("source %s: dropped", "192.0.2.7", source="192.0.2.7"))
    )
    assert per_source["source"] == "192.0.2.7"


def test_json_carries_the_exception_and_non_ascii_text_as_is() -> None:
    try:
        raise ValueError("é")  # noqa: TRY301 - a real traceback
    except ValueError:
        failed = record("worker %d failed", 1, level=logging.ERROR)
        failed.exc_info = sys.exc_info()
    line = JsonFormatter().format(failed)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: é")
    assert "é" in line  # not \u00e9


@pytest.mark.parametrize(
    ("level", "priority"),
    [
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
        (logging.INFO + 5, 6),
    ],
)
def test_syslog_priorities(level: int, priority: int) -> None:
    assert syslog_priority(level) == priority


def test_journal_lines_are_the_text_line_without_time_each_physical_line_prefixed() -> None:
    warning = record("event %d: %s", 40001, "down", level=logging.WARNING)
    assert JournalFormatter().format(warning) == "<4>WARNING sipha: event 40001: down"
    traced = record("trace: received\nINVITE sip:a@b SIP/2.0\nVia: x", level=logging.DEBUG)
    WorkerField(1).filter(traced)
    assert JournalFormatter().format(traced).split("\n") == [
        "<7>DEBUG sipha: worker 1: trace: received",
        "<7>INVITE sip:a@b SIP/2.0",
        "<7>Via: x",
    ]


def test_new_formatter_knows_every_format_and_refuses_others() -> None:
    assert [type(new_formatter(name)) for name in LOG_FORMATS] == [
        TextFormatter,
        JsonFormatter,
        JournalFormatter,
    ]
    with pytest.raises(ValueError, match="'syslog': one of text, json, journal"):
        new_formatter("syslog")


def test_the_cli_refuses_a_bad_log_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["run", "--log-format", "syslog"])
    assert caught.value.code == 2
    assert "argument --log-format: invalid choice: 'syslog'" in capsys.readouterr().err


# ---------------------------------------------------------------- HA event fields


def test_event_fields_of_the_ha_events() -> None:
    down = PairOutOfService("site", 10.0, (PRIMARY, BACKUP))
    assert event_fields(down) == {
        "kind": "out-of-service",
        "event_id": 40001,
        "pair": "site",
        "members": ["primary udp:10.0.1.10:5060", "backup udp:10.0.1.11:5060"],
    }
    active = MemberBecameActive("site", 12.0, BACKUP, "options", PRIMARY)
    assert event_fields(active) == {
        "kind": "active",
        "pair": "site",
        "member": "backup udp:10.0.1.11:5060",
        "role": "backup",
        "reason": "options",
    }
    unknown = PairUnknown("site", 13.0, "no-answer", BACKUP)
    assert event_fields(unknown)["reason"] == "no-answer"
    split = SplitBrain("site", 14.0, started=True, active=PRIMARY, other=BACKUP)
    assert event_fields(split) == {
        "kind": "split-brain",
        "pair": "site",
        "member": "backup udp:10.0.1.11:5060",
        "role": "backup",
        "active": "primary udp:10.0.1.10:5060",
    }
    spread = SpreadChanged("site", 15.0, (PRIMARY,), BACKUP, "silent")
    assert event_fields(spread) == {
        "kind": "spread",
        "pair": "site",
        "member": "backup udp:10.0.1.11:5060",
        "role": "backup",
        "reason": "silent",
        "members": ["primary udp:10.0.1.10:5060"],
    }


# ---------------------------------------------------------------- the default format


def test_the_default_is_journal_only_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    with (tmp_path / "stream").open("w") as stream, (tmp_path / "other").open("w") as other:
        status = os.fstat(stream.fileno())
        journal = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        assert is_journal_stream(stream, journal)
        assert default_format(stream, journal) == "journal"
        # Inherited by a child whose stderr went elsewhere (2>file): not the journal.
        assert default_format(other, journal) == "text"
        assert default_format(stream, {}) == "text"
        assert default_format(stream, {"JOURNAL_STREAM": "garbage"}) == "text"
        assert default_format(stream, {"JOURNAL_STREAM": f"{status.st_dev}:"}) == "text"


def test_a_stream_without_a_file_descriptor_is_not_the_journal(capsys: pytest.CaptureFixture[str]) -> None:
    assert default_format(sys.stderr, {"JOURNAL_STREAM": "1:2"}) == "text"  # pytest's capture


# ---------------------------------------------------------------- sipha run, end to end


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    log: Path
    primary: int
    backup: int

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, found: Callable[[str], bool]) -> str:
        deadline = time.monotonic() + WAIT
        while not found(self.text()):
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.05)
        return self.text()


def admin_ports(count: int) -> int:
    """A port P with P .. P + count - 1 free for TCP: worker N serves its admin HTTP on P + N."""
    for _ in range(50):
        first = free_port()
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    stack.enter_context(socket.create_server((HOST, port)))
            except OSError:
                continue
        return first
    raise RuntimeError("no free run of admin ports")


def write_config(path: Path, *, workers: int = 1) -> tuple[int, int]:
    """A configuration on free ports, oos-force 1 s (40001 about 2 s after start); the members' ports."""
    primary, backup, sip, admin = free_port(), free_port(), free_port(), admin_ports(workers)
    path.write_text(
        f"""
[proxy]
listen = ["udp:{HOST}:{sip}"]
record-route = "sip:{HOST}:{sip};lr"
workers = {workers}
[monitor]
oos-check = 1
oos-force = 1
[admin]
listen = "{HOST}:{admin}"
[[pair]]
name = "site"
primary = "udp:{HOST}:{primary}"
backup = "udp:{HOST}:{backup}"
serving = true
"""
    )
    return primary, backup


@contextlib.contextmanager
def sipha_run(directory: Path, *args: str, workers: int = 1, journal: str | None = None) -> Iterator[Running]:
    """``sipha run ARGS`` (:func:`write_config`), its standard error to a file.

    ``journal``: the JOURNAL_STREAM it gets ("": the file's, as systemd names its stream);
    None: none.  The pair's members are not started (see :func:`members`).
    """
    config = directory / "sipha.toml"
    primary, backup = write_config(config, workers=workers)
    log = directory / "sipha.log"
    env = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
    env["PYTHONUNBUFFERED"] = "1"
    with log.open("wb") as out:
        if journal is not None:
            status = os.fstat(out.fileno())
            env["JOURNAL_STREAM"] = journal or f"{status.st_dev}:{status.st_ino}"
        process = subprocess.Popen(
            [sys.executable, "-m", "sipha", "run", "--config", str(config), *args],
            stdout=subprocess.DEVNULL,
            stderr=out,
            env=env,
        )
    try:
        yield Running(process, log, primary, backup)
    finally:
        stop_process(process)


@contextlib.contextmanager
def members(running: Running) -> Iterator[None]:
    """Both members of the pair, simulated, in primary mode (the first to answer becomes active)."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "sipha", "simulate-server", "--listen", f"udp:{HOST}:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in (running.primary, running.backup)
    ]
    try:
        yield
    finally:
        for process in processes:
            stop_process(process)


def json_entries(text: str) -> list[dict[str, Any]]:
    """Every line, each a JSON object (a line that is not fails the test)."""
    return [json.loads(line) for line in text.splitlines() if line]


def with_event(event_id: int) -> Callable[[str], bool]:
    return lambda text: any(entry.get("event_id") == event_id for entry in json_entries(text))


def test_json_lines_of_a_real_run_carry_the_events_fields(tmp_path: Path) -> None:
    with sipha_run(tmp_path, "--log-format", "json") as running:
        entries = json_entries(running.wait_for(with_event(40001)))
        down = next(entry for entry in entries if entry.get("event_id") == 40001)
        assert down["level"] == "WARNING"
        assert down["logger"] == "sipha"
        assert down["pair"] == "site"
        assert down["kind"] == "out-of-service"
        assert down["members"] == [
            f"primary udp:{HOST}:{running.primary}",
            f"backup udp:{HOST}:{running.backup}",
        ]
        assert down["message"].startswith("event 40001: SIP Server HA pair unavailable: pair site (")
        assert datetime.fromisoformat(down["time"]).utcoffset() is not None
        started = next(entry for entry in entries if entry.get("kind") == "unknown")  # at start
        assert {"kind": "unknown", "pair": "site", "reason": "start"}.items() <= started.items()
        assert "event_id" not in started
        with members(running):
            back = json_entries(running.wait_for(lambda text: '"kind": "active"' in text))
        active = next(entry for entry in back if entry.get("kind") == "active")
        assert active["level"] == "INFO"
        assert active["reason"] == "options"
        assert active["role"] in {"primary", "backup"}
        assert active["member"] == f"{active['role']} udp:{HOST}:{getattr(running, active['role'])}"
        listening = next(entry for entry in back if entry["message"].startswith("listening on "))
        assert set(listening) == {"time", "level", "logger", "message"}  # no fields: none given


def test_json_lines_of_workers_carry_the_worker_index(tmp_path: Path) -> None:
    def both_listening(text: str) -> bool:
        entries = json_entries(text)
        return {e.get("worker") for e in entries if e["message"].startswith("listening on")} >= {0, 1}

    with sipha_run(tmp_path, "--log-format", "json", workers=2) as running:
        entries = json_entries(running.wait_for(both_listening))
    for entry in entries:
        assert not entry["message"].startswith("worker "), entry  # the index is a field, not text
    assert any(
        entry["message"].startswith("started 2 workers") and "worker" not in entry for entry in entries
    )


def test_under_systemd_the_default_is_the_journal_format(tmp_path: Path) -> None:
    with sipha_run(tmp_path, journal="") as running:  # JOURNAL_STREAM names the log file: stderr
        text = running.wait_for(lambda text: "event 40001: " in text)
    lines = text.splitlines()
    assert all(re.match(r"<[2-7]>(DEBUG|INFO|WARNING|ERROR) [\w.]+: ", line) for line in lines), text
    assert any(line.startswith("<6>INFO sipha: listening on udp:") for line in lines), text
    assert any(
        line.startswith("<4>WARNING sipha: event 40001: SIP Server HA pair unavailable: pair site (")
        for line in lines
    ), text


def test_the_text_lines_are_unchanged_where_stderr_is_not_the_journal(tmp_path: Path) -> None:
    # JOURNAL_STREAM inherited from a unit, stderr redirected elsewhere: text.
    with sipha_run(tmp_path, journal="1:1") as running:
        text = running.wait_for(lambda text: "event 40001: " in text)
    lines = text.splitlines()
    assert all(TEXT_LINE.fullmatch(line) for line in lines), text
    assert any(
        re.fullmatch(r"\S+ \S+ INFO sipha: pair site: no active member, probing both \(starting\)", line)
        for line in lines
    ), text
    assert any(
        re.fullmatch(
            r"\S+ \S+ WARNING sipha: event 40001: SIP Server HA pair unavailable: pair site \(primary "
            rf"udp:{HOST}:{running.primary} and backup udp:{HOST}:{running.backup} do not answer OPTIONS\)",
            line,
        )
        for line in lines
    ), text


JOURNALD = Path("/lib/systemd/systemd-journald")
JOURNALD_TOOLS = (shutil.which("unshare"), shutil.which("systemd-cat"), shutil.which("journalctl"))

# In a mount and PID namespace of its own (nothing of the host's journal is touched, and every
# process in it ends with the script): a journald on a tmpfs /run, and sipha started by
# systemd-cat with its standard error connected to journald's stream, JOURNAL_STREAM naming that
# stream as systemd names it for a service (systemd-cat does not set it).  Stopped once the
# journal has event 40001 (bounded), then the entries are printed as JSON.
NAMESPACES = ("unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc")
JOURNAL_SCRIPT = """
set -eu
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/log
mkdir -p /run/systemd/journal /run/log/journal
"$JOURNALD" >/dev/null 2>&1 &
for _ in $(seq 100); do [ -S /run/systemd/journal/stdout ] && break; sleep 0.05; done
systemd-cat -t sipha-test bash -c \
  'export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); exec "$@"' sh "$@" &
for _ in $(seq 200); do
  journalctl -D /run/log/journal -t sipha-test -o cat --no-pager | grep -q "event 40001" && break
  sleep 0.05
done
kill -TERM $!
wait $! || true
journalctl -D /run/log/journal -t sipha-test -o json --output-fields=MESSAGE,PRIORITY --no-pager
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not JOURNALD.exists() or None in JOURNALD_TOOLS,
    reason="needs root, unshare and systemd (journald, systemd-cat, journalctl)",
)
def test_journald_reads_each_lines_priority(tmp_path: Path) -> None:
    write_config(tmp_path / "sipha.toml")
    command = [sys.executable, "-m", "sipha", "run", "--config", str(tmp_path / "sipha.toml")]
    env = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
    done = subprocess.run(
        [*NAMESPACES, "bash", "-c", JOURNAL_SCRIPT, "journal", *command],
        capture_output=True,
        text=True,
        timeout=40,
        env={**env, "JOURNALD": str(JOURNALD), "SYSTEMD_COLORS": "0"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    priorities = {entry["MESSAGE"]: int(entry["PRIORITY"]) for entry in entries}
    down = [message for message in priorities if message.startswith("WARNING sipha: event 40001: ")]
    assert len(down) == 1, priorities
    assert priorities[down[0]] == 4  # warning
    assert any(m.startswith("INFO sipha: listening on udp:") and p == 6 for m, p in priorities.items())
    assert all(not message.startswith("<") for message in priorities), priorities  # the prefix was read
