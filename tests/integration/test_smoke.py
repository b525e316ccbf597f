"""The shortest end-to-end check: SIPp's uac -> sipha -> SIPp's uas, over UDP."""

from pathlib import Path

import pytest

from tests.integration.support import SIPP, Pair, free_port, run_sipha, run_sipp_client, sipp_server

pytestmark = [pytest.mark.integration, pytest.mark.skipif(SIPP is None, reason="sipp not installed")]


def test_calls_go_through(tmp_path: Path) -> None:
    primary, backup = free_port(), free_port()
    # The server first (answering OPTIONS with -aa), so that the monitor's first probe
    # finds the primary alive.
    with (
        sipp_server(tmp_path, primary, "-aa"),
        run_sipha(tmp_path, [Pair("demo", primary, backup)]) as proxy,
    ):
        result = run_sipp_client(tmp_path, f"127.0.0.1:{proxy.port}", "-m", "50", "-r", "50", timeout=30)
    assert result.failed == 0, result.errors
    assert result.successful == 50
