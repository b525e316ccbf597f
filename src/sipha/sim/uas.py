"""The simulated SIP server's sans-IO side: a transaction layer (§17) and a UAS core on top.

:class:`SimulatedUas` is an endpoint of :class:`sipha.net.driver.Driver`, as the
proxy core is: bytes and ``now`` in, messages to send and one next deadline out.
Its own timers (the 200 of an INVITE after ``answer_delay``, the 2xx
retransmissions of §13.3.1.4) are deadlines like the transactions', fired by
:meth:`SimulatedUas.handle_timers`.  What it does in each mode is described in
:mod:`sipha.sim.server`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

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
METHOD_RE: Final = re.compile(r"[A-Z][A-Z0-9_.!%*+`'~-]*")
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

OnOutcome = Callable[[TransactionKey, "int | None"], None]
"""(a request sent with :meth:`SimulatedUas.send_request`, its final status or None)."""


def token() -> str:
    """A random tag, branch or Call-ID part."""
    return secrets.token_hex(8)


def host_text(host: str) -> str:
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
    """Requests sent with :meth:`SimulatedUas.send_request`."""
    mode_changes: int = 0
    dropped: int = 0
    """Request datagrams dropped by ``drop`` (retransmissions of a dropped request included)."""


@dataclass
class _Dialog:
    """A UAS INVITE dialog, early or confirmed, keyed by (Call-ID, local tag) (§12)."""

    invite: ServerInviteTransaction
    request: Request
    tag: str
    cseq: int
    peer: Address
    ok: Response | None = None
    acked: bool = False
    answer_at: float | None = None
    """When the 200 is sent (``answer_delay`` after the 180), None once sent or given up."""
    retransmit_at: float | None = None
    """When the 2xx is sent again (§13.3.1.4), None once acknowledged or given up."""
    interval: float = 0.0
    give_up_at: float = 0.0

    def cancel_timers(self) -> None:
        self.answer_at = self.retransmit_at = None


class SimulatedUas:
    """One member of a simulated primary/backup pair, sans-IO (a UAS, RFC 3261 §8.2, §12-§15).

    The settings are :class:`sipha.sim.server.SimulatedServer`'s.  ``addresses``: the
    bound listen addresses (Contact, SDP, the requests it sends), set once they are.
    """

    def __init__(
        self,
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
            if not METHOD_RE.fullmatch(name) or count < 1:
                raise ValueError(f"drop {method}:{count}: a method name and a count of at least 1")
            self.drop[name] = self.drop.get(name, 0) + count
        self.mode: Mode = mode
        self.backup_answer = backup_answer
        self.answer_delay = answer_delay
        self.user = user
        self.stats = SimulatorStats()
        self.addresses: list[Address] = []
        self.on_outcome: OnOutcome | None = None
        """Called with the final status (None: timeout, transport error) of each request sent."""
        # §17.2.1: "unless it knows that the TU will generate a provisional or final
        # response within 200 ms": this UAS sends its 180 at once, so no 100 (as SIPp's uas).
        self.txn = TransactionLayer(timers, auto_trying=False)
        self._dialogs: dict[tuple[str, str], _Dialog] = {}
        self._requests: dict[TransactionKey, Address] = {}
        """Requests sent with :meth:`send_request` and not forgotten yet: their destination."""
        self._out: list[SendMessage] = []
        self._timers: list[tuple[float, int, _Dialog, str]] = []
        """(deadline, tie-breaker, dialog, the dialog's attribute holding it), a heap."""
        self._sequence = itertools.count()
        self._drop_left = dict(self.drop)
        self._dropped_keys: set[TransactionKey] = set()

    def address(self, transport: str = "UDP") -> Address:
        """The first listen address of ``transport``."""
        for address in self.addresses:
            if address.transport == transport.upper():
                return address
        raise LookupError(f"not listening on {transport}")

    def reset(self) -> None:
        """Forget every dialog and its timers (the server stops)."""
        self._dialogs.clear()
        self._timers.clear()
        self._requests.clear()
        self._out.clear()

    # ------------------------------------------------------------------ the driver's inputs and outputs

    def receive(self, data: bytes, source: Address, now: float, *, stream: bool = False) -> None:
        """One message from ``source``: a datagram, or a message framed on a connection."""
        try:
            message = parse_message(data, stream=stream)
            message.validate()
        except SipParseError as error:
            self._refuse_malformed(error, source)
        else:
            if isinstance(message, Response):
                # Responses to send_request are read in every mode: a backup sends requests too.
                self.txn.receive_response(message, now)
            else:
                self._receive_request(message, source, now)
        self._run(now)

    def transport_error(self, destination: Address, now: float) -> None:
        """§17.1.4: the requests sent to ``destination`` failed."""
        log.debug("transport error towards %s", destination)
        for key, sent_to in list(self._requests.items()):
            if sent_to == destination:
                self.txn.transport_error(key, now)
        self._run(now)

    def handle_timers(self, now: float) -> None:
        """The transactions' timers, then the 200s and 2xx retransmissions due."""
        self.txn.handle_timers(now)
        self._run(now)
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, dialog, kind = heapq.heappop(timers)
            if getattr(dialog, kind) != deadline:
                continue  # cancelled or re-armed since: a stale entry
            setattr(dialog, kind, None)
            if kind == "answer_at":
                self._answer(dialog, now)
            else:
                self._retransmit_ok(dialog, now)
        self._run(now)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timers` must be called next, or None."""
        timers = self._timers
        while timers and getattr(timers[0][2], timers[0][3]) != timers[0][0]:
            heapq.heappop(timers)  # stale
        deadline = timers[0][0] if timers else None
        other = self.txn.next_deadline()
        if other is not None and (deadline is None or other < deadline):
            deadline = other
        return deadline

    def drain(self) -> list[SendMessage]:
        """The messages to send, in order."""
        out, self._out = self._out, []
        return out

    def _run(self, now: float) -> None:
        """The UAS core on the transactions' events, until they are all handled; sends are kept."""
        txn = self.txn
        while True:
            outputs = txn.drain()
            if not outputs:
                return
            for output in outputs:
                if isinstance(output, SendMessage):
                    self._out.append(output)
                else:
                    self._on_event(output, now)

    # ------------------------------------------------------------------ UAC side

    def send_request(
        self, proxy: Address, method: str, uri: str | None, now: float, *, route: str | None = None
    ) -> TransactionKey:
        """Send one out-of-dialog request to ``proxy``; its outcome goes to :attr:`on_outcome`.

        The request is a fresh one (§8.1.1: new Call-ID, From tag, branch; Max-Forwards
        70), with the listen address of ``proxy.transport`` in Via and Contact, so a proxy
        sees this member as its source (UDP: source port; TCP: Via sent-by port).
        ``route``: a Route value (the outbound proxy's URI, §8.1.2).
        LookupError when not listening on that transport.
        """
        transport = proxy.transport.upper()
        local = self.address(transport)
        here = f"{host_text(local.host)}:{local.port}"
        param = "" if transport == "UDP" else f";transport={transport.lower()}"
        target = uri or f"sip:probe@{host_text(proxy.host)}:{proxy.port}{param}"
        request = Request.build(
            method,
            target,
            [
                # §8.1.1.7: the branch starts with the magic cookie; RFC 3581: ask for rport.
                ("Via", f"SIP/2.0/{transport} {here};branch=z9hG4bK{token()};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:{self.user}@{here}>;tag={token()}"),
                ("To", f"<{target}>"),
                ("Call-ID", f"{token()}@{host_text(local.host)}"),
                ("CSeq", f"1 {method}"),
                ("Contact", f"<sip:{self.user}@{here}{param}>"),
                ("User-Agent", "sipha-simulator"),
                *([("Route", f"<{route}>")] if route else []),
            ],
        )
        transaction = self.txn.send_request(request, proxy, now)
        self._requests[transaction.key] = proxy
        self.stats.requests_sent += 1
        self._run(now)
        return transaction.key

    def forget_request(self, key: TransactionKey) -> None:
        """The caller no longer waits for the request ``key``."""
        self._requests.pop(key, None)

    def _outcome(self, key: TransactionKey, status: int | None) -> None:
        if key in self._requests and self.on_outcome is not None:
            self.on_outcome(key, status)

    # ------------------------------------------------------------------ requests received

    def _refuse_malformed(self, error: SipParseError, source: Address) -> None:
        partial = error.message
        log.debug("malformed message from %s: %s", source, error.detail)
        if self.mode == "backup" and self.backup_answer is None:
            return
        if isinstance(partial, Request) and partial.method != "ACK" and partial.get("via"):
            # §8.2.6.1 / §21.4.1: answer what can be answered, statelessly; never a response.
            response = make_response(partial, error.status, error.reason, to_tag=token())
            self.txn.send_stateless(response, source)

    def _receive_request(self, request: Request, source: Address, now: float) -> None:
        if self.mode == "backup" and self.backup_answer is None:
            # A SIP server in backup mode does not answer (docs/design.md §2): the request
            # never reaches the transaction layer, so no transaction waits on the TU.
            self.stats.ignored += 1
            return
        if self.drop and self.mode == "primary" and self._drops(request):
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

    def _on_event(self, event: Event, now: float) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event.transaction, event.request, now)
        elif isinstance(event, AckReceived):
            self._on_ack(event.request)
        elif isinstance(event, ResponseReceived):
            status = event.response.status
            if status >= _SUCCESS_MIN:
                self._outcome(event.transaction.key, status)
        elif isinstance(event, TransactionTimeout | TransportError):
            # §17.1.2.2 Timer F / §17.1.4: the request failed; §17.2.1 Timer H: no ACK.
            self._outcome(event.transaction.key, None)

    def _on_request(self, transaction: ServerTransaction, request: Request, now: float) -> None:
        method = request.method
        if self.mode == "backup":
            assert self.backup_answer is not None  # noqa: S101 - silent backups drop earlier
            code = self.backup_answer
            self.stats.backup_answered += 1
            self.txn.respond(transaction, make_response(request, code, _reason(code), to_tag=token()), now)
            return
        # §8.2.2.3: Require is ignored on CANCEL (and an ACK never comes here).
        unsupported = request.require if method != "CANCEL" else []
        if unsupported:
            # §8.2.2.3: no extension is supported; 420 lists the ones required.
            response = make_response(
                request,
                420,
                "Bad Extension",
                to_tag=token(),
                headers=[("Unsupported", ", ".join(unsupported))],
            )
            self.txn.respond(transaction, response, now)
            return
        if isinstance(transaction, ServerInviteTransaction):
            self._on_invite(transaction, request, now)
            return
        tag = token()
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
                self.txn.respond(transaction, make_response(request, 481, _reason(481), to_tag=tag), now)
                return
        elif method == "REGISTER":
            # §10.3 step 8: the 200 returns the bindings; this one echoes what was sent.
            headers = [("Contact", value) for value in request.get_all("contact")]
            self.stats.other_answered += 1
        else:
            self.stats.other_answered += 1
        self.txn.respond(transaction, make_response(request, 200, "OK", to_tag=tag, headers=headers), now)

    def _on_invite(self, transaction: ServerInviteTransaction, request: Request, now: float) -> None:
        tag = request.to.tag
        initial = tag is None
        tag = tag or token()
        dialog = _Dialog(transaction, request, tag, request.cseq.seq, transaction.peer)
        old = self._dialogs.get((request.call_id, tag))
        if old is not None:
            old.cancel_timers()  # a re-INVITE (§14.2) supersedes what was pending
        self._dialogs[(request.call_id, tag)] = dialog
        if initial:
            # §13.3.1.1: a provisional response; with its To tag and Contact it creates
            # an early dialog (§12.1.1), so it carries the Record-Route too.
            self.txn.respond(transaction, self._dialog_response(request, 180, tag, transaction.peer), now)
        if self.answer_delay > 0:
            self._arm(dialog, "answer_at", now + self.answer_delay)
        else:
            self._answer(dialog, now)

    def _answer(self, dialog: _Dialog, now: float) -> None:
        """§13.3.1.4: accept the INVITE with a 2xx carrying an SDP answer, then await the ACK."""
        if dialog.invite.state is not State.PROCEEDING:
            return  # cancelled (487 sent) or the transaction is gone
        ok = self._dialog_response(dialog.request, 200, dialog.tag, dialog.peer, sdp=True)
        dialog.ok = ok
        self.txn.respond(dialog.invite, ok, now)
        self.stats.invites_answered += 1
        # §13.3.1.4: "The 2xx response is passed to the transport with an interval that
        # starts at T1 seconds and doubles for each retransmission until it reaches T2
        # seconds.  Response retransmissions cease when an ACK request for the response is
        # received" - on every transport, since the 2xx is retransmitted end to end.
        config = self.txn.config
        dialog.interval = config.t1
        dialog.give_up_at = now + config.timeout
        self._arm(dialog, "retransmit_at", now + dialog.interval)

    def _retransmit_ok(self, dialog: _Dialog, now: float) -> None:
        if dialog.acked or dialog.ok is None:
            return
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
        self._arm(dialog, "retransmit_at", now + dialog.interval)

    def _arm(self, dialog: _Dialog, kind: str, deadline: float) -> None:
        setattr(dialog, kind, deadline)
        heapq.heappush(self._timers, (deadline, next(self._sequence), dialog, kind))

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
        invite = target.request  # kept in Proceeding: no final response yet
        if target.state is State.PROCEEDING and invite is not None:
            # "the UAS core ... SHOULD respond to the INVITE with a 487"; the To tag is the
            # one of the 180, so that the early dialog ends (§12.3 / §13.2.2.3).
            tag = _sent_tag(target) or token()
            dialog = self._dialogs.pop((invite.call_id, tag), None)
            if dialog is not None:
                dialog.cancel_timers()
            self.txn.respond(target, make_response(invite, 487, _reason(487), to_tag=tag), now)
        return True

    # ------------------------------------------------------------------ responses

    def _dialog_response(
        self, request: Request, status: int, tag: str, peer: Address, *, sdp: bool = False
    ) -> Response:
        """A dialog-creating response: To tag, Contact, Record-Route copied (§12.1.1)."""
        local = self._local_for(peer.transport)
        here = f"{host_text(local.host)}:{local.port}"
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
            return self.addresses[0]


def _sent_tag(transaction: ServerTransaction) -> str | None:
    """The To tag of the last response ``transaction`` sent, if any (Accepted keeps only the 2xx's tag)."""
    response = transaction.last_response
    return transaction.final_to_tag if response is None else response.to.tag


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
