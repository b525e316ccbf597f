"""Keep the operator documents true: docs/migrating.md and docs/troubleshooting.md.

- Every configuration key that docs/migrating.md names as `` `[section] key` `` (or
  `` `[[pair]] key` ``, or `` `section.key` ``) exists in the configuration model.
- Every log line that docs/troubleshooting.md quotes in a fenced ``log`` block has the
  text format of ``sipha run`` and matches a format string of ``src/sipha``: a ``log.*(...)``
  call (at its level), or, for the pair monitor's events, an event message of
  ``sipha.ha.events`` (logged by ``sipha.app.ProxyApp._log_event``: INFO, or WARNING after
  ``event NNNNN: ``).  Placeholders (``%s``, ``%d``, ``{...}``) match any text.

No network, no sipha started: the source is read with :mod:`ast`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from pydantic import BaseModel

from sipha.config import Config

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "sipha"
MIGRATING = ROOT / "docs" / "migrating.md"
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"

LOG_LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "error": "ERROR", "exception": "ERROR"}
MIN_LITERAL = 12
"""A format string with fewer literal characters (``"%s"``, ``"event %d: %s"``) matches
almost anything: such wrappers are unwrapped explicitly, never matched alone."""

SEED_OPTIONS = (
    "oos-check",
    "oos-force",
    "applications",
    "serving-sipserver",
    "sip-address",
    "resolve-host",
    "overload-ctrl-dialog-rate",
    "sip-ip-tos",
    "record-route",
    "40000",
    "40001",
)
KAMAILIO_NAMES = (
    "ds_ping_interval",
    "ds_probing_mode",
    "ds_probing_threshold",
    "ds_inactive_threshold",
    "ds_ping_reply_codes",
    "ds_ping_method",
    "ds_select_dst",
    "ds_next_dst",
    "ds_mark_dst",
    "dispatcher.list",
    "dispatcher.set_state",
    "verify_certificate",
    "server_name",
)


# ---------------------------------------------------------------------- configuration keys


def model_keys() -> set[str]:
    """``section.key`` for every option of :class:`Config`, keys spelled as in TOML (aliases)."""
    keys: set[str] = set()
    for section, info in Config.model_fields.items():
        annotation = info.annotation
        args = getattr(annotation, "__args__", None)
        model = args[0] if args else annotation  # list[PairSection] -> PairSection
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        for name, field in model.model_fields.items():
            keys.add(f"{section}.{field.alias or name}")
    return keys


_BRACKET_KEY = re.compile(r"`\[\[?([a-z]+)\]\]? ([a-z][a-z-]*)`")
_DOTTED_KEY = re.compile(r"`(proxy|monitor|admin|tls|pair)\.([a-z][a-z-]*)`")


def named_keys(text: str) -> set[str]:
    """The configuration keys a document names, as ``section.key``."""
    found = {f"{section}.{key}" for section, key in _BRACKET_KEY.findall(text)}
    found |= {f"{section}.{key}" for section, key in _DOTTED_KEY.findall(text)}
    return found


def test_model_keys_cover_the_sections() -> None:
    keys = model_keys()
    assert {"monitor.oos-check", "proxy.record-route", "pair.primary-server-name", "tls.ca-file"} <= keys


def test_migrating_names_only_existing_keys() -> None:
    named = named_keys(MIGRATING.read_text(encoding="utf-8"))
    assert len(named) > 20  # the notation is used, so the check bites
    missing = sorted(named - model_keys())
    assert not missing, f"docs/migrating.md names keys that sipha.config does not have: {missing}"


def test_key_notation_is_recognised() -> None:
    text = "`[monitor] oos-check`, `[[pair]] serving`, `tls.ca-file`, `[proxy] bogus`"
    assert named_keys(text) == {"monitor.oos-check", "pair.serving", "tls.ca-file", "proxy.bogus"}


@pytest.mark.parametrize("name", SEED_OPTIONS + KAMAILIO_NAMES)
def test_migrating_covers(name: str) -> None:
    assert name in MIGRATING.read_text(encoding="utf-8")


# ---------------------------------------------------------------------- log lines


@dataclass(frozen=True)
class Template:
    """A format string of the source as a regular expression."""

    pattern: re.Pattern[str]
    literal: int
    level: str | None
    """The level of the log call it is the format of; None for other strings (event messages)."""
    text: str


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[sdrfgixX%]")


def _percent_template(text: str, level: str | None) -> Template | None:
    parts: list[str] = []
    literal = 0
    position = 0
    for match in _PERCENT.finditer(text):
        chunk = text[position : match.start()]
        parts.append(re.escape(chunk))
        literal += len(chunk)
        parts.append("%" if match.group() == "%%" else "(.+?)")
        position = match.end()
    chunk = text[position:]
    parts.append(re.escape(chunk))
    literal += len(chunk)
    if literal < MIN_LITERAL:
        return None
    return Template(re.compile("".join(parts), re.DOTALL), literal, level, text)


def _fstring_template(node: ast.JoinedStr) -> Template | None:
    parts: list[str] = []
    literal = 0
    shown: list[str] = []
    for value in node.values:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            parts.append(re.escape(value.value))
            literal += len(value.value)
            shown.append(value.value)
        else:
            parts.append("(.*?)")
            shown.append("{...}")
    if literal < MIN_LITERAL:
        return None
    return Template(re.compile("".join(parts), re.DOTALL), literal, None, "".join(shown))


EVENTS = SRC / "ha" / "events.py"
"""The pair monitor's event messages (f-strings), which ``ProxyApp._log_event`` logs."""


