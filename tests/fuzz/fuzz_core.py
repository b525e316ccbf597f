"""Fuzz harness: the proxy core's input, :meth:`ProxyCore.receive` (sipha.proxy.core).

A core is built as tests/proxy builds one (:mod:`tests.proxy.support`: one pair, a fake
clock, deterministic tokens, so that recorded seeds replay), then fed the input:

* byte 0 sets the core up: bit 0 a pair monitor (docs/design.md §2), bit 1 the primary
  answers the monitor's probes (the pair starts active on it), bit 2 draining (SIGTERM),
  bit 3 small parser limits (:data:`SMALL_LIMITS`), bit 4 ``overload-ctrl-dialog-rate`` 1/s;
* the rest is records separated by :data:`SEPARATOR`; a record's first byte picks the
  source (low 3 bits, :data:`SOURCES`: a caller or a pair member, over UDP, TCP or TLS)
  and the seconds the clock moves first, timers firing on the way (high 5 bits);
  the rest of the record is a datagram, or stream bytes cut by a :class:`StreamFramer`
  per connection (frames to ``receive(..., stream=True)``, a framing error to
  ``bad_stream``, as the transports do); an empty record is a transport error toward
  the source;
* the clock then runs :data:`FINAL_SECONDS` more (Timer B, 64*T1, is 32 s), firing every
  deadline in order, and everything sent is drained.

What must hold: nothing raises (``receive``, ``bad_stream``, ``transport_error``,
``handle_timers``, ``drain``); everything sent renders to bytes; every request sent
(forwarded, CANCEL, ACK, probe) parses back valid: the core must not relay what it
would itself refuse.

Run: ``python -m tests.fuzz.fuzz_core [libFuzzer options] [corpus dirs]`` (tests/fuzz/README.md).
"""

from __future__ import annotations

from typing import Final

from sipha.sip import DEFAULT_LIMITS, Frame, FramingError, Request, SipParseError, StreamFramer, parse_message
from sipha.sip.address import Address
from sipha.txn import SendMessage
from tests.fuzz.fuzz_parser import SMALL_LIMITS, Finding
from tests.proxy.support import ALICE, BACKUP, PRIMARY, PROXY, Harness, ha_harness, harness

SEPARATOR: Final = b"\xff\xfe--\xfe\xff"
"""Between records: octets no SIP text holds together (0xFE and 0xFF are never UTF-8)."""

SOURCES: Final = (
    ALICE,
    PRIMARY,
    BACKUP,
    Address("TCP", ALICE.host, ALICE.port),
    Address("TCP", PRIMARY.host, PRIMARY.port),
    Address("TLS", ALICE.host, 5062),
    Address("UDP", "192.0.2.7", 5060),  # a stranger, neither caller of record nor member
    PROXY,  # the proxy's own address: a looped message
)
FINAL_SECONDS: Final = 40.0
PROBE_TAG: Final = ".probe"
"""In the branch of the pair monitor's OPTIONS (sipha.proxy.monitoring)."""


def fuzz_one_input(data: bytes) -> None:
    """Build a core as ``data[0]`` says and feed it the records of ``data[1:]``."""
    replay(data)


def replay(data: bytes) -> Harness | None:
    """:func:`fuzz_one_input`, returning the core's harness (``sent``: everything sent)."""
    if not data:
        return None
    h = setup(data[0])
    check_sent = SentChecker()
    framers: dict[Address, StreamFramer] = {}
    for record in data[1:].split(SEPARATOR):
        if not record:
            continue
        control, payload = record[0], record[1:]
        check_sent(h.advance(float(control >> 3)))
        check_sent(feed(h, framers, SOURCES[control & 7], payload))
    check_sent(h.advance(FINAL_SECONDS))
    return h


def setup(byte: int) -> Harness:
    """A core: with a pair monitor or not, the primary active or not, draining or not, small limits or not."""
    limits = SMALL_LIMITS if byte & 8 else DEFAULT_LIMITS
    rate = 1.0 if byte & 16 else 0.0
    h: Harness = (
        ha_harness(primary_active=bool(byte & 2), limits=limits, overload_rate=rate)
        if byte & 1
        else harness(limits=limits, overload_rate=rate)
    )
    if byte & 4:
        h.core.start_draining()
    return h


def feed(
    h: Harness, framers: dict[Address, StreamFramer], source: Address, payload: bytes
) -> list[SendMessage]:
    """Deliver ``payload`` from ``source`` as its transport would; return what was sent."""
    core = h.core
    if not payload:
        core.transport_error(source, h.now)
    elif not source.reliable:
        core.receive(payload, source, h.now)
    else:
        framer = framers.setdefault(source, StreamFramer(core.settings.limits))
        for event in framer.feed(payload):
            if isinstance(event, Frame):
                core.receive(event.data, source, h.now, stream=True)
            elif isinstance(event, FramingError):
                core.bad_stream(event.error, source, h.now)
                del framers[source]  # the transport closes the connection
    return h._collect()


class SentChecker:
    """Checks everything sent (:func:`replay`); each distinct request is parsed back once."""

    def __init__(self) -> None:
        self.checked: set[bytes] = set()

    def __call__(self, sent: list[SendMessage]) -> None:
        """Everything sent renders; every request sent parses back valid."""
        for send in sent:
            data = send.message.to_bytes()
            if not isinstance(send.message, Request) or data in self.checked:
                continue  # a retransmission: checked already
            self.checked.add(data)
            if PROBE_TAG in (send.message.top_via.branch or ""):
                continue  # the pair monitor's own OPTIONS: nothing of the input in it
            try:
                parse_message(data, stream=send.destination.reliable).validate()
            except SipParseError as error:
                raise Finding(f"sent a request it would refuse: {error.detail} ({data[:300]!r})") from error


if __name__ == "__main__":
    from tests.fuzz.runner import main

    main(fuzz_one_input)
