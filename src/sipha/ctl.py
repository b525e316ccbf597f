"""``sipha ctl``: the admin HTTP API from a shell (``kamcmd`` for sipha).

A client only: the standard library's ``http.client`` (no proxy environment variables, no
redirects: the admin API is a local surface, and a redirect must not carry the token
elsewhere), imported when a command runs, so that the other ``sipha`` commands do not pay
for it.  The token comes from ``--token-file`` or ``$SIPHA_ADMIN_TOKEN``, never from the
command line, where ``ps`` would show it.

Exit codes, for scripts: :data:`EXIT_OK` 0, :data:`EXIT_REFUSED` 1 (the request was refused:
a reload of a bad configuration, any other HTTP error), :data:`EXIT_USAGE` 2,
:data:`EXIT_UNREACHABLE` 3 (connection refused, timeout, not an HTTP answer),
:data:`EXIT_UNAUTHORISED` 4 (401/403: token missing or wrong); 130 on Ctrl-C but while
following events (0).  Errors go to stderr, one line naming the URL and the cause.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from sipha import __version__

if TYPE_CHECKING:
    import http.client

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_UNAUTHORISED: Final = 4
EXIT_INTERRUPTED: Final = 130
"""Ctrl-C (but while following events: that is how one stops following, exit 0)."""

DEFAULT_URL: Final = "http://127.0.0.1:8080"
TOKEN_ENV: Final = "SIPHA_ADMIN_TOKEN"  # noqa: S105 - the name of the variable
TIMEOUT: Final = 10.0
"""s: the default bound of a request (connect, then each read)."""
RELOAD_TIMEOUT: Final = 40.0
"""s: a reload waits for listen addresses and DNS, and a worker for its parent (30 s at most)."""
FOLLOW_SILENCE: Final = 60.0
"""s without even a heartbeat (the server sends one every 15 s): the follower gives up."""
_MAX_BODY: Final = 16 * 1024 * 1024


class CtlError(Exception):
    """Ends the command: ``message`` on stderr (after ``sipha ctl: <url>: ``), exit ``code``."""

    def __init__(self, code: int, url: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.url = url
        self.message = message

    def line(self) -> str:
        """The one line on stderr."""
        where = f"{self.url}: " if self.url else ""
        return f"sipha ctl: {where}{self.message}"


# ---------------------------------------------------------------------------- command line


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``sipha ctl`` and its commands, under the ``sipha`` parser's ``commands``."""
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    # SUPPRESS: given before or after the command, the one given wins, else the default below.
    common.add_argument(
        "--url", default=argparse.SUPPRESS, help=f"the admin HTTP of sipha ([admin] listen); {DEFAULT_URL}"
    )
    common.add_argument(
        "--token-file",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="FILE",
        help=f"a file holding [admin] token; default: ${TOKEN_ENV}, else no token",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the API's JSON as it comes"
    )
    common.add_argument(
        "--timeout",
        type=_timeout,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help=f"bound of the request; default {TIMEOUT:g} ({RELOAD_TIMEOUT:g} for reload)",
    )
    # No abbreviations: ``--token`` must not pass for ``--token-file`` (and be read as a file name).
    ctl = commands.add_parser(
        "ctl",
        parents=[common],
        allow_abbrev=False,
        help="control a running sipha over its admin HTTP: status, reload, drain, events",
        description=(
            "Talk to a running sipha's admin HTTP API.  Exit status: 0 ok; 1 the request was refused "
            "(e.g. a reload of a bad configuration); 2 usage error; 3 cannot reach the admin API "
            "(connection refused, timeout); 4 unauthorised (token missing or wrong).  The token is read "
            f"from --token-file or ${TOKEN_ENV}, never from the command line."
        ),
    )
    actions = ctl.add_subparsers(dest="ctl_command", metavar="COMMAND")
    actions.add_parser(
        "status",
        parents=[common],
        allow_abbrev=False,
        help="pairs, members, the active one, state, OPTIONS round trips, problems",
        description="The pairs and their members as a table; --json: the /status document.",
    )
    actions.add_parser(
        "reload",
        parents=[common],
        allow_abbrev=False,
        help="re-read the configuration file (as SIGHUP): what changed, or why it was refused",
        description="As SIGHUP: exit 0 with what changed, or 1 with the problems (the running "
        "configuration kept).",
    )
    actions.add_parser(
        "drain",
        parents=[common],
        allow_abbrev=False,
        help="drain and exit (as SIGTERM); returns at once",
        description="As SIGTERM: new out-of-dialog requests get 503, sipha exits once the "
        "transactions and calls under way are done (at most 32 s).  Asking again does not cut them.",
    )
    member = actions.add_parser(
        "member",
        parents=[common],
        allow_abbrev=False,
        help="put a pair member in maintenance, or back to auto",
        description="maintenance: new transactions stop going to the member (the other member takes "
        "them once it answers an OPTIONS alive; until then the member keeps them); those under way "
        "finish; its OPTIONS go on.  auto: the algorithm decides again (nothing moves at once).  "
        "Kept across reloads while the pair's members do not change.",
    )
    member.add_argument("pair", help="the pair's name")
    member.add_argument("member", choices=("primary", "backup"), help="which member")
    member.add_argument("mode", choices=("maintenance", "auto"), help="maintenance or auto")
    events = actions.add_parser(
        "events",
        parents=[common],
        allow_abbrev=False,
        help="the recent HA events; --follow: then the new ones as they happen",
        description="The recent HA events (switchovers, pairs lost and back, split brain).  --follow "
        "goes on with the new ones until Ctrl-C (exit 0), the server ends the stream (exit 0: it "
        "says why) or the server goes away (exit 3).",
    )
    events.add_argument("--follow", "-f", action="store_true", help="go on with the new events")


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds, a number") from None
    if not 0.1 <= value <= 3600:  # noqa: PLR2004
        raise argparse.ArgumentTypeError(f"{text!r}: 0.1 to 3600 seconds")
    return value