@cache
def templates() -> tuple[Template, ...]:
    """The format of every ``log.*(...)`` call of ``src/sipha``, and every string of ``ha/events.py``."""
    found: list[Template | None] = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        events = path == EVENTS
        if not events and "getLogger(" not in text:
            continue  # no log calls: nothing to parse (keeps the test fast)
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LOG_LEVELS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "log"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.append(_percent_template(node.args[0].value, LOG_LEVELS[node.func.attr]))
            elif events and isinstance(node, ast.JoinedStr):
                found.append(_fstring_template(node))
            elif events and isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(_percent_template(node.value, None))
    return tuple(template for template in found if template is not None)


@cache
def logger_names() -> frozenset[str]:
    names: set[str] = set()
    for path in SRC.rglob("*.py"):
        names.update(re.findall(r'logging\.getLogger\("([\w.]+)"\)', path.read_text(encoding="utf-8")))
    return frozenset(names)


_LINE = re.compile(
    r"(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} )?(?P<level>DEBUG|INFO|WARNING|ERROR) (?P<logger>[\w.]+): "
    r"(?:worker \d+: )?(?P<message>.*)"
)
_EVENT_PREFIX = re.compile(r"event (\d{5}): ")


def quoted_log_lines(text: str) -> list[str]:
    """The lines of every fenced block opened with ```` ```log ````."""
    lines: list[str] = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if not inside and stripped == "```log":
            inside = True
        elif inside and stripped.startswith("```"):
            inside = False
        elif inside and stripped:
            lines.append(stripped)
    return lines


def explain(line: str) -> str | None:
    """Why ``line`` is not a line sipha logs, or None when it is."""
    parsed = _LINE.fullmatch(line)
    if parsed is None:
        return "not in the format 'TIME LEVEL LOGGER: MESSAGE'"
    level, logger, message = parsed["level"], parsed["logger"], parsed["message"]
    if logger not in logger_names():
        return f"no logger {logger!r} in src/sipha"
    every = templates()
    if any(t.level == level and t.pattern.fullmatch(message) for t in every):
        return None
    # An event of the pair monitor: app.ProxyApp._log_event logs "%s" (INFO) or
    # "event %d: %s" (WARNING) around the event's message, an f-string of sipha.ha.events.
    event = _EVENT_PREFIX.match(message)
    inner, wanted = (message[event.end() :], "WARNING") if event else (message, "INFO")
    if level == wanted and any(t.level is None and t.pattern.fullmatch(inner) for t in every):
        return None
    return f"matches no {level} format string of src/sipha"


def test_troubleshooting_quotes_log_lines() -> None:
    lines = quoted_log_lines(TROUBLESHOOTING.read_text(encoding="utf-8"))
    assert len(lines) > 20
    problems = [f"{line!r}: {why}" for line in lines if (why := explain(line)) is not None]
    assert not problems, "docs/troubleshooting.md quotes log lines sipha does not write:\n" + "\n".join(
        problems
    )


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        ("INFO sipha: listening on udp:127.0.0.1:5060", True),
        ("WARNING sipha: listening on udp:127.0.0.1:5060", False),  # wrong level
        ("INFO sipha: worker 3: listening on udp:127.0.0.1:5060", True),
        ("INFO sipha: pair a: primary udp:10.0.0.1:5060 is active (answered OPTIONS)", True),
        (
            "WARNING sipha: event 40001: SIP Server HA pair unavailable: pair a (x do not answer OPTIONS)",
            True,
        ),
        ("INFO sipha: event 40001: SIP Server HA pair unavailable: pair a (x do not answer OPTIONS)", False),
        ("WARNING sipha: event 40001: something sipha never says", False),
        ("INFO sipha: pair a: everything is fine", False),
        ("INFO nosuchlogger: listening on udp:127.0.0.1:5060", False),
        ("listening on udp:127.0.0.1:5060", False),
    ],
)
def test_log_line_check(line: str, ok: bool) -> None:
    assert (explain(line) is None) is ok, explain(line)
