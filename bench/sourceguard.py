"""What ``[limits]`` costs per message: the per-source guard's check, against the core's cost per call.

Times :meth:`sipha.proxy.ratelimit.SourceGuard.check` (what
:meth:`sipha.dispatch.Dispatcher.on_message` calls for every message before anything
else) on the datagrams of SIPp's ``uac`` call flow, as ``bench/core.py`` records them
(INVITE, 180, 200, ACK, BYE, 200 per call), the caller's requests given a User-Agent as a
phone sends one (SIPp's have none; the check reads every request's header section either way):

* ``off``: ``scanner-user-agents = []`` and no ``source-rate``: the guard is not called
  (one attribute read);
* ``words``: the default: the scanner words, no rate; every source checked (no member):
  the INVITE's User-Agent searched, the ACK and BYE skipped by their first letter;
* ``words+rate``: the scanner words and a rate no call reaches (every message takes a token);
* ``member``: the same, the SIP server's messages exempt (by IP, as in a real configuration:
  the member here has an IP of its own).

    .venv/bin/python bench/sourceguard.py              # 20,000 calls, best of 5
    .venv-compiled/bin/python bench/sourceguard.py     # the compiled build (mypyc)

Prints the CPU ns per datagram of each mode and, for scale, what one call costs the core
(``bench/core.py``'s replay of the same datagrams).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from core import UAS, record, replay
from sipha.limitsconfig import SCANNER_USER_AGENTS
from sipha.proxy.ratelimit import ADMIT, GuardSettings, SourceGuard
from sipha.sip.address import Address

WORDS = tuple(word.lower().encode() for word in SCANNER_USER_AGENTS)
MEMBER_IP = "127.0.0.2"
AGENT = b"\r\nUser-Agent: Linphone-Desktop/5.2.0 (belle-sip/5.2.0)\r\nContent-Length"
MODES = {
    "off": GuardSettings(),
    "words": GuardSettings(scanner_agents=WORDS),
    "words+rate": GuardSettings(scanner_agents=WORDS, rate=1e9, burst=1e9),
    "member": GuardSettings(scanner_agents=WORDS, rate=1e9, burst=1e9, exempt=frozenset({MEMBER_IP})),
}


def time_mode(settings: GuardSettings, messages: list[tuple[bytes, str]], repeat: int) -> float:
    """Best CPU ns per message over ``repeat`` runs of the dispatcher's check."""
    best = float("inf")
    for _ in range(repeat):
        guard = SourceGuard(settings)
        now = 0.0
        started = time.process_time()
        for data, host in messages:
            if guard.enabled and guard.check(data, host, now) != ADMIT:
                raise AssertionError("a call's message was dropped")
            now += 1e-5
        best = min(best, time.process_time() - started)
    return best / len(messages) * 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    datagrams, _ = record(options.calls)
    # The member's messages from an IP of its own (bench/core.py has everything on 127.0.0.1).
    member = Address(UAS.transport, MEMBER_IP, UAS.port)
    messages = [
        (d.data, member.host)
        if d.source == UAS
        else (d.data.replace(b"\r\nContent-Length", AGENT), d.source.host)
        for d in datagrams
    ]
    with_agent = sum(b"\nUser-Agent:" in data for data, _ in messages)
    per_call_core = min(replay(datagrams, 5_000.0)[0] for _ in range(2)) / options.calls * 1e9
    per_call = len(messages) / options.calls
    print(f"{options.calls} calls, {per_call:.0f} datagrams per call ({with_agent} with a User-Agent);")
    print(f"the core: {per_call_core / 1000:.1f} us CPU per call")
    for name, settings in MODES.items():
        ns = time_mode(settings, messages, options.repeat)
        share = ns * per_call / per_call_core * 100
        print(f"  {name:<11} {ns:7.0f} ns per datagram, {share:5.2f} % of a call's core CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
