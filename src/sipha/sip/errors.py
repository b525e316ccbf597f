"""The one exception family of the message layer.

Every problem found in bytes from the network is a :class:`SipParseError`.  It
carries the status code a server should answer with (a *hint*: responses are
never answered, they are dropped) and, when enough of the message was read, the
partially parsed message, so that a 4xx can still be built from its Via, From,
To, Call-ID and CSeq (RFC 3261 §8.2.6.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sipha.sip.message import Request, Response

# Reason phrases of the codes the message layer hints at (RFC 3261 §21).
REASONS: dict[int, str] = {
    400: "Bad Request",
    413: "Request Entity Too Large",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    483: "Too Many Hops",
    501: "Not Implemented",
    505: "Version Not Supported",
    513: "Message Too Large",
}


class SipParseError(ValueError):
    """Bytes that are not an acceptable SIP message.

    ``status`` is the response a server should send for a request (400 unless a
    subclass says otherwise); ``detail`` says what was wrong, for the log and
    the reason phrase; ``message`` is what could be parsed, or None.
    """

    status: int = 400

    def __init__(
        self,
        detail: str,
        *,
        message: Request | Response | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.message = message
        if status is not None:
            self.status = status

    @property
    def reason(self) -> str:
        """The standard reason phrase of :attr:`status`."""
        return REASONS.get(self.status, "Bad Request")

    def with_message(self, message: Request | Response) -> SipParseError:
        """Attach the partially parsed message, unless one is attached already."""
        if self.message is None:
            self.message = message
        return self


class MessageTooLarge(SipParseError):
    """RFC 3261 §21.5.10: the message exceeds a configured limit."""

    status = 513


class VersionNotSupported(SipParseError):
    """RFC 3261 §21.5.6: a well-formed SIP-Version other than 2.0."""

    status = 505
