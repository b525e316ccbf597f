"""Recognise a new INVITE in raw bytes, without parsing: what is dropped when far behind.

Past capacity a proxy must spend its time on the calls already up (docs/design.md §3,
overload).  Shedding a new call with a 503 costs a parse, a transaction and two
responses; when even that is more than sipha can keep up with (a flood), new INVITEs
from endpoints are dropped before they are parsed.  The caller retransmits
(RFC 3261 §17.1.1.2), and a retransmission that comes once the queue has drained is
served.  Dropping is safe only for what is certainly a new dialog-creating INVITE:
anything this test is unsure of goes on to the parser (which answers malformed
messages itself).
"""

from __future__ import annotations

import re
from typing import Final

_TO_LINE: Final = re.compile(rb"\r?\n(?:to|t)[ \t]*:([^\r\n]*)", re.IGNORECASE)
"""The To header field (or its compact form ``t``, RFC 3261 §7.3.3), first line only."""
_TAG: Final = re.compile(rb";[ \t]*tag[ \t]*=", re.IGNORECASE)
_CONTINUATION: Final = re.compile(rb"\r?\n(?:to|t)[ \t]*:[^\r\n]*\r?\n[ \t]", re.IGNORECASE)


_USUAL_TO: Final = b"\r\nTo:"
"""How nearly every user agent spells it: found by one ``find`` (a case-insensitive regular
expression over the whole head costs ten times as much, and this runs for every datagram of a
flood)."""
_FOLDED: Final = (b" ", b"\t")


def is_new_invite(data: bytes) -> bool:
    """Whether ``data`` is an INVITE request whose To header field has no tag (§12.1: a new dialog).

    False whenever in doubt: no To header field in the head, one folded over several
    lines (§7.3.1), or a ``tag`` anywhere in it.
    """
    if not data.startswith(b"INVITE "):
        return False
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    at = head.find(_USUAL_TO)
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        if stop < 0:
            return _TAG.search(head, at + len(_USUAL_TO)) is None
        if head[stop + 2 : stop + 3] in _FOLDED:
            return False
        return _TAG.search(head[at + len(_USUAL_TO) : stop]) is None
    match = _TO_LINE.search(head)
    if match is None or _CONTINUATION.search(head, match.start()) is not None:
        return False
    return _TAG.search(match.group(1)) is None
