"""A simulated SIP server: one member of a primary/backup pair, for the HA tests and the demo.

It is a small RFC 3261 UAS built on the same layers as the proxy: sockets from
:class:`~sipha.net.TransportManager`, transactions from
:class:`~sipha.txn.TransactionLayer` (§17), and on top a UAS core that answers.

* **primary** mode: OPTIONS 200 (§11.2), INVITE 180 then 200 with SDP like
  SIPp's built-in ``uas`` scenario (§13.3.1), ACK, BYE 200 (§15.1.2), CANCEL
  200 and 487 to the INVITE (§9.2), anything else 200.  The UAS core
  retransmits its 2xx until the ACK arrives (§13.3.1.4).
* **backup** mode: silent (the request never reaches the transaction layer),
  or, with ``backup_answer``, every request is answered with that code
  (docs/design.md §2 allows both).
* ``drop``: in primary mode the first N requests of a method are dropped
  silently, retransmissions included (one unanswered request from an otherwise
  healthy server, for the HA tests); other methods (OPTIONS) are answered.
* :meth:`SimulatedServer.send_request` sends a request (OPTIONS by default)
  from the listening socket, so that a proxy sees the member's address as the
  source ("switch on a request from the backup", docs/design.md §2).

The mode is switched with :meth:`SimulatedServer.set_mode`; ``sipha
simulate-server`` maps SIGUSR1/SIGUSR2 to it and SIGHUP to ``send_request``,
and with ``--listen-delay`` binds its ports only some time after it started
(a member that comes up late: until then its ports are closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from sipha.net.manager import TransportManager
from sipha.sip import Request, Response, SipParseError, make_response, parse_message
from sipha.sip.address import Address, default_port
from sipha.txn import (
    AckReceived,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    ServerInviteTransaction,
    ServerTransaction,
    State,
    TimerConfig,
    TransactionKey,
    TransactionLayer,
    TransactionTimeout,
    TransportError,
    server_key,
)
from sipha.txn.events import Event

log = logging.getLogger("sipha.simulator")

Mode = Literal["primary", "backup"]
MODES: Final[tuple[Mode, ...]] = ("primary", "backup")
ALLOW: Final = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, INFO, NOTIFY"
DEFAULT_USER: Final = "sipha-sim"
_SUCCESS_MIN: Final = 200
_ERROR_MIN: Final = 300
_STATUS_MAX: Final = 699
_METHOD_RE: Final = re.compile(r"[A-Z][A-Z0-9_.!%*+`'~-]*")
"""A SIP method (RFC 3261 §25.1 ``token``), upper case, as ``drop`` names them."""
_REASONS: Final = {
    180: "Ringing",
    200: "OK",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    500: "Server Internal Error",
    503: "Service Unavailable",
}


def _token() -> str:
    return secrets.token_hex(8)


def _host_text(host: str) -> str:
    """``host`` as it appears in a URI or a Via (IPv6 references in brackets, RFC 3261 §25.1)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _sdp(host: str) -> bytes:
    """A minimal offer/answer body (RFC 4566), one PCMU audio stream, as SIPp's ``uas`` sends."""
    family = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o={DEFAULT_USER} 1 1 IN {family} {host}",
        "s=-",
        f"c=IN {family} {host}",
        "t=0 0",
        "m=audio 6000 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "",
    ]
    return "\r\n".join(lines).encode("ascii")


@dataclass
class SimulatorStats:
    """What the simulated server did since it started."""

    options_answered: int = 0
    """OPTIONS answered 200 (primary mode)."""
    invites_answered: int = 0
    """INVITEs answered 200 (primary mode; re-INVITEs included)."""
    calls_completed: int = 0
    """Dialogs this server answered that ended with a BYE it answered 200."""
    acks_received: int = 0
    """ACKs that acknowledged one of its 2xx (§13.3.1.4)."""
    byes_answered: int = 0
    cancels_answered: int = 0
    other_answered: int = 0
    """Other requests answered 200 (MESSAGE, REGISTER, INFO, ...)."""
    backup_answered: int = 0
    """Requests answered with ``backup_answer`` in backup mode."""
    ignored: int = 0
    """Requests dropped in silent backup mode."""
    invite_retransmissions: int = 0
    """INVITE retransmissions absorbed (the last response was sent again)."""
    ok_retransmissions: int = 0
    """2xx retransmissions while waiting for the ACK (§13.3.1.4)."""
    acks_missing: int = 0
    """2xx given up after 64*T1 without an ACK."""
    requests_sent: int = 0
    """Requests sent with :meth:`SimulatedServer.send_request`."""
    mode_changes: int = 0
    dropped: int = 0
    """Request datagrams dropped by ``drop`` (retransmissions of a dropped request included)."""


