"""The log output of ``sipha run``: text, JSON lines or journald's stream.

docs/troubleshooting.md, "Log formats", says what an operator sees of each.

Every module logs through the standard :mod:`logging` API.  Structured fields travel with
each record as attributes, given at the source with ``extra=`` (an HA event's id, pair,
member and reason: :func:`event_fields`) or set by a filter (a worker's index:
:class:`WorkerField`); the JSON format (python-json-logger) writes every such attribute as a
key of its own, and the text and journal formats write the same line as they always did.

Formats:

* ``text``: ``TIME LEVEL LOGGER: MESSAGE``, a worker's lines with ``worker N: `` before MESSAGE;
* ``json``: one object per line: ``time``, ``level``, ``logger``, ``message`` (without the
  worker prefix), then the record's fields (``event_id``, ``kind``, ``pair``, ``member``,
  ``worker``...), and ``exception`` when there is one;
* ``journal``: the text line without TIME (journald stamps each entry), every physical line
  prefixed with its syslog priority ``<N>``, which journald reads from a service's stream.

The default is ``journal`` when standard error is the stream systemd connected to the
journal (``JOURNAL_STREAM``), else ``text``.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, TextIO

from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

from sipha.admin.telemetry import event_kind
from sipha.ha import (
    ClaimRejected,
    HaEvent,
    Member,
    MemberBecameActive,
    PairEvent,
    PairOutOfService,
    PairUnknown,
    SplitBrain,
    SpreadChanged,
)
from sipha.ha.events import describe

LOG_FORMATS: Final = ("text", "json", "journal")
"""The values of ``sipha run --log-format``."""

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The text format; operators, docs/troubleshooting.md and the tests read these lines."""

JOURNAL_FORMAT: Final = "%(levelname)s %(name)s: %(message)s"
"""The journal format before its ``<N>`` prefix: the text line without the time."""

_PRIORITIES: Final = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
"""Syslog priorities (crit, err, warning, info); below INFO: 7, debug."""


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level: 2 (CRITICAL) to 7 (DEBUG)."""
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return 7


class WorkerField(logging.Filter):
    """Gives every record of worker ``index`` (``[proxy] workers``) the field ``worker``.

    Installed on the handlers in each worker process (:mod:`sipha.supervisor`): the text and
    journal formats show it as ``worker N: `` before the message, JSON as ``"worker": N``.
    """

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        record.worker = self.index
        return True


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE``, with ``worker N: `` before MESSAGE in a worker process."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: D102, N802 - logging's name
        worker = getattr(record, "worker", None)
        if worker is None:
            return super().formatMessage(record)
        prefixed = copy.copy(record)  # the other handlers get the record as it was
        prefixed.message = f"worker {worker}: {record.message}"
        return super().formatMessage(prefixed)


class JournalFormatter(TextFormatter):
    """The text line without the time, each physical line prefixed with ``<N>``, its priority.

    A traceback or a traced SIP message spans several lines: journald makes one entry
    per line, each with the priority of its own prefix.
    """

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:  # noqa: D102
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


class JsonFormatter(_LibraryJsonFormatter):
    """One JSON object per line: time, level, logger, message, then the record's own fields."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "exc_info": "exception",
            },
            json_ensure_ascii=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: D102, N802, ARG002
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def event_fields(event: HaEvent) -> dict[str, object]:
    """The fields of an HA event's log record, for ``extra=`` where it is logged.

    The keys of ``/events`` (:meth:`sipha.admin.telemetry.Telemetry.record_event`): ``kind``,
    ``event_id`` (40000, 40001; absent for the others), ``pair``, ``member`` and its
    ``role`` (for split brain: the other member), ``reason``; ``members`` for 40001 (both) and
    for an active-active pair's spread (those that take new Call-IDs),
    ``active`` for split brain and a rejected claim.
    """
    fields: dict[str, object] = {"kind": event_kind(event)}
    if event.event_id is not None:
        fields["event_id"] = event.event_id
    if isinstance(event, PairEvent):
        fields["pair"] = event.pair
    member = event.other if isinstance(event, SplitBrain) else getattr(event, "member", None)
    if isinstance(member, Member):
        fields["member"] = describe(member)
        fields["role"] = member.role
    if isinstance(event, MemberBecameActive | PairUnknown | SpreadChanged):
        fields["reason"] = event.reason
    if isinstance(event, PairOutOfService | SpreadChanged):
        fields["members"] = [describe(one) for one in event.members]
    if isinstance(event, SplitBrain | ClaimRejected):
        fields["active"] = describe(event.active)
    return fields


def is_journal_stream(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journal stream systemd gave this service.

    systemd sets ``JOURNAL_STREAM=DEVICE:INODE`` of that stream; the variable is inherited
    by every child, so the stream itself is compared (``sipha run 2>file`` from a unit's
    shell writes to a file, not to the journal).
    """
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError):  # no file descriptor (io.UnsupportedOperation is both)
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


def default_format(stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``journal`` when ``stream`` (standard error) is systemd's journal stream, else ``text``."""
    stream = sys.stderr if stream is None else stream
    return "journal" if is_journal_stream(stream, os.environ if environ is None else environ) else "text"


def new_formatter(log_format: str) -> logging.Formatter:
    """The formatter of one of :data:`LOG_FORMATS`."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "journal":
        return JournalFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"log format {log_format!r}: one of {', '.join(LOG_FORMATS)}")


def setup_logging(level: str, log_format: str | None = None) -> None:
    """The root logger at ``level``, to standard error in ``log_format`` (None: :func:`default_format`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(new_formatter(default_format(sys.stderr) if log_format is None else log_format))
    logging.basicConfig(level=level, handlers=[handler], force=True)
