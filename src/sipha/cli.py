"""The ``sipha`` command line (docs/design.md §4)."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from sipha import __version__, ctl
from sipha.config import ConfigError, load_config
from sipha.configtext import render_config
from sipha.logs import LOG_FORMATS, setup_logging
from sipha.reference import render_reference

EXIT_OK = 0
EXIT_BAD_CONFIG = 2
EXIT_CANNOT_START = 1


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:  # noqa: PLR2004
        raise argparse.ArgumentTypeError(f"{text!r}: a port, 1-65535")
    return int(text)


def _seconds(text: str, minimum: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds, a number") from None
    if not minimum <= value <= 86400.0:  # noqa: PLR2004
        raise argparse.ArgumentTypeError(f"{text!r}: {minimum:g} to 86400 seconds")
    return value


def _positive_seconds(text: str) -> float:
    return _seconds(text, 1.0)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: requests per second, a number") from None
    if not 0.0 <= value <= 1000.0:  # noqa: PLR2004
        raise argparse.ArgumentTypeError(f"{text!r}: 0 to 1000 per second")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipha",
        description="High-availability SIP proxy for primary/backup SIP server pairs.",
    )
    parser.add_argument("--version", action="version", version=f"sipha {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check-config",
        help="validate a configuration file and print the effective configuration",
        description=(
            "Validate FILE and the [tls] files it names (certificate, key, dates); print the effective "
            "configuration (exit 0) or every error (exit 2).  A certificate expiring within 30 days is "
            "a warning on stderr."
        ),
    )
    check.add_argument("file", type=Path, nargs="?", help="TOML file; omitted: the embedded default")
    run = commands.add_parser(
        "run",
        help="run the proxy",
        description="Run the proxy with FILE, or with the embedded default configuration (loopback).",
    )
    run.add_argument("--config", type=Path, help="TOML file; omitted: the embedded default")
    run.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log threshold"
    )
    run.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text (TIME LEVEL LOGGER: MESSAGE), json (one object per line, with the event's fields) or "
        "journal (text with a <N> priority prefix and no time, for journald); default: journal when "
        "standard error is systemd's journal stream (JOURNAL_STREAM), text otherwise",
    )
    run.add_argument(
        "--trace",
        action="store_true",
        help="log every SIP message received and sent, whole ([trace] log = true, reloads included)",
    )
    commands.add_parser(
        "config-reference",
        help="print the configuration reference (docs/configuration.md) generated from the model",
    )
    demo = commands.add_parser(
        "demo",
        help="run the proxy, two simulated SIP servers and the dashboard (start here)",
        description=(
            "Start sipha with the embedded default configuration (pair 'demo': primary "
            "udp:127.0.0.1:5070, backup udp:127.0.0.1:5080, short monitor timers), two simulated SIP "
            "servers on those ports and the dashboard on http://127.0.0.1:8080/.  A switchover swaps "
            "the servers' modes; sipha follows.  Ctrl-C or SIGTERM stops it."
        ),
    )
    demo.add_argument(
        "--switch-every",
        type=_positive_seconds,
        default=0.0,
        metavar="SECONDS",
        help="switch over every SECONDS (at least 1; detection takes about 3 s); default: only on "
        "the dashboard's button",
    )
    demo.add_argument(
        "--calls-per-second",
        type=_rate,
        default=1.0,
        metavar="N",
        help="MESSAGE requests per second sent through the proxy by a simulated endpoint (0: none); "
        "default 1",
    )
    demo.add_argument("--sip-port", type=_port, default=5060, metavar="PORT", help="SIP port (UDP+TCP); 5060")
    demo.add_argument("--admin-port", type=_port, default=8080, metavar="PORT", help="dashboard port; 8080")
    demo.add_argument(
        "--primary-port", type=_port, default=5070, metavar="PORT", help="simulated primary; 5070"
    )
    demo.add_argument(
        "--backup-port", type=_port, default=5080, metavar="PORT", help="simulated backup; 5080"
    )
    demo.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log threshold"
    )
    simulate = commands.add_parser(
        "simulate-server",
        help="run a simulated SIP server, one member of a primary/backup pair",
        description=(
            "Answer SIP like a SIP server pair member: primary mode answers (OPTIONS 200, calls like "
            "SIPp's uas), backup mode is silent or answers --backup-answer.  SIGUSR1: become primary; "
            "SIGUSR2: become backup; SIGHUP: send one OPTIONS to --proxy; SIGTERM/SIGINT: exit."
        ),
    )
    simulate.add_argument(
        "--listen",
        action="append",
        required=True,
        metavar="TRANSPORT:HOST:PORT",
        help="udp:127.0.0.1:5070 or tcp:...; repeat for several",
    )
    simulate.add_argument("--mode", choices=["primary", "backup"], default="primary", help="mode at start")
    simulate.add_argument(
        "--backup-answer",
        type=int,
        metavar="CODE",
        help="in backup mode answer every request with CODE (300-699) instead of staying silent",
    )
    simulate.add_argument(
        "--proxy", metavar="TRANSPORT:HOST:PORT", help="where SIGHUP sends an OPTIONS (the proxy)"
    )
    simulate.add_argument(
        "--answer-delay", type=float, default=0.0, metavar="SECONDS", help="time between 180 and 200"
    )
    simulate.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="METHOD[:N]",
        help="in primary mode drop the first N (default 1) requests of METHOD unanswered, their "
        "retransmissions too (one log line per drop); repeat for several methods",
    )
    simulate.add_argument(
        "--listen-delay",
        type=_delay_seconds,
        default=0.0,
        metavar="SECONDS",
        help="bind the listen addresses SECONDS after start (a member that comes up late: its ports "
        "are closed until then); default 0",
    )
    simulate.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log threshold"
    )
    ctl.add_parser(commands)
    return parser


def _delay_seconds(text: str) -> float:
    return _seconds(text, 0.0)


def _simulate_server(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sipha.config import parse_address  # noqa: PLC0415 - only for this command
    from sipha.sim.server import SimulatedServer, drop_counts, serve  # noqa: PLC0415 - asyncio and sockets
    from sipha.sip.address import Address  # noqa: PLC0415

    try:
        proxy = None
        if args.proxy:
            parsed = parse_address(args.proxy)
            proxy = Address(parsed.transport.upper(), parsed.host, parsed.port)
        server = SimulatedServer(
            args.listen,
            args.mode,
            backup_answer=args.backup_answer,
            answer_delay=args.answer_delay,
            drop=drop_counts(args.drop),
        )
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        print(f"sipha: simulate-server: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        from sipha.runtime import run_loop  # noqa: PLC0415 - asyncio and sockets only when serving

        run_loop(serve(server, proxy, listen_delay=args.listen_delay))
    except (OSError, ValueError) as error:
        print(f"sipha: cannot start: {error}", file=sys.stderr)
        return EXIT_CANNOT_START
    return EXIT_OK


def _run(path: Path | None, log_level: str, log_format: str | None = None) -> int:
    setup_logging(log_level, log_format)
    try:
        config = load_config(path)
        from sipha.app import run  # noqa: PLC0415 - asyncio and sockets only for `run`

        run(config, path)
    except ConfigError as error:
        print(f"sipha: configuration {error.source} refused:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except (OSError, ValueError) as error:
        # A listen address that cannot be bound (in use, not local), or a transport this
        # version does not serve yet (tls): said plainly, no traceback.
        print(f"sipha: cannot start: {error}", file=sys.stderr)
        return EXIT_CANNOT_START
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sipha.runtime import run_loop  # noqa: PLC0415 - asyncio
    from sipha.sim.demo import DemoOptions, PortInUse, run_demo  # noqa: PLC0415 - asyncio, aiohttp

    options = DemoOptions(
        sip_port=args.sip_port,
        admin_port=args.admin_port,
        primary_port=args.primary_port,
        backup_port=args.backup_port,
        switch_every=args.switch_every,
        calls_per_second=args.calls_per_second,
    )
    try:
        run_loop(run_demo(options))
    except PortInUse as error:
        print(f"sipha: demo: {error}", file=sys.stderr)
        return EXIT_CANNOT_START
    except (OSError, ValueError) as error:
        print(f"sipha: demo: cannot start: {error}", file=sys.stderr)
        return EXIT_CANNOT_START
    return EXIT_OK


def _check_config(path: Path | None) -> int:
    """The model's checks, then what only the files can tell: [tls] certificate, key and dates.

    The TLS contexts are built as ``sipha run`` builds them, so that a file that passes
    here is not refused at start; a certificate expiring within 30 days is a warning.
    """
    from sipha.tlsconfig import build_tls_settings, certificate_status  # noqa: PLC0415 - ssl, cryptography

    try:
        config = load_config(path)
        origin = "<embedded default>" if path is None else str(path)
        now = datetime.now(UTC)
        build_tls_settings(config, source=origin, now=now)
        status = certificate_status(config, now, source=origin)
    except ConfigError as error:
        print(f"sipha: configuration {error.source} refused:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    for warning in status.warnings if status is not None else []:
        print(f"warning: {warning}", file=sys.stderr)
    source = "the embedded default" if path is None else str(path)
    print(f"# effective configuration of {source}: OK")
    print(render_config(config), end="")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sipha`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "run":
        if args.trace:
            from sipha.trace.export import force_log  # noqa: PLC0415 - sockets only for `run`

            force_log()
        return _run(args.config, args.log_level, args.log_format)
    if args.command == "config-reference":
        print(render_reference(), end="")
        return EXIT_OK
    if args.command == "demo":
        return _demo(args)
    if args.command == "simulate-server":
        return _simulate_server(args)
    if args.command == "ctl":
        return ctl.main(args)
    parser.print_help()
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