@dataclass
class _Dialog:
    """A UAS INVITE dialog, early or confirmed, keyed by (Call-ID, local tag) (§12)."""

    invite: ServerInviteTransaction
    tag: str
    cseq: int
    peer: Address
    ok: Response | None = None
    acked: bool = False
    answer_handle: asyncio.TimerHandle | None = None
    retransmit_handle: asyncio.TimerHandle | None = None
    interval: float = 0.0
    give_up_at: float = 0.0

    def cancel_timers(self) -> None:
        for handle in (self.answer_handle, self.retransmit_handle):
            if handle is not None:
                handle.cancel()
        self.answer_handle = self.retransmit_handle = None


@dataclass
class _Pending:
    """A request sent with ``send_request``, waiting for its final response."""

    future: asyncio.Future[int | None]
    destination: Address


ListenSpec = str | tuple[str, str, int]


def _listen_tuple(spec: ListenSpec) -> tuple[str, str, int]:
    if isinstance(spec, tuple):
        return spec
    from sipha.config import parse_address  # noqa: PLC0415 - pydantic only when strings are given

    parsed = parse_address(spec)
    return parsed.transport, parsed.host, parsed.port


class SimulatedServer:
    """One member of a simulated primary/backup SIP server pair (a UAS, RFC 3261 §8.2, §12-§15).

    ``listen``: ``"udp:127.0.0.1:5070"`` strings or ``(transport, host, port)``
    tuples (port 0: any free port, see :attr:`listen_addresses`).
    ``backup_answer``: None for a silent backup, else the 3xx-6xx code every
    request gets in backup mode.  ``answer_delay``: seconds between the 180 and
    the 200 of an INVITE (0: at once), so that a CANCEL can be tried.
    ``timers``: T1/T2 of the transactions and of the 2xx retransmissions.
    ``drop``: method -> N: in primary mode the first N requests of that method
    are dropped before the transaction layer (never answered), and so are their
    retransmissions (same transaction, §17.2.3; every ACK counts as a request).
    """

    def __init__(
        self,
        listen: Iterable[ListenSpec],
        mode: Mode = "primary",
        *,
        backup_answer: int | None = None,
        answer_delay: float = 0.0,
        timers: TimerConfig | None = None,
        user: str = DEFAULT_USER,
        drop: Mapping[str, int] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: primary or backup")
        if backup_answer is not None and not _ERROR_MIN <= backup_answer <= _STATUS_MAX:
            raise ValueError(f"backup_answer {backup_answer}: a final error code, 300-699")
        if answer_delay < 0:
            raise ValueError(f"answer_delay {answer_delay}: not negative")
        self.drop: dict[str, int] = {}
        """Method -> how many of its first requests are dropped (primary mode)."""
        for method, count in (drop or {}).items():
            name = method.upper()
            if not _METHOD_RE.fullmatch(name) or count < 1:
                raise ValueError(f"drop {method}:{count}: a method name and a count of at least 1")
            self.drop[name] = self.drop.get(name, 0) + count
        self._listen = [_listen_tuple(spec) for spec in listen]
        if not self._listen:
            raise ValueError("at least one listen address is needed")
        self._mode: Mode = mode
        self.backup_answer = backup_answer
        self.answer_delay = answer_delay
        self.user = user
        self.stats = SimulatorStats()
        # §17.2.1: "unless it knows that the TU will generate a provisional or final
        # response within 200 ms": this UAS sends its 180 at once, so no 100 (as SIPp's uas).
        self.txn = TransactionLayer(timers, auto_trying=False)
        self.transports = TransportManager(self._on_message, self._on_transport_error)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._dialogs: dict[tuple[str, str], _Dialog] = {}
        self._pending: dict[TransactionKey, _Pending] = {}
        self._bound: list[Address] = []
        self._drop_left = dict(self.drop)
        self._dropped_keys: set[TransactionKey] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def mode(self) -> Mode:
        """``"primary"`` (answering) or ``"backup"`` (silent, or ``backup_answer``)."""
        return self._mode

    def set_mode(self, mode: Mode) -> None:
        """Switch mode at run time; logs one line when the mode changes."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: primary or backup")
        if mode == self._mode:
            return
        log.info("simulated server %s: mode %s -> %s", self.name, self._mode, mode)
        self._mode = mode
        self.stats.mode_changes += 1

    @property
    def listen_addresses(self) -> list[Address]:
        """The bound addresses (ports as the kernel assigned them; kept after :meth:`stop`)."""
        return list(self._bound)

    @property
    def name(self) -> str:
        """The listen addresses as ``udp:127.0.0.1:5070, tcp:...``, for logs."""
        addresses = self.listen_addresses or [Address(t.upper(), h, p) for t, h, p in self._listen]
        return ", ".join(f"{a.transport.lower()}:{_host_text(a.host)}:{a.port}" for a in addresses)

    def address(self, transport: str = "UDP") -> Address:
        """The first listen address of ``transport``."""
        for address in self.listen_addresses:
            if address.transport == transport.upper():
                return address
        raise LookupError(f"not listening on {transport}")

    async def start(self) -> None:
        """Bind the listen addresses; raises OSError (in use) or ValueError (transport)."""
        self._loop = asyncio.get_running_loop()
        await self.transports.start(self._listen)
        self._bound = self.transports.listen_addresses
        log.info("simulated server listening on %s in %s mode", self.name, self._mode)

    async def stop(self) -> None:
        """Stop timers, fail pending ``send_request`` calls, close the sockets."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        for dialog in self._dialogs.values():
            dialog.cancel_timers()
        self._dialogs.clear()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_result(None)
        self._pending.clear()
        await self.transports.stop()

    async def __aenter__(self) -> SimulatedServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _now(self) -> float:
        assert self._loop is not None  # noqa: S101 - set in start()
        return self._loop.time()

    # ------------------------------------------------------------------ UAC side

    async def send_request(
        self,
        proxy: Address,
        method: str = "OPTIONS",
        uri: str | None = None,
        *,
        timeout: float | None = None,
    ) -> int | None:
        """Send one out-of-dialog request to ``proxy`` and return its final status, or None.

        The request is a fresh one (§8.1.1: new Call-ID, From tag, branch; Max-Forwards
        70), sent from the listening socket of ``proxy.transport`` with that address in
        Via and Contact, so a proxy sees this member as its source (UDP: source port;
        TCP: Via sent-by port).  None after ``timeout`` seconds (default 64*T1, Timer F)
        or on a transport error.  Only non-INVITE methods: an INVITE would need a dialog.
        """
        method = method.upper()
        if method in ("INVITE", "ACK", "CANCEL"):
            raise ValueError(f"send_request sends non-INVITE requests, not {method}")
        transport = proxy.transport.upper()
        local = self.address(transport)
        here = f"{_host_text(local.host)}:{local.port}"
        param = "" if transport == "UDP" else f";transport={transport.lower()}"
        target = uri or f"sip:probe@{_host_text(proxy.host)}:{proxy.port}{param}"
        request = Request.build(
            method,
            target,
            [
                # §8.1.1.7: the branch starts with the magic cookie; RFC 3581: ask for rport.
                ("Via", f"SIP/2.0/{transport} {here};branch=z9hG4bK{_token()};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:{self.user}@{here}>;tag={_token()}"),
                ("To", f"<{target}>"),
                ("Call-ID", f"{_token()}@{_host_text(local.host)}"),
                ("CSeq", f"1 {method}"),
                ("Contact", f"<sip:{self.user}@{here}{param}>"),
                ("User-Agent", "sipha-simulator"),
            ],
        )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int | None] = loop.create_future()
        transaction = self.txn.send_request(request, proxy, self._now())
        self._pending[transaction.key] = _Pending(future, proxy)
        self.stats.requests_sent += 1
        self._flush()
        wait = self.txn.config.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.shield(future), wait)
        except TimeoutError:
            return None
        finally:
            self._pending.pop(transaction.key, None)

    # ------------------------------------------------------------------ transport callbacks

    def _on_message(self, data: bytes, source: Address, local: Address) -> None:
        try:
            message = parse_message(data, stream=source.reliable)
            message.validate()
        except SipParseError as error:
            self._refuse_malformed(error, source)
            self._flush()
            return
        now = self._now()
        if isinstance(message, Response):
            # Responses to send_request are read in every mode: a backup sends requests too.
            self.txn.receive_response(message, now)
        else:
            self._receive_request(message, source, local, now)
        self._flush()

    def _on_transport_error(self, destination: Address, error: OSError | str) -> None:
        log.debug("transport error towards %s: %s", destination, error)
        now = self._now()
        for key, pending in list(self._pending.items()):
            if pending.destination == destination:
                self.txn.transport_error(key, now)
        self._flush()

    def _refuse_malformed(self, error: SipParseError, source: Address) -> None:
        partial = error.message
        log.debug("malformed message from %s: %s", source, error.detail)
        if self._mode == "backup" and self.backup_answer is None:
            return
        if isinstance(partial, Request) and partial.method != "ACK" and partial.get("via"):
            # §8.2.6.1 / §21.4.1: answer what can be answered, statelessly; never a response.
            response = make_response(partial, error.status, error.reason, to_tag=_token())
            self.txn.send_stateless(response, source)

    def _receive_request(self, request: Request, source: Address, local: Address, now: float) -> None:
        if self._mode == "backup" and self.backup_answer is None:
            # A SIP server in backup mode does not answer (docs/design.md §2): the request
            # never reaches the transaction layer, so no transaction waits on the TU.
            self.stats.ignored += 1
            return
        del local
        if self.drop and self._mode == "primary" and self._drops(request):
            return
        peer = _response_peer(request, source)
        existing = None if request.method == "ACK" else self.txn.get(server_key(request))
        transaction = self.txn.receive_request(request, peer, now)
        if isinstance(existing, ServerInviteTransaction) and existing is transaction:
            # §17.2.1 resends the last provisional in Proceeding and the final response in
            # Completed.  In Accepted (RFC 6026) the transaction absorbs the retransmission
            # and leaves the 2xx to the UAS core (§13.3.1.4), which resends it at once.
            self.stats.invite_retransmissions += 1
            if existing.state is State.ACCEPTED:
                dialog = self._dialogs.get((request.call_id, _sent_tag(existing) or ""))
                if dialog is not None and dialog.ok is not None and not dialog.acked:
                    self.txn.respond(existing, dialog.ok, now)

    def _drops(self, request: Request) -> bool:
        """``drop``: whether ``request`` vanishes (one of the first N of its method, or a retransmission).

        Logs one line per dropped datagram.  A retransmission is a request of the same
        server transaction (§17.2.3); an ACK never is one (each ACK counts on its own).
        """
        method = request.method
        key = None if method == "ACK" else server_key(request)
        if key is not None and key in self._dropped_keys:
            self.stats.dropped += 1
            log.info("dropping a retransmission of %s (Call-ID %s): not answered", method, request.call_id)
            return True
        left = self._drop_left.get(method, 0)
        if left <= 0:
            return False
        self._drop_left[method] = left - 1
        if key is not None:
            self._dropped_keys.add(key)
        self.stats.dropped += 1
        total = self.drop[method]
        log.info(
            "dropping %s %d of %d (Call-ID %s): not answered",
            method,
            total - left + 1,
            total,
            request.call_id,
        )
        return True

    # ------------------------------------------------------------------ events from the transaction layer

    def _on_event(self, event: Event) -> None:
        now = self._now()
        if isinstance(event, RequestReceived):
            self._on_request(event.transaction, event.request, now)
        elif isinstance(event, AckReceived):
            self._on_ack(event.request)
        elif isinstance(event, ResponseReceived):
            pending = self._pending.get(event.transaction.key)
            status = event.response.status
            if pending is not None and not pending.future.done() and status >= _SUCCESS_MIN:
                pending.future.set_result(status)
        elif isinstance(event, TransactionTimeout | TransportError):
            # §17.1.2.2 Timer F / §17.1.4: the request failed; §17.2.1 Timer H: no ACK.
            pending = self._pending.get(event.transaction.key)
            if pending is not None and not pending.future.done():
                pending.future.set_result(None)

    def _on_request(self, transaction: ServerTransaction, request: Request, now: float) -> None:
        method = request.method
        if self._mode == "backup":
            assert self.backup_answer is not None  # noqa: S101 - silent backups drop earlier
            code = self.backup_answer
            self.stats.backup_answered += 1
            self._respond(transaction, make_response(request, code, _reason(code), to_tag=_token()), now)
            return
        # §8.2.2.3: Require is ignored on CANCEL (and an ACK never comes here).
        unsupported = request.require if method != "CANCEL" else []
        if unsupported:
            # §8.2.2.3: no extension is supported; 420 lists the ones required.
            response = make_response(
                request,
                420,
                "Bad Extension",
                to_tag=_token(),
                headers=[("Unsupported", ", ".join(unsupported))],
            )
            self._respond(transaction, response, now)
            return
        if isinstance(transaction, ServerInviteTransaction):
            self._on_invite(transaction, request, now)
            return
        tag = _token()
        headers: list[tuple[str, str]] = []
        if method == "OPTIONS":
            # §11.2: a 200 to OPTIONS lists the capabilities; no body here, Content-Length 0.
            headers = [("Allow", ALLOW), ("Accept", "application/sdp"), ("Accept-Language", "en")]
            self.stats.options_answered += 1
        elif method == "BYE":
            self._on_bye(request)
        elif method == "CANCEL":
            if not self._on_cancel(request, now):
                # §9.2: "If the UAS did not find a matching transaction for the CANCEL
                # according to the procedure above, it SHOULD respond to the CANCEL with a 481".
                self._respond(transaction, make_response(request, 481, _reason(481), to_tag=tag), now)
                return
        elif method == "REGISTER":
            # §10.3 step 8: the 200 returns the bindings; this one echoes what was sent.
            headers = [("Contact", value) for value in request.get_all("contact")]
            self.stats.other_answered += 1
        else:
            self.stats.other_answered += 1
        self._respond(transaction, make_response(request, 200, "OK", to_tag=tag, headers=headers), now)

    def _on_invite(self, transaction: ServerInviteTransaction, request: Request, now: float) -> None:
        tag = request.to.tag
        initial = tag is None
        tag = tag or _token()
        dialog = _Dialog(transaction, tag, request.cseq.seq, transaction.peer)
        old = self._dialogs.get((request.call_id, tag))
        if old is not None:
            old.cancel_timers()  # a re-INVITE (§14.2) supersedes what was pending
        self._dialogs[(request.call_id, tag)] = dialog
        if initial:
            # §13.3.1.1: a provisional response; with its To tag and Contact it creates
            # an early dialog (§12.1.1), so it carries the Record-Route too.
            self._respond(transaction, self._dialog_response(request, 180, tag, transaction.peer), now)
        if self.answer_delay > 0:
            assert self._loop is not None  # noqa: S101 - running
            dialog.answer_handle = self._loop.call_later(
                self.answer_delay, self._answer_later, dialog, request
            )
        else:
            self._answer(dialog, request, now)

    def _answer_later(self, dialog: _Dialog, request: Request) -> None:
        dialog.answer_handle = None
        self._answer(dialog, request, self._now())
        self._flush()

    def _answer(self, dialog: _Dialog, request: Request, now: float) -> None:
        """§13.3.1.4: accept the INVITE with a 2xx carrying an SDP answer, then await the ACK."""
        if dialog.invite.state is not State.PROCEEDING:
            return  # cancelled (487 sent) or the transaction is gone
        ok = self._dialog_response(request, 200, dialog.tag, dialog.peer, sdp=True)
        dialog.ok = ok
        self._respond(dialog.invite, ok, now)
        self.stats.invites_answered += 1
        # §13.3.1.4: "The 2xx response is passed to the transport with an interval that
        # starts at T1 seconds and doubles for each retransmission until it reaches T2
        # seconds.  Response retransmissions cease when an ACK request for the response is
        # received" - on every transport, since the 2xx is retransmitted end to end.
        config = self.txn.config
        dialog.interval = config.t1
        dialog.give_up_at = now + config.timeout
        assert self._loop is not None  # noqa: S101 - running
        dialog.retransmit_handle = self._loop.call_later(dialog.interval, self._retransmit_ok, dialog)

    def _retransmit_ok(self, dialog: _Dialog) -> None:
        dialog.retransmit_handle = None
        if dialog.acked or dialog.ok is None:
            return
        now = self._now()
        key = (dialog.ok.call_id, dialog.tag)
        if now >= dialog.give_up_at:
            # §13.3.1.4: "If the server retransmits the 2xx response for 64*T1 seconds
            # without receiving an ACK, the dialog is confirmed, but the session SHOULD be
            # terminated" - the simulator forgets the dialog (it sends no BYE).
            self.stats.acks_missing += 1
            log.info("no ACK for the 200 to INVITE %s after 64*T1", dialog.ok.call_id)
            if self._dialogs.get(key) is dialog:
                del self._dialogs[key]
            return
        if not self.txn.respond(dialog.invite, dialog.ok, now):
            self.txn.send_stateless(dialog.ok, dialog.peer)  # transaction gone: send it anyway
        self.stats.ok_retransmissions += 1
        dialog.interval = min(2 * dialog.interval, self.txn.config.t2)
        assert self._loop is not None  # noqa: S101 - running
        dialog.retransmit_handle = self._loop.call_later(dialog.interval, self._retransmit_ok, dialog)
        self._flush()

    def _on_ack(self, ack: Request) -> None:
        """§13.3.1.4 / §17: the ACK of a 2xx reaches the UAS core; it stops the retransmissions."""
        tag = ack.to.tag
        dialog = None if tag is None else self._dialogs.get((ack.call_id, tag))
        if dialog is None or dialog.acked or dialog.ok is None or ack.cseq.seq != dialog.cseq:
            return
        dialog.acked = True
        dialog.cancel_timers()
        self.stats.acks_received += 1

    def _on_bye(self, bye: Request) -> None:
        """§15.1.2: the session ends; the 200 is sent by the caller.

        A BYE for a dialog this server does not know is answered 200 as well (not 481):
        a real pair shares its call state, so the new primary accepts the BYE of a call
        set up by the old one.
        """
        self.stats.byes_answered += 1
        tag = bye.to.tag
        dialog = None if tag is None else self._dialogs.pop((bye.call_id, tag), None)
        if dialog is not None:
            dialog.cancel_timers()
            if dialog.ok is not None:
                self.stats.calls_completed += 1

    def _on_cancel(self, cancel: Request, now: float) -> bool:
        """§9.2: answer the CANCEL 200 and, if the INVITE is still unanswered, 487 it."""
        target = self.txn.find_cancel_target(cancel)
        if target is None:
            return False
        self.stats.cancels_answered += 1
        if target.state is State.PROCEEDING:
            # "the UAS core ... SHOULD respond to the INVITE with a 487"; the To tag is the
            # one of the 180, so that the early dialog ends (§12.3 / §13.2.2.3).
            tag = _sent_tag(target) or _token()
            dialog = self._dialogs.pop((target.request.call_id, tag), None)
            if dialog is not None:
                dialog.cancel_timers()
            self._respond(target, make_response(target.request, 487, _reason(487), to_tag=tag), now)
        return True

    # ------------------------------------------------------------------ responses

    def _dialog_response(
        self, request: Request, status: int, tag: str, peer: Address, *, sdp: bool = False
    ) -> Response:
        """A dialog-creating response: To tag, Contact, Record-Route copied (§12.1.1)."""
        local = self._local_for(peer.transport)
        here = f"{_host_text(local.host)}:{local.port}"
        param = "" if local.transport == "UDP" else f";transport={local.transport.lower()}"
        # §12.1.1: "The UAS MUST copy all Record-Route header field values from the request
        # into the response (including the URIs, URI parameters, and any Record-Route header
        # field parameters, whether they are known or unknown to the UAS) and MUST maintain
        # the order of those values."  §8.1.1.8 / §12.1.1: a Contact with a SIP URI.
        headers = [("Record-Route", value) for value in request.get_all("record-route")]
        headers.append(("Contact", f"<sip:{self.user}@{here}{param}>"))
        if status >= _SUCCESS_MIN:
            headers.append(("Allow", ALLOW))
        response = make_response(request, status, _reason(status), to_tag=tag, headers=headers)
        if sdp:
            response.set_body(_sdp(local.host), "application/sdp")
        return response

    def _local_for(self, transport: str) -> Address:
        try:
            return self.address(transport)
        except LookupError:
            return self.listen_addresses[0]

    def _respond(self, transaction: ServerTransaction, response: Response, now: float) -> None:
        self.txn.respond(transaction, response, now)

    # ------------------------------------------------------------------ output and timers

    def _flush(self) -> None:
        """Send what the transaction layer produced, run the TU on its events, re-arm the timer."""
        txn = self.txn
        transports = self.transports
        while True:
            outputs = txn.drain()
            if not outputs:
                break
            for output in outputs:
                if isinstance(output, SendMessage):
                    transports.send(output.message.to_bytes(), output.destination)
                else:
                    self._on_event(output)
        deadline = txn.next_deadline()
        if deadline is None or self._loop is None:
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return  # the armed timer fires first and re-arms for the rest
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self.txn.handle_timers(self._now())
        self._flush()


