"""What one source may cost: a token bucket per source IP, and known scanners' requests dropped.

docs/design.md §3 ("Sources and connections").  sipha forwards every request of an
endpoint to a pair's active member, so whatever a scanner sends (SIPVicious'
``svwar`` probing extensions with REGISTER, ``svcrack`` guessing passwords, a
``sipsak`` flood) reaches the SIP server unless it is stopped here.  Two checks,
as Kamailio's default configuration makes them (the ``pike`` module, route REQINIT):

* **a token bucket per source IP** (``[limits] source-rate``, ``source-burst``):
  every message from the source takes a token; without one it is dropped,
  unanswered.  An answer would cost what the limit saves, and would tell a scanner
  that something listens (and make sipha a reflector for a forged source address);
  a legitimate client over UDP retransmits (RFC 3261 §17.1.1.2) and is served once
  the bucket has refilled.
* **scanners' User-Agents** (``[limits] scanner-user-agents``): a request whose
  User-Agent contains one of the configured words, in any case, is dropped
  unanswered.  It stops the tools as they are shipped (SIPVicious always sends
  ``friendly-scanner``), not an attacker who changes the header: the bucket bounds
  those.  ACK, BYE and CANCEL are not looked at (they follow a request that was), so
  a call costs one search: its INVITE's.

The pair members (by IP: a SIP server's connections come from ephemeral ports) and
the ``trusted`` networks are never limited.  The table of sources is bounded
(:data:`MAX_SOURCES`, the oldest entry goes first), so a flood of forged source
addresses costs bounded memory.  Sans-IO: the dispatcher gives each message's
bytes, its source IP and ``now``; the check looks at the bytes without parsing them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

ADMIT: Final = 0
RATE_LIMITED: Final = 1
SCANNER: Final = 2

MAX_SOURCES: Final = 65_536
"""Sources remembered at most (about 10 MB); beyond, the oldest entry is forgotten first."""
NOTICE_EVERY: Final = 60.0
"""s between two log lines about the same source."""

_USER_AGENT: Final = re.compile(rb"\n[Uu][Ss][Ee][Rr]-[Aa][Gg][Ee][Nn][Tt][ \t]*:[ \t]*([^\r\n]*)")
"""The User-Agent header field, first line (RFC 3261 §25.1: HCOLON = *( SP / HTAB ) ":" SWS), in
any case; spelled out rather than IGNORECASE, so that the search runs from each line start."""
_USUAL: Final = b"\nUser-Agent"
"""How every tool and phone spells it: one ``find`` before the regular expression."""
_HEADER_END: Final = b"\r\n\r\n"
_RESPONSE: Final = b"SIP/"
_NOT_CHECKED: Final = frozenset(b"ABC")
"""The first letter of the requests whose User-Agent is not looked at: ACK, BYE and CANCEL belong
to a call already set up or asked for (a scanner asks with OPTIONS, REGISTER, INVITE)."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """``[limits]`` as the guard uses it, with the pair members' IPs."""

    rate: float = 0.0
    """Messages per second per source IP; 0 = no limit."""
    burst: float = 100.0
    """The bucket's size: messages a source may send at once."""
    scanner_agents: tuple[bytes, ...] = ()
    """Lower-case words; a request whose User-Agent contains one is dropped."""
    trusted: tuple[Network, ...] = ()
    exempt: frozenset[str] = field(default_factory=frozenset)
    """IPs never limited: the pair members' (canonical text, as the transports report sources)."""

    @property
    def enabled(self) -> bool:
        """Whether anything is checked at all."""
        return self.rate > 0 or bool(self.scanner_agents)


def canonical_ip(host: str) -> str:
    """``host`` as the transports report a source IP (``::1``, ``192.0.2.7``); unchanged if not an IP."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host


def user_agent(data: bytes) -> bytes | None:
    """The User-Agent header field's value (its first line) in the header section of ``data``, or None."""
    found = _first_agent_line(data)
    if found is None or data.find(_HEADER_END, 0, found[0] + 1) >= 0:
        return None  # none, or only in the body (e.g. a message/sipfrag): not a header field
    return found[1]


def scanner_word(data: bytes, words: Iterable[bytes]) -> bytes | None:
    """The first of ``words`` (lower case) found in the User-Agent of request ``data``, or None.

    The cheap steps first: the line is found, its value matched; only a match is checked to
    be in the header section rather than the body.
    """
    found = _first_agent_line(data)
    if found is None:
        return None
    lowered = found[1].lower()
    for word in words:
        if word in lowered:
            return None if data.find(_HEADER_END, 0, found[0] + 1) >= 0 else word
    return None


