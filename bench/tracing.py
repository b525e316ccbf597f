"""What ``[trace]`` costs on the driver's per-message path: off, HEP export on, the log trace on.

Drives :class:`sipha.dispatch.Dispatcher` (the proxy's driver) with an endpoint that
answers every datagram with one message and transports that drop what they are given,
so that what is timed is the driver's own path: ``on_message`` (the receive hook), the
batch's flush and ``send`` (the send hook), i.e. the two ``tracer is not None`` checks of
every message when tracing is off.  With HEP on, each message is also encoded and sent
to a local UDP socket; with the log on, formatted and written to /dev/null.

    .venv/bin/python bench/tracing.py                  # off, hep and log, 200,000 messages each
    PYTHONPATH=/tmp/before/src .venv/bin/python bench/tracing.py --modes off   # another tree

Prints the best of ``--repeat`` runs per mode, in CPU ns per message (one in, one out).
On a busy machine the differences of a few ns drown in noise; instructions do not:

    valgrind --tool=callgrind .venv/bin/python bench/tracing.py --modes off --repeat 1 --messages 20001

minus the same with ``--messages 1``, divided by 20,000 (docs/tracing.md, Cost).
"""

from __future__ import annotations

import argparse
import logging
import socket
import time

from sipha.dispatch import Dispatcher
from sipha.sip import parse_message
from sipha.sip.address import Address
from sipha.txn import SendMessage

PHONE = Address("UDP", "127.0.0.1", 5090)
SIPHA = Address("UDP", "127.0.0.1", 5060)
MEMBER = Address("UDP", "127.0.0.1", 5080)
INVITE = (
    b"INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-4242-1-0\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5090>;tag=4242SIPpTag001\r\n"
    b"To: service <sip:service@127.0.0.1:5060>\r\n"
    b"Call-ID: 1-4242@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: sip:sipp@127.0.0.1:5090\r\n"
    b"Max-Forwards: 70\r\nSubject: Performance Test\r\nContent-Length: 0\r\n\r\n"
)
BATCH = 64


class Echo:
    """An endpoint that sends one message for each one it receives (no parsing: not timed here)."""

    def __init__(self) -> None:
        self.output = SendMessage(parse_message(INVITE), MEMBER, None)
        self.out: list[SendMessage] = []

    def receive(self, data: bytes, source: Address, now: float, *, stream: bool = False) -> None:
        del data, source, now, stream
        self.out.append(self.output)

    def transport_error(self, destination: Address, now: float) -> None:
        del destination, now

    def handle_timers(self, now: float) -> None:
        del now

    def next_deadline(self) -> float | None:
        return None

    def drain(self) -> list[SendMessage]:
        out, self.out = self.out, []
        return out


class Dropped:
    """Transports that take every message and do nothing with it."""

    def send(self, data: bytes, destination: Address) -> None:
        del data, destination

    def send_probe(self, data: bytes, destination: Address) -> None:
        del data, destination

    def has_connection(self, destination: Address) -> bool:
        del destination
        return False

    def alias(self, connection: Address, host: str, port: int) -> bool:
        del connection, host, port
        return False

    def local_address(self, transport: str, family: int = socket.AF_INET) -> Address:
        del transport, family
        return SIPHA

    def open_probe_socket(self, family: int = socket.AF_INET) -> Address:
        del family
        return SIPHA


def driver(mode: str, collector: socket.socket) -> Dispatcher:
    dispatch = Dispatcher(on_event=print, count_final=print)  # neither is called here
    dispatch.endpoint = Echo()
    dispatch.transports = Dropped()
    dispatch.clock = time.monotonic
    if mode != "off":
        from sipha.trace.tracer import HepCounters, HepExporter, MessageTracer  # noqa: PLC0415 - after

        exporter = None
        if mode == "hep":
            host, port = collector.getsockname()
            exporter = HepExporter.open(
                host, port, target="bench", capture_id=1, auth_key=b"", counters=HepCounters()
            )
        dispatch.tracer = MessageTracer(Dropped(), exporter, log=mode == "log")
    return dispatch


def run(dispatch: Dispatcher, messages: int) -> float:
    """CPU ns per message through on_message + flush + send (CPU time: others' load does not count)."""
    on_message, on_batch_end = dispatch.on_message, dispatch.on_batch_end
    started = time.process_time_ns()
    for number in range(messages):
        on_message(INVITE, PHONE, SIPHA)
        if number % BATCH == BATCH - 1:
            on_batch_end()
    on_batch_end()
    return (time.process_time_ns() - started) / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--modes", default="off,hep,log")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, handlers=[logging.FileHandler("/dev/null")])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))  # never read: the kernel drops what overflows it
        for mode in args.modes.split(","):
            dispatch = driver(mode, collector)
            best = min(run(dispatch, args.messages) for _ in range(args.repeat))
            print(f"{mode:4} {best:8.1f} ns per message")


if __name__ == "__main__":
    main()