def _sent_tag(transaction: ServerTransaction) -> str | None:
    """The To tag of the last response ``transaction`` sent, if any."""
    response = transaction.last_response
    return None if response is None else response.to.tag


def _reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def _response_peer(request: Request, source: Address) -> Address:
    """Where the responses to ``request`` go (RFC 3261 §18.2.2, RFC 3581 §4).

    Reliable transports: back over the connection (``source``).  UDP: the source IP
    (the ``received`` address, §18.2.1) and, with ``rport``, the source port, else
    the sent-by port or 5060.  ``maddr`` (multicast) is not supported.
    """
    if source.reliable:
        return source
    via = request.top_via
    if via.rport is not None:
        return source
    return Address(source.transport, source.host, via.port or default_port(source.transport))


# ---------------------------------------------------------------------------- command line


def install_signals(server: SimulatedServer, proxy: Address | None, stop: asyncio.Event) -> None:
    """SIGUSR1: primary; SIGUSR2: backup; SIGHUP: one request to ``proxy``; SIGTERM/SIGINT: stop."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def probe() -> None:
        if proxy is None:
            log.warning("SIGHUP: no --proxy to send a request to")
            return
        if not server.listen_addresses:
            log.warning("SIGHUP: not listening yet, no request sent")
            return
        status = await server.send_request(proxy)
        where = f"{proxy.transport.lower()}:{_host_text(proxy.host)}:{proxy.port}"
        log.info("OPTIONS to %s: %s", where, "no answer" if status is None else status)

    def on_hup() -> None:
        task = loop.create_task(probe())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGUSR1, server.set_mode, "primary")
    loop.add_signal_handler(signal.SIGUSR2, server.set_mode, "backup")
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def serve(server: SimulatedServer, proxy: Address | None = None, *, listen_delay: float = 0.0) -> None:
    """Run ``server`` until SIGTERM or SIGINT, with the mode and probe signals installed.

    ``listen_delay``: seconds to wait before binding the listen addresses (a member
    that comes up late: until then nothing listens on its ports, so a UDP peer gets
    ICMP port unreachable and a TCP peer a refused connection).  The signals work
    meanwhile (a mode set then holds from the start).
    """
    if listen_delay < 0:
        raise ValueError(f"listen_delay {listen_delay}: not negative")
    stop = asyncio.Event()
    install_signals(server, proxy, stop)
    try:
        if listen_delay > 0:
            log.info("simulated server %s: listening in %.3f s", server.name, listen_delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), listen_delay)
        if not stop.is_set():
            await server.start()
            await stop.wait()
        log.info("simulated server %s stopping", server.name)
    finally:
        for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, ValueError, RuntimeError):
                asyncio.get_running_loop().remove_signal_handler(signum)
        await server.stop()


def drop_counts(specs: Iterable[str]) -> dict[str, int]:
    """``--drop METHOD[:N]`` values as method -> N (N defaults to 1; a method given twice adds up).

    Raises ValueError naming the value that is not ``METHOD`` or ``METHOD:N`` with N >= 1.
    """
    counts: dict[str, int] = {}
    for spec in specs:
        method, colon, count_text = spec.partition(":")
        method = method.strip().upper()
        count_text = count_text.strip()
        valid = bool(_METHOD_RE.fullmatch(method)) and (
            not colon or (count_text.isascii() and count_text.isdigit() and int(count_text) >= 1)
        )
        if not valid:
            raise ValueError(f"--drop {spec!r}: METHOD or METHOD:N with N >= 1 (e.g. INVITE:2)")
        counts[method] = counts.get(method, 0) + (int(count_text) if colon else 1)
    return counts
