"""Message factories and output helpers shared by the sipha.txn tests."""

from __future__ import annotations

from typing import TypeVar

from sipha.sip import Request, Response, make_response, parse_message
from sipha.sip.address import Address
from sipha.txn import Output, SendMessage, State, Transaction

UDP_PEER = Address("UDP", "192.0.2.10", 5060)
TCP_PEER = Address("TCP", "192.0.2.10", 5060)
UPSTREAM_UDP = Address("UDP", "198.51.100.7", 5060)
UPSTREAM_TCP = Address("TCP", "198.51.100.7", 5060)

_O = TypeVar("_O")


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bK-client-1",
    via_host: str = "client.example.com",
    via_port: int | None = 5060,
    transport: str = "UDP",
    uri: str = "sip:bob@example.com",
    to_tag: str | None = None,
    from_tag: str = "alice-tag",
    call_id: str = "call-1@client.example.com",
    cseq: int = 1,
    cseq_method: str | None = None,
    routes: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> Request:
    """A request parsed from wire text, as the transport would hand it over."""
    sent_by = via_host if via_port is None else f"{via_host}:{via_port}"
    via = f"Via: SIP/2.0/{transport} {sent_by}" + ("" if branch is None else f";branch={branch}")
    to = "To: Bob <sip:bob@example.com>" + ("" if to_tag is None else f";tag={to_tag}")
    lines = [
        f"{method} {uri} SIP/2.0",
        via,
        "Via: SIP/2.0/UDP downstream.example.net;branch=z9hG4bK-second",
        "Max-Forwards: 69",
        *[f"Route: {route}" for route in routes],
        to,
        f"From: Alice <sip:alice@example.com>;tag={from_tag}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:alice@client.example.com>",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Request)
    return message


def ack_for(invite: Request, final: Response, *, branch: str | None = None) -> Request:
    """The ACK an RFC 3261 UAC sends for a non-2xx final response (same branch unless given)."""
    via = invite.top_via
    to_tag = final.to.tag
    return request(
        "ACK",
        branch=via.branch if branch is None else branch,
        via_host=via.host,
        via_port=via.port,
        transport=via.transport,
        uri=invite.uri,
        to_tag=to_tag,
        from_tag=invite.from_.tag or "",
        call_id=invite.call_id,
        cseq=invite.cseq.seq,
    )


def cancel_for(invite: Request) -> Request:
    """The CANCEL of ``invite`` (§9.1: same Request-URI, Call-ID, To, From, CSeq number, top Via)."""
    via = invite.top_via
    return request(
        "CANCEL",
        branch=via.branch,
        via_host=via.host,
        via_port=via.port,
        transport=via.transport,
        uri=invite.uri,
        to_tag=invite.to.tag,
        from_tag=invite.from_.tag or "",
        call_id=invite.call_id,
        cseq=invite.cseq.seq,
    )


def response(req: Request, status: int, *, to_tag: str | None = "bob-tag") -> Response:
    """A response to ``req``; 100 never carries a To tag."""
    reason = {100: "Trying", 180: "Ringing", 200: "OK", 486: "Busy Here"}.get(status, "Whatever")
    return make_response(req, status, reason, to_tag=None if status == 100 else to_tag)


def of_type(outputs: list[Output], kind: type[_O]) -> list[_O]:
    """The outputs of one type, in order."""
    return [output for output in outputs if isinstance(output, kind)]


def sent(outputs: list[Output]) -> list[SendMessage]:
    """The SendMessage actions, in order."""
    return of_type(outputs, SendMessage)


def kinds(outputs: list[Output]) -> list[str]:
    """The output type names, in order (readable assertion failures)."""
    return [type(output).__name__ for output in outputs]


def state_of(txn: Transaction) -> State:
    """The state, read through a call so that mypy does not narrow it across inputs."""
    return txn.state