def main(args: argparse.Namespace) -> int:
    """Run ``sipha ctl COMMAND``; the exit status."""
    command = getattr(args, "ctl_command", None)
    if command is None:
        print(
            "sipha ctl: a COMMAND is needed: status, reload, drain, member or events (sipha ctl -h)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    as_json = bool(getattr(args, "json", False))
    try:
        default_timeout = RELOAD_TIMEOUT if command == "reload" else TIMEOUT
        client = Client(
            getattr(args, "url", DEFAULT_URL),
            read_token(getattr(args, "token_file", None)),
            getattr(args, "timeout", default_timeout),
        )
        if command == "status":
            return _status(client, as_json=as_json)
        if command == "reload":
            return _reload(client, as_json=as_json)
        if command == "drain":
            return _drain(client, as_json=as_json)
        if command == "member":
            return _member(client, args.pair, args.member, args.mode, as_json=as_json)
        return _events(client, as_json=as_json, follow=args.follow)
    except CtlError as error:
        print(error.line(), file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print("sipha ctl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def read_token(path: Path | None) -> str:
    """The token: the content of ``path`` (one line), else ``$SIPHA_ADMIN_TOKEN``, else "" (none)."""
    if path is None:
        token = os.environ.get(TOKEN_ENV, "").strip()
        where = f"${TOKEN_ENV}"
    else:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise CtlError(EXIT_USAGE, "", f"--token-file {path}: cannot read: {reason}") from None
        where = f"--token-file {path}"
        if not token:
            raise CtlError(EXIT_USAGE, "", f"{where}: the file is empty")
    if not token.isascii() or any(ord(char) < 0x21 or ord(char) == 0x7F for char in token):  # noqa: PLR2004
        raise CtlError(EXIT_USAGE, "", f"{where}: the token must be one line of ASCII without spaces")
    return token


# ---------------------------------------------------------------------------- HTTP


class Client:
    """Requests to one admin API (``url``), with the token, bounded by ``timeout`` s."""

    def __init__(self, url: str, token: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise CtlError(EXIT_USAGE, "", f"--url {url!r}: an http:// or https:// URL, e.g. {DEFAULT_URL}")
        if parts.username is not None or parts.password is not None:
            raise CtlError(EXIT_USAGE, "", "--url: no credentials in the URL (ps shows it): use --token-file")
        try:
            self.port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise CtlError(EXIT_USAGE, "", f"--url {url!r}: not a valid port") from None
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.base = parts.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.shown = f"{self.scheme}://{host}:{self.port}{self.base}"
        self.token = token
        self.timeout = timeout

    def url(self, path: str) -> str:
        """The URL of ``path`` as errors name it (never with the token)."""
        return self.shown + path

    def open(
        self, method: str, path: str, *, read_timeout: float = 0.0, body: bytes = b"{}"
    ) -> http.client.HTTPResponse:
        """Send the request; the response (its status checked by the caller). CtlError 3 when unreachable.

        ``read_timeout``: once the response has come, the bound of each read instead of ``timeout``.
        """
        import http.client  # noqa: PLC0415 - only when a command runs

        if self.scheme == "https":
            import ssl  # noqa: PLC0415

            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"User-Agent": f"sipha-ctl/{__version__}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        sent = None
        if method == "POST":
            sent = body
            headers["Content-Type"] = "application/json"  # what the server wants of a POST (CSRF)
        try:
            connection.request(method, self.base + path, body=sent, headers=headers)
            sock = connection.sock  # the response keeps reading it after the connection lets it go
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise self.unreachable(path, error) from None
        if read_timeout and sock is not None:
            sock.settimeout(read_timeout)
        return response

    def unreachable(self, path: str, error: BaseException) -> CtlError:
        """Exit 3, saying what went wrong with the connection."""
        import http.client  # noqa: PLC0415
        import socket  # noqa: PLC0415
        import ssl  # noqa: PLC0415

        if isinstance(error, ConnectionRefusedError):
            cause = "cannot connect: connection refused (is sipha running, its [admin] listen there?)"
        elif isinstance(error, TimeoutError):
            cause = f"no answer within {self.timeout:g} s"
        elif isinstance(error, socket.gaierror):
            cause = f"cannot resolve {self.host}: {error.strerror}"
        elif isinstance(error, ssl.SSLError):
            cause = f"TLS: {error.reason or error}"
        elif isinstance(error, http.client.RemoteDisconnected):
            cause = "the connection was closed without an answer"
        elif isinstance(error, http.client.IncompleteRead | ConnectionResetError):
            cause = "the connection was lost (sipha stopped or was killed?)"
        elif isinstance(error, http.client.HTTPException):
            cause = f"not an HTTP answer ({type(error).__name__})"
        else:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            cause = f"cannot connect: {reason}"
        return CtlError(EXIT_UNREACHABLE, self.url(path), cause)

    def call(
        self, method: str, path: str, *, accept: tuple[int, ...] = (), body: object = None
    ) -> tuple[int, Any]:
        """One request whose answer is a JSON document: (status, document).

        A status under 300 or in ``accept`` is returned; 401/403 end with exit 4, any
        other with exit 1 (its body's first line said).
        """
        response = self.open(method, path, body=json.dumps(body or {}).encode())
        try:
            answer = response.read(_MAX_BODY)
        except (OSError, ValueError) as error:
            raise self.unreachable(path, error) from None
        finally:
            response.close()
        self.check(path, response, answer, accept)
        try:
            return response.status, json.loads(answer)
        except ValueError:
            raise CtlError(
                EXIT_UNREACHABLE, self.url(path), "the answer is not JSON: not a sipha admin API?"
            ) from None

    def check(
        self, path: str, response: http.client.HTTPResponse, body: bytes, accept: tuple[int, ...]
    ) -> None:
        """CtlError for an HTTP status that is not a success (nor one of ``accept``)."""
        status = response.status
        if status < 300 or status in accept:  # noqa: PLR2004
            return
        if status == 401:  # noqa: PLR2004
            if self.token:
                raise CtlError(EXIT_UNAUTHORISED, self.url(path), "401 unauthorised: the token was refused")
            raise CtlError(
                EXIT_UNAUTHORISED,
                self.url(path),
                f"401 unauthorised: this sipha wants its [admin] token (--token-file FILE or ${TOKEN_ENV})",
            )
        text = body.decode("utf-8", "replace").strip().splitlines()
        said = text[0][:200] if text else response.reason
        code = EXIT_UNAUTHORISED if status == 403 else EXIT_REFUSED  # noqa: PLR2004
        raise CtlError(code, self.url(path), f"{status} {response.reason}: {said}")


# ---------------------------------------------------------------------------- commands


def _print_json(document: object) -> None:
    print(json.dumps(document, indent=1))


def _status(client: Client, *, as_json: bool) -> int:
    _, document = client.call("GET", "/status")
    if not isinstance(document, dict) or "pairs" not in document:
        raise CtlError(EXIT_UNREACHABLE, client.url("/status"), "not a sipha /status document")
    if as_json:
        _print_json(document)
    else:
        print(render_status(document, client.shown), end="")
    return EXIT_OK


def _reload(client: Client, *, as_json: bool) -> int:
    status, document = client.call("POST", "/reload", accept=(422,))
    if as_json:
        _print_json(document)
    source = document.get("configuration", "?")
    if status == 422:  # noqa: PLR2004
        problems = document.get("problems") or []
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        error = CtlError(
            EXIT_REFUSED,
            client.url("/reload"),
            f"reload refused: configuration {source}: {count}; the running configuration is kept",
        )
        print(error.line(), file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_REFUSED
    if not as_json:
        changes = document.get("changes") or []
        if changes:
            print(f"configuration {source} reloaded:")
            for change in changes:
                print(f"  {change}")
        else:
            print(f"configuration {source} reloaded: nothing changed")
    return EXIT_OK


def _drain(client: Client, *, as_json: bool) -> int:
    _, document = client.call("POST", "/drain")
    if as_json:
        _print_json(document)
        return EXIT_OK
    counts = (
        f"{document.get('transactions_under_way', 0)} transactions under way, "
        f"{document.get('calls_up', 0)} calls up"
    )
    if document.get("started"):
        print(f"draining: {counts}; sipha exits once they are done (at most 32 s)")
    else:
        print(f"already draining: {counts}")
    return EXIT_OK


def _member(client: Client, pair: str, member: str, mode: str, *, as_json: bool) -> int:
    _, document = client.call("POST", "/member", body={"pair": pair, "member": member, "mode": mode})
    if as_json:
        _print_json(document)
    else:
        print(render_member_change(document, member, mode))
    return EXIT_OK


def render_member_change(document: dict[str, Any], member: str, mode: str) -> str:
    """``sipha ctl member``'s line: the pair's state, and who serves it (docs/design.md §2.2)."""
    pair, state, active = document.get("name", "?"), document.get("state", "?"), document.get("active")
    spread = list(document.get("spread") or [])
    if document.get("mode") == "active-active":
        serving = f"serving: {', '.join(spread) or 'none'}"
        keeps = spread == [member]
        note = " (it keeps new calls: the other member does not answer OPTIONS)" if keeps else ""
    else:
        serving, keeps = f"active: {active or 'none'}", active == member
        note = " (it keeps new calls until the other member answers OPTIONS)" if keeps else ""
    if mode == "maintenance":
        return f"pair {pair}: {member} in maintenance; {state}, {serving}{note}"
    held = ", ".join(document.get("maintenance") or []) or "none"
    return f"pair {pair}: {member} back to auto; {state}, {serving}; in maintenance: {held}"


def _events(client: Client, *, as_json: bool, follow: bool) -> int:
    path = "/events?follow=1" if follow else "/events"
    silence = max(client.timeout, FOLLOW_SILENCE) if follow else 0.0
    response = client.open("GET", path, read_timeout=silence)
    try:
        if response.status >= 300:  # noqa: PLR2004
            client.check(path, response, response.read(_MAX_BODY), ())
        for entry in _lines(client, path, response, silence or client.timeout):
            if "end" in entry and "kind" not in entry:
                print(
                    f"sipha ctl: {client.url(path)}: the server ended the stream: {entry['end']}",
                    file=sys.stderr,
                )
                return EXIT_OK
            print(json.dumps(entry) if as_json else render_event(entry), flush=True)
    except KeyboardInterrupt:
        print("sipha ctl: stopped (Ctrl-C)", file=sys.stderr)
        return EXIT_OK
    finally:
        response.close()
    if follow:
        raise CtlError(
            EXIT_UNREACHABLE, client.url(path), "the connection was lost (sipha stopped or was killed?)"
        )
    return EXIT_OK


def _lines(
    client: Client, path: str, response: http.client.HTTPResponse, silence: float
) -> Iterator[dict[str, Any]]:
    """The JSON objects of an NDJSON body as they arrive (blank heartbeat lines skipped)."""
    import http.client  # noqa: PLC0415

    while True:
        try:
            line = response.readline(_MAX_BODY)
        except TimeoutError:
            raise CtlError(
                EXIT_UNREACHABLE,
                client.url(path),
                f"the server went silent (not even a heartbeat for {silence:g} s)",
            ) from None
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise client.unreachable(path, error) from None
        if not line:
            return
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise CtlError(
                EXIT_UNREACHABLE, client.url(path), "not a JSON line: not a sipha admin API?"
            ) from None
        if isinstance(entry, dict):
            yield entry


# ---------------------------------------------------------------------------- human output


def render_event(entry: dict[str, Any]) -> str:
    """``2024-05-01 12:00:03.120Z  active        pair site: primary ... is active (...)``."""
    when = str(entry.get("time", "")).replace("T", " ")
    kind = str(entry.get("kind", ""))
    message = str(entry.get("message", ""))
    if entry.get("event_id") is not None:
        message = f"event {entry['event_id']}: {message}"
    return f"{when}  {kind:<16}  {message}"


def _duration(seconds: float) -> str:
    """``3d 04h``, ``2h 03m``, ``5m 07s``, ``12.3 s``: two units at most."""
    if seconds < 60:  # noqa: PLR2004
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def _when(text: str | None, now: datetime | None) -> str:
    """``12:00:03Z (5m 07s ago)`` from an ISO time of the document.

    ``now`` is the document's own time, so that the client's clock does not matter.
    """
    if not text:
        return "-"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    clock = moment.strftime("%H:%M:%SZ")  # UTC, as the document says it
    if now is None:
        return clock
    return f"{clock} ({_duration(max(0.0, (now - moment).total_seconds()))} ago)"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def render_status(document: dict[str, Any], url: str) -> str:
    """The /status document as an operator reads it: a header, one row per member, then the notes."""
    try:
        now: datetime | None = datetime.fromisoformat(str(document.get("time")))
    except ValueError:
        now = None
    pairs: list[dict[str, Any]] = document.get("pairs") or []
    down = document.get("pairs_without_active_member") or []
    if document.get("healthy"):
        health = "healthy"
    elif down:
        health = "UNHEALTHY (no active member: " + ", ".join(down) + ")"
    else:
        health = "not serving yet" if not pairs else "UNHEALTHY"
    draining = ", DRAINING (new requests get 503; exits when done)" if document.get("draining") else ""
    uptime = _duration(float(document.get("uptime", 0)))
    listen = ", ".join(document.get("listen") or []) or "-"
    out = [
        f"sipha {document.get('version', '?')} at {url}: up {uptime}, {health}{draining}",
        f"transactions in flight: {document.get('transactions_in_flight', 0)}; listening on {listen}",
        "",
    ]
    notes: list[str] = []
    rows = [
        ["PAIR", "STATE", "LAST CHANGE", "SWITCHOVERS", "MEMBER", "ROLE", "ACTIVE", "OPTIONS RTT", "PROBLEM"]
    ]
    for pair in pairs:
        first = True
        counters = pair.get("counters") or {}
        state = str(pair.get("state", "?")) + ("" if pair.get("monitoring", True) else " (no OPTIONS)")
        both = pair.get("mode") == "active-active"  # docs/design.md §2.2: "serving" = takes new calls
        state += " (active-active)" if both else ""
        for member in pair.get("members") or []:
            rtt = member.get("last_rtt_ms")
            rows.append(
                [
                    str(pair.get("name", "?")) if first else "",
                    state if first else "",
                    _when(pair.get("last_change"), now) if first else "",
                    str(counters.get("switchovers", 0)) if first else "",
                    str(member.get("address", "?")),
                    str(member.get("role", "?")),
                    " ".join(
                        mark
                        for mark, on in (
                            ("*", member.get("active")),
                            ("serving", both and member.get("serving")),
                            ("maint", member.get("maintenance")),
                        )
                        if on
                    ),
                    "-" if rtt is None else f"{rtt:.3f} ms",
                    str(member.get("transport_error") or ""),
                ]
            )
            first = False
        if pair.get("split_brain"):
            notes.append(
                f"split brain in pair {pair.get('name')} since {_when(pair.get('split_brain_since'), now)}: "
                f"both members act as primary; sipha keeps {pair.get('active')}"
            )
    if pairs:
        out += _table(rows)
    else:
        out.append("no pairs")
    certificate = (document.get("tls") or {}).get("certificate") or {}
    notes += [f"TLS: {line}" for line in [*certificate.get("problems", []), *certificate.get("warnings", [])]]
    if notes:
        out.append("")
        out += [f"! {note}" for note in notes]
    return "\n".join(out) + "\n"
