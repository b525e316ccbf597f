"""The fuzz harnesses in CI: every seed passes, the recorded call flows still reach their end,
and a short coverage-guided run of each harness (atheris, in a subprocess) finds no crash.

The long run is ``make fuzz`` (tests/fuzz/README.md).  About 45 s in all on 2 cores: each
short run stops at its execution count or after :data:`SHORT_SECONDS` of fuzzing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

import pytest

from sipha.sip import Request, Response, parse_message
from tests.fuzz import fuzz_core, fuzz_framer, fuzz_parser, seeds
from tests.fuzz.campaign import fuzz
from tests.proxy.support import ALICE, BACKUP, PRIMARY

HARNESSES: Final[dict[str, Callable[[bytes], None]]] = {
    "parser": fuzz_parser.fuzz_one_input,
    "framer": fuzz_framer.fuzz_one_input,
    "core": fuzz_core.fuzz_one_input,
}
SHORT_SECONDS: Final = 12
SHORT_RUNS: Final = {"parser": 12_000, "framer": 8_000, "core": 1_000}


@pytest.mark.parametrize("target", seeds.TARGETS)
def test_every_seed_passes_its_harness(target: str) -> None:
    corpus = dict(seeds.corpus(target))
    assert len(corpus) >= 50, sorted(corpus)
    for data in corpus.values():
        HARNESSES[target](data)


def test_scenario_messages_are_what_sipp_sends() -> None:
    """Every SIPp keyword filled in (a new one goes into seeds._KEYWORDS); each message parses valid."""
    messages = seeds.scenario_messages()
    assert len(messages) >= 20, sorted(messages)
    for name, data in messages.items():
        unfilled = re.findall(rb"\[[^]\r\n]*\]", data.split(b"\r\n\r\n")[0])
        assert not unfilled, f"{name}: SIPp keywords {unfilled} have no value in tests/fuzz/seeds.py"
        parse_message(data).validate()


def sent_summary(data: bytes) -> list[tuple[int, str]]:
    """(destination port, "METHOD" or "status CSeq-method") of everything a core sent replaying ``data``."""
    h = fuzz_core.replay(data)
    assert h is not None
    summary: list[tuple[int, str]] = []
    for send in h.sent:
        message = send.message
        if isinstance(message, Request):
            summary.append((send.destination.port, message.method))
        else:
            assert isinstance(message, Response)
            method = (message.get("cseq") or "").rpartition(" ")[2]  # a 400 may answer a request without CSeq
            summary.append((send.destination.port, f"{message.status} {method}"))
    return summary


@pytest.mark.parametrize(
    ("flow", "expected"),
    [
        ("call-0", [(PRIMARY.port, "ACK"), (PRIMARY.port, "BYE"), (ALICE.port, "200 BYE")]),
        ("call-3", [(PRIMARY.port, "ACK"), (PRIMARY.port, "BYE"), (ALICE.port, "200 BYE")]),
        ("callee-bye-0", [(ALICE.port, "BYE"), (PRIMARY.port, "200 BYE")]),
        ("cancel-0", [(PRIMARY.port, "CANCEL"), (ALICE.port, "487 INVITE"), (PRIMARY.port, "ACK")]),
        ("failover", [(BACKUP.port, "INVITE"), (ALICE.port, "200 INVITE")]),
        ("transport-error", [(ALICE.port, "500 INVITE")]),
        ("tcp-0", [(ALICE.port, "486 INVITE")]),
        ("draining", [(ALICE.port, "503 INVITE"), (PRIMARY.port, "BYE")]),
        ("call-small-limits", [(PRIMARY.port, "BYE"), (ALICE.port, "200 BYE")]),
        ("overload", [(PRIMARY.port, "INVITE"), (ALICE.port, "503 INVITE")]),
    ],
)
def test_recorded_flows_reach_their_end(flow: str, expected: list[tuple[int, str]]) -> None:
    """The core seeds replay the calls they were recorded from (deterministic tokens, fake clock)."""
    summary = sent_summary(seeds.core_flows()[flow])
    missing = [item for item in expected if item not in summary]
    assert not missing, summary


@pytest.mark.parametrize("target", seeds.TARGETS)
def test_short_fuzz_run_finds_no_crash(
    target: str, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path_factory.mktemp(f"fuzz-{target}")
    outcome = fuzz(target, out, seconds=SHORT_SECONDS, runs=SHORT_RUNS[target])
    with capsys.disabled():
        print(f"\n{outcome.line()}")
    reproduce = "; ".join(f"python -m tests.fuzz.fuzz_{target} {path}" for path in outcome.findings)
    assert not outcome.findings, f"reproduce: {reproduce}\n" + "\n".join(outcome.failures)
    assert not outcome.failures, "\n".join(outcome.failures)
    # Every seed was run, and then mutations of them.
    assert outcome.executions > sum(1 for _ in seeds.corpus(target)), outcome.line()
