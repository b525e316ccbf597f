"""Which worker process handles a datagram (``[proxy] workers``): transaction affinity, sans-IO.

With several workers, each runs its own proxy core and transaction layer, and
reads its own UDP socket on the shared port (SO_REUSEPORT: the kernel picks the
socket by the sender's address, so one sender always reaches the same socket
and its datagrams stay in order).  A datagram can therefore land on a worker
that does not hold its transaction; :func:`owner` names the one that does, and
the others pass the datagram on unchanged:

* a response whose top Via carries a worker tag in its branch (``.w3``, added by
  the worker that sent the request, ``ProxySettings.branch_tag``) goes to that
  worker: it holds the client transaction, whichever transport the request
  came in on;
* anything else goes by Call-ID: retransmissions, the CANCEL and the ACK of an
  INVITE (RFC 3261 §9.1 and §17.1.1.3 give them the INVITE's Call-ID) and every
  request of a dialog meet the same worker, and a worker's own requests are
  answered to it by their tagged branch.

Only the header section is read, with two anchored regular expressions: this
runs for every datagram, before the parser.  A datagram without a Call-ID is
kept where it landed (None): the parser refuses it there with the right status.
"""

from __future__ import annotations

import re
import zlib
from typing import Final

# RFC 3261 §7.3.1: header names are case-insensitive; §7.3.3: compact forms i (Call-ID), v (Via).
_CALL_ID: Final = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\s]+)", re.IGNORECASE)
_VIA: Final = re.compile(rb"\n(?:via|v)[ \t]*:([^\r\n]*)", re.IGNORECASE)
_WORKER_TAG: Final = re.compile(
    rb";[ \t]*branch[ \t]*=[ \t]*z9hG4bK[^;,\s]*\.w([0-9]{1,3})(?![^;,\s])", re.IGNORECASE
)
_SIP_VERSION: Final = b"SIP/2.0 "
_HEADERS_END: Final = b"\r\n\r\n"


def worker_tag(index: int) -> str:
    """The branch suffix of worker ``index`` (``ProxySettings.branch_tag``)."""
    return f".w{index}"


def owner(data: bytes, workers: int) -> int | None:
    """The worker (0 to ``workers`` - 1) that handles ``data``; None: the one it landed on."""
    end = data.find(_HEADERS_END)
    if end < 0:
        end = len(data)
    if data[:8].upper() == _SIP_VERSION:  # a response (§7.1: SIP-Version is case-insensitive)
        via = _VIA.search(data, 0, end)
        if via is not None:
            top = via.group(1).split(b",", 1)[0]
            tagged = _WORKER_TAG.search(top)
            if tagged is not None:
                index = int(tagged.group(1))
                if index < workers:
                    return index
    call_id = _CALL_ID.search(data, 0, end)
    if call_id is None:
        return None
    return zlib.crc32(call_id.group(1)) % workers
