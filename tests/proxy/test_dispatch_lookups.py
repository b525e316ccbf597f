"""The dispatcher hands the core's RFC 3263 lookups to the locator, and its answers back.

The transports are test_dispatch's recording fake; the locator is one too (the
real one, on a loop with a resolver, is tests/net/test_locate.py; the whole chain
with dnsmasq is tests/test_dns_config.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipha.dispatch import Dispatcher
from sipha.net.locate import Wanted
from sipha.sip import parse_message
from sipha.sip.address import Address
from tests.proxy.support import PRIMARY, PROXY, harness, invite
from tests.proxy.test_dispatch import SentLog

TARGET = Address("UDP", "192.0.2.1", 5060)
SECOND = Address("UDP", "192.0.2.2", 5060)


@dataclass
class Locator:
    """What a :class:`sipha.net.locate.Locator` was asked."""

    asked: list[Wanted] = field(default_factory=list)
    failed_targets: list[Address] = field(default_factory=list)

    def locate(self, wanted: Wanted) -> None:
        self.asked.append(wanted)

    def failed(self, target: Address) -> None:
        self.failed_targets.append(target)


def dispatcher(locator: Locator | None) -> tuple[Dispatcher, SentLog]:
    dispatch = Dispatcher(on_event=lambda event: None, count_final=lambda method, status: None)
    transports = SentLog()
    dispatch.core = harness().core
    dispatch.transports = transports
    dispatch.clock = lambda: 10.0
    dispatch.locator = locator  # type: ignore[assignment]
    return dispatch, transports


def from_member(dispatch: Dispatcher) -> None:
    dispatch.on_message(invite(uri="sip:bob@carrier.example.net", via_host="127.0.0.1:5070"), PRIMARY, PROXY)
    dispatch.on_batch_end()


def statuses(transports: SentLog) -> list[int]:
    found = []
    for data, _ in transports.sent:
        if data.startswith(b"SIP/2.0 "):
            found.append(int(data.split(b" ", 2)[1]))
    return found


def test_a_lookup_goes_to_the_locator_and_its_answer_to_the_core() -> None:
    locator = Locator()
    dispatch, transports = dispatcher(locator)
    from_member(dispatch)
    (wanted,) = locator.asked
    assert (wanted.host, wanted.port, wanted.transport, wanted.secure) == (
        "carrier.example.net",
        None,
        None,
        False,
    )
    assert statuses(transports) == [100]
    dispatch.on_located(wanted.key, [TARGET, SECOND])  # sent at once: not waiting for a batch
    forwarded = [parse_message(data) for data, destination in transports.sent if destination == TARGET]
    assert [message.method for message in forwarded] == ["INVITE"]  # type: ignore[union-attr]
    dispatch.on_transport_error(TARGET, "port unreachable")
    assert locator.failed_targets == [TARGET]  # told to the locator: tried last for a while
    assert [destination for _, destination in transports.sent][-1] == SECOND


def test_without_a_locator_a_host_name_gives_no_target() -> None:
    dispatch, transports = dispatcher(None)
    from_member(dispatch)
    assert statuses(transports) == [100, 408]  # §16.6 step 7: an empty set is exhausted
