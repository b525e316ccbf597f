"""A pair member for the pool test: ``sipha simulate-server`` with the pool's FQDN as outbound proxy.

``python tests/pool/member.py --listen udp:127.0.0.21:P --outbound "sip:pool.test;transport=udp"
--dns-server 127.0.0.1:PORT --request-uri sip:alice@127.0.0.31:5062 [--mode primary]
[--failover-timeout 1.0]`` runs the simulated server of ``sipha simulate-server``
(:func:`sipha.sim.server.serve`: SIGUSR1/SIGUSR2 switch modes, SIGTERM stops) whose
SIGHUP request, an OPTIONS to ``--request-uri``, goes through the outbound proxy
``--outbound``, located per RFC 3263 by :class:`sipha.net.dns.SipResolver` asking
``--dns-server`` and sent target after target (:class:`sipha.sim.outbound.OutboundProxy`).
Each outcome is one log line (:meth:`sipha.sim.outbound.Delivery.describe`), which
the test reads.

``sipha simulate-server`` has no options for a proxy given by name yet (the command
line is not this test's to change): this runner is that command with them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sipha.dnsconfig import parse_dns_server
from sipha.net.dns import SipResolver
from sipha.runtime import run_loop
from sipha.sim.outbound import OutboundProxy
from sipha.sim.server import SimulatedServer, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests/pool/member.py", description=__doc__)
    parser.add_argument("--listen", action="append", required=True, metavar="TRANSPORT:HOST:PORT")
    parser.add_argument("--mode", choices=["primary", "backup"], default="primary")
    parser.add_argument("--outbound", required=True, metavar="URI", help="sip:pool.test;transport=udp")
    parser.add_argument("--dns-server", required=True, metavar="IP[:PORT]")
    parser.add_argument("--request-uri", required=True, metavar="URI", help="where SIGHUP's OPTIONS goes")
    parser.add_argument("--failover-timeout", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    resolver = SipResolver(nameservers=[parse_dns_server(args.dns_server)], timeout=1.0)
    outbound = OutboundProxy(
        args.outbound, resolver, request_uri=args.request_uri, failover_timeout=args.failover_timeout
    )
    run_loop(serve(SimulatedServer(args.listen, args.mode), outbound))
    return 0


if __name__ == "__main__":
    sys.exit(main())
