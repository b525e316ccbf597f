"""The driver of a sans-IO endpoint (sipha.net.driver), on a fake endpoint and a fake clock."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from sipha.net.driver import Driver, loop_clock
from sipha.sip import Request, parse_message
from sipha.sip.address import Address

PEER = Address("UDP", "127.0.0.1", 5090)
PEER_TCP = Address("TCP", "127.0.0.1", 5090)
LOCAL = Address("UDP", "127.0.0.1", 5060)
OPTIONS = (
    b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-1\r\n"
    b"From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n"
    b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


@dataclass(frozen=True)
class Out:
    message: Request
    destination: Address


@dataclass
class FakeEndpoint:
    """Echoes every message back to its source; records its inputs in order."""

    inputs: list[str] = field(default_factory=list)
    deadline: float | None = None
    out: list[Out] = field(default_factory=list)

    def receive(self, data: bytes, source: Address, now: float, *, stream: bool = False) -> None:
        self.inputs.append(f"receive {'stream' if stream else 'datagram'} {now}")
        message = parse_message(data, stream=stream)
        assert isinstance(message, Request)
        self.out.append(Out(message, source))

    def transport_error(self, destination: Address, now: float) -> None:
        self.inputs.append(f"error {destination.port} {now}")

    def handle_timers(self, now: float) -> None:
        self.inputs.append(f"timers {now}")

    def next_deadline(self) -> float | None:
        return self.deadline

    def drain(self) -> list[Out]:
        out, self.out = self.out, []
        return out


@dataclass
class Sent:
    sent: list[Address] = field(default_factory=list)

    def send(self, data: bytes, destination: Address) -> None:
        assert data.startswith(b"OPTIONS")
        self.sent.append(destination)

    def send_probe(self, data: bytes, destination: Address) -> None:
        self.send(data, destination)

    def has_connection(self, destination: Address) -> bool:
        return False

    def alias(self, connection: Address, host: str, port: int) -> bool:
        return False


@dataclass
class Bed:
    driver: Driver
    endpoint: FakeEndpoint
    transports: Sent
    armed: list[float]
    now: list[float]


def bed(grid: float = 0.0) -> Bed:
    driver = Driver(grid=grid)
    endpoint = FakeEndpoint()
    transports = Sent()
    armed: list[float] = []
    now = [1.0]
    driver.endpoint = endpoint
    driver.transports = transports
    driver.clock = lambda: now[0]
    driver.arm_timer = armed.append
    return Bed(driver, endpoint, transports, armed, now)


def test_datagrams_are_sent_once_their_batch_is_read() -> None:
    b = bed()
    b.driver.on_message(OPTIONS, PEER, LOCAL)
    b.driver.on_message(OPTIONS, PEER, LOCAL)
    assert b.transports.sent == []
    b.driver.on_batch_end()
    assert b.transports.sent == [PEER, PEER]
    assert b.endpoint.inputs == ["receive datagram 1.0", "receive datagram 1.0"]


def test_a_stream_message_is_sent_at_once() -> None:
    b = bed()
    b.driver.on_message(OPTIONS, PEER_TCP, LOCAL)
    assert b.transports.sent == [PEER_TCP]
    assert b.endpoint.inputs == ["receive stream 1.0"]


def test_a_transport_error_is_fed_with_now() -> None:
    b = bed()
    b.now[0] = 2.5
    b.driver.on_transport_error(PEER, "refused")
    assert b.endpoint.inputs == ["error 5090 2.5"]


def test_the_timer_is_armed_at_the_deadline_or_on_the_grid() -> None:
    exact = bed()
    exact.endpoint.deadline = 1.503
    exact.driver.flush()
    assert exact.armed == [1.503]
    grid = bed(grid=0.01)
    grid.endpoint.deadline = 1.503
    grid.driver.flush()
    assert len(grid.armed) == 1
    assert 1.503 <= grid.armed[0] < 1.503 + 0.01


def test_the_timer_is_re_armed_only_for_an_earlier_deadline() -> None:
    b = bed()
    b.endpoint.deadline = 2.0
    b.driver.flush()
    b.endpoint.deadline = 3.0
    b.driver.flush()
    assert b.armed == [2.0]
    b.endpoint.deadline = 1.5
    b.driver.flush()
    assert b.armed == [2.0, 1.5]


def test_messages_already_received_come_before_the_timers() -> None:
    b = bed()
    backlog: list[int] = []

    def read_pending(limit: int) -> int:
        """What TransportManager.read_pending does: the datagrams the sockets hold, as a batch."""
        backlog.append(limit)
        b.driver.on_message(OPTIONS, PEER, LOCAL)
        b.driver.on_batch_end()
        return 1

    b.driver._read_pending = read_pending
    b.endpoint.deadline = 2.0
    b.driver.flush()
    b.now[0] = 2.0
    b.endpoint.deadline = None
    b.driver.on_timer()
    assert backlog
    assert b.endpoint.inputs == ["receive datagram 2.0", "timers 2.0"]
    assert b.driver.timer_at is None


def test_nothing_happens_before_the_endpoint_exists() -> None:
    driver = Driver()
    driver.on_message(OPTIONS, PEER, LOCAL)
    driver.on_batch_end()
    driver.on_transport_error(PEER, "refused")
    driver.on_timer()
    driver.flush()


def test_the_clock_of_the_standard_loop_is_time_monotonic_itself() -> None:
    """Read per message: the function, not the loop's interpreted method around it; the timers
    (``call_at``) and the endpoint's ``now`` still share one clock."""
    loop = asyncio.new_event_loop()
    try:
        clock = loop_clock(loop)
        assert clock is time.monotonic
        assert abs(clock() - loop.time()) < 1.0
    finally:
        loop.close()


def test_a_loop_with_its_own_clock_keeps_it() -> None:
    class OffsetLoop(asyncio.SelectorEventLoop):
        def time(self) -> float:
            return 1000.0 + super().time()

    loop = OffsetLoop()
    try:
        clock = loop_clock(loop)
        assert clock() > time.monotonic() + 999.0
    finally:
        loop.close()
