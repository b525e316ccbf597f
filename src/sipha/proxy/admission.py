"""Which new requests the proxy core takes on: overload shedding by tier, and ``max-transactions``.

docs/design.md §3 ("Overload").  Past capacity a proxy must keep the calls already
up and refuse new ones; and when the load is a flood, the new calls most likely to
be the flood go first.  Two tiers of sources:

* **trusted**: the ``[limits] trusted`` networks (a gateway, an SBC): what the operator
  knows; a pair member (its address: IP and port) is never shed at all;
* **others**: every other source.  A flood from many addresses is here (a source
  over its ``source-rate`` never gets this far: the per-source guard drops it at any
  load, :mod:`sipha.proxy.ratelimit`).

The dispatcher reports how far behind its receive queues are (:attr:`Admission.level`,
the share of a UDP receive buffer still queued after a full batch,
:data:`sipha.net.udp.BEHIND_SHARES`), and a new INVITE (no To tag, not a
retransmission) is treated by level and tier:

====== ==================== ============================ ==================
level  queue                others                       trusted
====== ==================== ============================ ==================
1      more than 1/4        503, without a transaction   admitted
2      more than 1/2        dropped unparsed (UDP)       admitted
3      more than 3/4        dropped unparsed (UDP)       503, no transaction [*]_
====== ==================== ============================ ==================

.. [*] unless an untrusted new INVITE was dropped within :data:`BLAME_OTHERS`: then the
   queue is full of the others' (a flood), and a gateway's calls, a small share of the
   load, are kept.

A pair member's new call is never shed, nor anything in a dialog, a CANCEL, an ACK,
a response.  The drop before parsing is the dispatcher's (:func:`sipha.proxy.overload.is_new_invite`
on the bytes, then the source's tier, one dictionary look-up); the 503s are sent here,
statelessly: a transaction would retransmit the 503 for 32 s to a caller that never
ACKs it (a flood).

``max-transactions`` bounds the transactions alive (server and client: a forwarded
request holds one of each), so that resident memory stays bounded whatever the load:
a request that would create a server transaction beyond it is answered 503 with
Retry-After, statelessly.  Requests outside a dialog from other sources are refused
from :data:`OTHERS_SHARE` of the limit already, so that a flood cannot take the room
the trusted sources and the calls already up (their BYEs, CANCELs, re-INVITEs) need.

Sans-IO: the core gives the parsed request, its source and what it knows; the
counters are read by /metrics, and the dispatcher logs (at most every 10 s).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sipha.proxy.rules import member_source
from sipha.proxy.settings import Counters
from sipha.proxy.view import ConfiguredView
from sipha.sip import Request, Response, make_response
from sipha.sip.address import Address
from sipha.txn import TransactionLayer

RETRY_AFTER: Final = 1
"""Retry-After of an overload 503 (RFC 3261 §21.5.4, §20.33): the queue drains within a second."""
LIMIT_RETRY_AFTER: Final = 5
"""Retry-After of a 503 at max-transactions: room comes back as transactions end (Timers J, K, L)."""
OTHERS_SHARE: Final = 0.5
"""Share of max-transactions at which requests outside a dialog from untrusted sources are refused:
the other half is the trusted sources' and the calls up's (a call holds about 100 transactions per
call/s for 32 s: Timers L, M and J of its INVITE and BYE)."""
TRUSTED_SHED_LEVEL: Final = 3
"""Level at which trusted sources' new INVITEs are shed too (others': 1), when the others are not
the load (:data:`BLAME_OTHERS`)."""
BLAME_OTHERS: Final = 1.0
"""s after an untrusted new INVITE was dropped during which a trusted one is not shed: the queue
is full of the others' (a flood), and shedding a gateway's calls would not drain it."""
DROP_LEVEL: Final = 2
"""Level from which the others' new INVITEs are dropped before they are parsed (UDP)."""


def _nobody(host: str) -> bool:
    del host
    return False


class Admission:
    """The core's admission of new server transactions (docs/design.md §3, overload)."""

    def __init__(self, counters: Counters, token: Callable[[], str]) -> None:
        self._counters = counters
        self._token = token
        self.level = 0
        """How far behind the receive queues are (0-3, :data:`sipha.net.udp.BEHIND_SHARES`)."""
        self.max_transactions = 0
        """[limits] max-transactions; 0 = no limit."""
        self._others_limit = 0
        self.trusted: Callable[[str], bool] = _nobody
        """Whether a source IP is in [limits] trusted (the dispatcher's look-up in its guard's table)."""
        self.others_dropped_at = float("-inf")
        """When the dispatcher last dropped an untrusted new INVITE unparsed."""
        self.refused = 0
        """Requests answered 503 at max-transactions (a counter: transactions_refused)."""
        self.shed_trusted = 0
        """New INVITEs of trusted sources shed (503) at level 3 (counted in overload_sheds too)."""
        self.shed_tag = ""
        """The To tag of the 503s sent without a transaction, made at the first."""

    def limit(self, max_transactions: int) -> None:
        """[limits] max-transactions (0: none)."""
        self.max_transactions = max_transactions
        self._others_limit = int(max_transactions * OTHERS_SHARE)

    def check(
        self,
        request: Request,
        source: Address,
        txn: TransactionLayer,
        view: ConfiguredView,
        *,
        behind: bool,
        now: float,
    ) -> Response | None:
        """A 503 to send statelessly instead of creating a server transaction for ``request``, or None.

        ``behind``: the core's :attr:`~sipha.proxy.core.ProxyCore.overloaded` (level 1 at least).
        The common case (nothing behind, room left) costs two comparisons.
        """
        level = self.level or (1 if behind else 0)
        limit = self.max_transactions
        if (not level or request.method != "INVITE") and (not limit or len(txn) < self._others_limit):
            return None
        if request.method == "ACK" or txn.has_server(request):
            return None  # an ACK never creates a transaction; a retransmission is absorbed by its own
        origin = member_source(request, source)
        if view.member_at(origin.host, origin.port) is not None:
            return None  # a SIP server's requests keep priority, its new calls included
        new = request.to.tag is None and request.method != "CANCEL"
        trusted = self.trusted(source.host)
        if limit and len(txn) >= (self._others_limit if new and not trusted else limit):
            self.refused += 1
            return self._refuse(request, LIMIT_RETRY_AFTER)
        if not level or request.method != "INVITE" or not new:
            return None
        if trusted:
            if level < TRUSTED_SHED_LEVEL or now - self.others_dropped_at < BLAME_OTHERS:
                return None
            self.shed_trusted += 1
        self._counters.overload_sheds += 1
        return self._refuse(request, RETRY_AFTER)

    def is_shed_ack(self, ack: Request) -> bool:
        """Whether ``ack`` acknowledges one of the 503s sent here (it ends here, §17.1.1.3)."""
        return bool(self.shed_tag) and ack.to.tag == self.shed_tag

    def _refuse(self, request: Request, retry_after: int) -> Response:
        if not self.shed_tag:
            self.shed_tag = f"{self._token()}.shed"
        retry = [("Retry-After", str(retry_after))]
        return make_response(request, 503, "Service Unavailable", to_tag=self.shed_tag, headers=retry)