def _first_agent_line(data: bytes) -> tuple[int, bytes] | None:
    """(where, value) of the first User-Agent line of ``data``, header section or body."""
    at = data.find(_USUAL)
    match = None if at < 0 else _USER_AGENT.match(data, at)
    if match is None:  # another spelling, or "User-Agents:", or none at all
        match = _USER_AGENT.search(data)
    if match is None:
        return None
    return match.start(), match.group(1).rstrip(b" \t")


class _Source:
    """One source IP: its bucket, and what was dropped since it was last logged."""

    __slots__ = ("at", "dropped", "exempt", "logged_at", "tokens", "trusted")

    def __init__(self, tokens: float, at: float, *, trusted: bool, exempt: bool) -> None:
        self.tokens = tokens
        self.at = at
        self.trusted = trusted
        """In the ``trusted`` networks."""
        self.exempt = exempt
        """Never limited: trusted, or a pair member's IP."""
        self.dropped = 0
        self.logged_at = -NOTICE_EVERY - 1.0


class SourceGuard:
    """The checks of ``[limits]`` on every message from the network (:meth:`check`)."""

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        self.enabled = self.settings.enabled
        """False: :meth:`check` need not be called (nothing is limited)."""
        self.rate_limited = 0
        """Messages dropped over a source's rate (a counter for /metrics)."""
        self.scanner_requests = 0
        """Requests dropped for a scanner's User-Agent."""
        self._sources: dict[str, _Source] = {}

    def reconfigure(self, settings: GuardSettings) -> None:
        """New settings (a reload): every source starts again with a full bucket; counters go on."""
        self.settings = settings
        self.enabled = settings.enabled
        self._sources.clear()

    def __len__(self) -> int:
        return len(self._sources)

    def check(self, data: bytes, host: str, now: float) -> int:
        """:data:`ADMIT`, or why ``data`` from ``host`` is dropped (:data:`RATE_LIMITED`, :data:`SCANNER`)."""
        source = self._sources.get(host)
        if source is None:
            source = self._remember(host, now)
        if source.exempt:
            return ADMIT
        settings = self.settings
        agents = settings.scanner_agents
        if (
            agents
            and data
            and data[0] not in _NOT_CHECKED
            and not data.startswith(_RESPONSE)
            and scanner_word(data, agents) is not None
        ):
            source.dropped += 1
            self.scanner_requests += 1
            return SCANNER
        rate = settings.rate
        if rate > 0.0:
            tokens = source.tokens + (now - source.at) * rate
            tokens = min(tokens, settings.burst)
            source.at = now
            if tokens >= 1.0:
                source.tokens = tokens - 1.0
                return ADMIT
            source.tokens = tokens
            source.dropped += 1
            self.rate_limited += 1
            return RATE_LIMITED
        return ADMIT

    def trusted(self, host: str, now: float) -> bool:
        """Whether ``host`` is in the ``trusted`` networks (what overload sheds last).

        One look-up in the table of sources (the entry :meth:`check` made for this message,
        when the guard is enabled; else one is made, bounded like the others).  Not the pair
        members' IPs: overload knows a member by its address, IP and port.
        """
        source = self._sources.get(host)
        if source is None:
            source = self._remember(host, now)
        return source.trusted

    def notice(self, host: str, now: float) -> int:
        """Messages of ``host`` dropped since its last log line, when a line is due now (else 0).

        At most one line per source per :data:`NOTICE_EVERY`: a flood makes one line a minute.
        """
        source = self._sources.get(host)
        if source is None or now - source.logged_at < NOTICE_EVERY:
            return 0
        count, source.dropped = source.dropped, 0
        source.logged_at = now
        return count

    def _remember(self, host: str, now: float) -> _Source:
        settings = self.settings
        sources = self._sources
        if len(sources) >= MAX_SOURCES:
            del sources[next(iter(sources))]  # the oldest first (insertion order)
        trusted = _trusted(host, settings)
        source = _Source(settings.burst, now, trusted=trusted, exempt=trusted or host in settings.exempt)
        sources[host] = source
        return source


def _trusted(host: str, settings: GuardSettings) -> bool:
    if not settings.trusted:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in settings.trusted)
