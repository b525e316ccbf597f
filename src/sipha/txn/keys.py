"""Transaction matching keys (RFC 3261 §17.1.3, §17.2.3, §9.2).

A key is a small tuple of strings, hashable, whose first element says which
rule built it, so keys of different kinds never collide in one dictionary:

* ``("client", branch, method)``: §17.1.3, a response matches a client
  transaction by the branch of its top Via and the method of its CSeq.
* ``("server", branch, host, port, method)``: §17.2.3, a request matches a
  server transaction by the top Via branch (with the ``z9hG4bK`` magic
  cookie), the top Via sent-by, and the method ("except for ACK, where the
  method of the request that created the transaction is INVITE").
* ``("server-2543", request-uri, to-tag, from-tag, call-id, cseq-number,
  cseq-method, top-via)``: the §17.2.3 fallback for requests whose branch
  lacks the cookie (RFC 2543 clients).
* ``("server-2543-ack", request-uri, from-tag, call-id, cseq-number,
  top-via)``: the fallback for ACK, which also needs "the To tag of the ACK
  [to match] the To tag of the response sent by the server transaction", a
  tag the INVITE did not carry; that last comparison is done by the caller.

Branches and tags compare case-sensitively, as the message layer keeps them
(§17.2.3 compares branches exactly).  Every other component is taken as it
appears on the wire: retransmissions are byte-for-byte copies, which is all
these rules need to recognise.
"""

from __future__ import annotations

from typing import Final

from sipha.sip import Request, Response, Via

MAGIC_COOKIE: Final = "z9hG4bK"
"""RFC 3261 §8.1.1.7: branches of RFC 3261 elements "MUST always begin with" it."""

TransactionKey = tuple[str, ...]
"""A hashable transaction identity; see the module docstring for its shapes."""

CLIENT: Final = "client"
SERVER: Final = "server"
SERVER_2543: Final = "server-2543"
SERVER_2543_ACK: Final = "server-2543-ack"


def has_magic_cookie(branch: str | None) -> bool:
    """True when ``branch`` marks an RFC 3261 element (§17.2.3: "begins with z9hG4bK")."""
    return branch is not None and branch.startswith(MAGIC_COOKIE)


def client_key(branch: str, method: str) -> TransactionKey:
    """The key of a client transaction whose request carries ``branch`` in its top Via."""
    return (CLIENT, branch, method)


def client_key_of_request(request: Request) -> TransactionKey:
    """§17.1.3: the branch of the request's top Via and the request's method.

    Raises ValueError when the top Via has no RFC 3261 branch: the branch is
    what responses are matched on, and this layer only creates branches with
    the cookie (§8.1.1.7, §16.6 step 8).
    """
    branch = request.top_via.branch
    if not has_magic_cookie(branch):
        raise ValueError(f"top Via branch {branch!r} of a new request lacks {MAGIC_COOKIE}")
    assert branch is not None  # noqa: S101 - has_magic_cookie checked it; for the type checker
    return client_key(branch, request.method)


def client_key_of_response(response: Response) -> TransactionKey | None:
    """§17.1.3: the key of the client transaction a response belongs to, or None.

    "If the response has the same value of the branch parameter in the top Via
    header field as the branch parameter in the top Via header field of the
    request that created the transaction" and "the method parameter in the CSeq
    header field matches the method of the request that created the
    transaction".  The method is needed "since a CANCEL request constitutes a
    different transaction, but shares the same value of the branch parameter".
    """
    branch = response.top_via.branch
    if branch is None:
        return None
    return client_key(branch, response.cseq.method)


def _via_text(via: Via) -> str:
    """The top Via as one canonical string, for the RFC 2543 "top Via ... match" rule."""
    params = ";".join(f"{name}={value}" if value is not None else name for name, value in via.params.items())
    port = "" if via.port is None else str(via.port)
    return f"{via.protocol}/{via.transport} {via.host_key}:{port};{params}"


def server_key(request: Request) -> TransactionKey:
    """§17.2.3: the key of the server transaction ``request`` belongs to (or would create).

    For an ACK this is the key of the INVITE transaction it would match when
    the branch has the cookie; with an RFC 2543 branch use :func:`ack_key_2543`.
    For a CANCEL it is the CANCEL's own transaction ("CANCEL ... constitutes a
    different transaction"); :func:`cancel_target_key` finds the INVITE.
    """
    via = request.top_via
    branch = via.branch
    if has_magic_cookie(branch):
        assert branch is not None  # noqa: S101 - has_magic_cookie checked it; for the type checker
        method = "INVITE" if request.method == "ACK" else request.method
        port = "" if via.port is None else str(via.port)
        return (SERVER, branch, via.host_key, port, method)
    # RFC 2543 fallback: "the Request-URI, To tag, From tag, Call-ID, CSeq (including the
    # method), and top Via header field match those of the request that created the
    # transaction" (for INVITE the CSeq is the INVITE's, which includes the method too).
    cseq = request.cseq
    return (
        SERVER_2543,
        request.uri,
        request.to.tag or "",
        request.from_.tag or "",
        request.call_id,
        str(cseq.seq),
        cseq.method,
        _via_text(via),
    )


def ack_key_2543(request: Request) -> TransactionKey:
    """The RFC 2543 ACK-matching key, computed alike from the INVITE and from its ACK.

    §17.2.3: "the ACK request matches a transaction if the Request-URI, From tag,
    Call-ID, CSeq number (not the method), and top Via header field match those of
    the INVITE request which created the transaction, and the To tag of the ACK
    matches the To tag of the response sent by the server transaction."  The To
    tag is left out here and compared by the caller.
    """
    return (
        SERVER_2543_ACK,
        request.uri,
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.seq),
        _via_text(request.top_via),
    )


def cancel_target_key(cancel: Request) -> TransactionKey:
    """The key of the server INVITE transaction a CANCEL cancels (§9.2).

    "The CANCEL method requests that the TU at the server side cancel a pending
    transaction.  The TU determines the transaction to be cancelled by taking
    the CANCEL request, and then assuming that the request method is anything
    but CANCEL or ACK and applying the transaction matching procedures of
    Section 17.2.3."  A CANCEL copies the INVITE's Request-URI, Call-ID, To,
    From, CSeq number and top Via (§9.1), so only the method changes.
    """
    key = server_key(cancel)
    if key[0] == SERVER:
        return (*key[:-1], "INVITE")  # (SERVER, branch, host, port, method)
    return (*key[:6], "INVITE", key[7])  # (SERVER_2543, uri, to, from, call-id, seq, method, via)
