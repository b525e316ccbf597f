"""How TLS handshakes ended (RFC 3261 §26.2): the outcomes counted, the last failure per peer.

:class:`sipha.net.tls.TlsConnection` names each failure
(:func:`sipha.net.tls.describe_failure`); the transport manager counts the outcomes
and keeps the last failure per peer it dialled, for ``/status`` and ``/metrics``.
"""

from __future__ import annotations

from typing import Final

from sipha.sip.address import Address

OUTCOMES: Final = ("ok", "verify_failed", "peer_refused", "not_tls", "closed", "timeout", "error")
"""How a TLS handshake ends, the label of the handshake counter: completed; our verification
of the peer's certificate failed; the peer sent an alert (it refused our certificate, our
protocol version or cipher); what arrived is not TLS (plaintext SIP sent to a TLS port);
the peer closed the connection during the handshake; it did not finish in time; anything else."""


FAILURES_KEPT: Final = 1024
"""Bound of the table of the last TLS failure per destination (for /status)."""


def count_outcome(
    outcomes: dict[str, int],
    failures: dict[tuple[str, int], str],
    peer: Address,
    outcome: str,
    text: str,
    *,
    outbound: bool,
) -> None:
    """Count a handshake's ``outcome``; keep (bounded) or clear the last failure to a peer we dialled."""
    outcomes[outcome] = outcomes.get(outcome, 0) + 1
    if not outbound:
        return
    key = (peer.host, peer.port)
    if outcome == "ok":
        failures.pop(key, None)
        return
    if len(failures) >= FAILURES_KEPT and key not in failures:
        failures.pop(next(iter(failures)))
    failures[key] = text
