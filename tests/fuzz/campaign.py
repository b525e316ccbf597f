"""Run the fuzz harnesses in subprocesses: the short run of CI, and the long run of ``make fuzz``.

Each target runs under libFuzzer (:mod:`tests.fuzz.runner`) in its own process, from the
seed corpus (:mod:`tests.fuzz.seeds`) and the corpus it grew so far; crashes (an
uncaught exception, an input running past ``-timeout``) are written to
``<out>/crashes/<target>/``.  libFuzzer stops at the first crash: the long run starts
it again (the corpus kept) until the target's time is spent, so one run can find
several.

``python -m tests.fuzz.campaign [--seconds S] [--out DIR] [target ...]`` (``make fuzz``):
exit status 1 if anything crashed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tests.fuzz.seeds import TARGETS, write

ROOT: Final = Path(__file__).resolve().parent.parent.parent
INPUT_TIMEOUT: Final = 10
"""Seconds one input may take before libFuzzer calls it a hang (a crash)."""
STARTUP: Final = 60.0
"""Seconds allowed on top of the fuzzing time: start, instrumentation, the corpus replayed."""
_EXECUTED_RE: Final = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_FINDINGS: Final = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")


@dataclass
class Outcome:
    """What fuzzing one target did."""

    target: str
    executions: int = 0
    seconds: float = 0.0
    runs: int = 0
    """libFuzzer processes started (one more after each crash)."""
    findings: list[Path] = field(default_factory=list)
    corpus: int = 0
    log: Path | None = None
    failures: list[str] = field(default_factory=list)
    """The end of the output of each run that did not end cleanly."""

    def line(self) -> str:
        found = ", ".join(path.name for path in self.findings) or "none"
        return (
            f"FUZZ {self.target}: {self.executions} executions in {self.seconds:.0f} s "
            f"({self.runs} run(s)), corpus {self.corpus} inputs, crashes: {found}"
        )


def fuzz(target: str, out: Path, *, seconds: int, runs: int | None = None, restart: bool = False) -> Outcome:
    """Fuzz ``target`` for ``seconds`` (and at most ``runs`` executions); ``restart`` after crashes."""
    seeds, corpus, crashes = out / "seeds" / target, out / "corpus" / target, out / "crashes" / target
    for folder in (corpus, crashes):
        folder.mkdir(parents=True, exist_ok=True)
    if not seeds.is_dir():
        write(out / "seeds")
    outcome = Outcome(target, log=out / f"{target}.log")
    # No coverage measurement in the child (pytest-cov would start it): atheris does its own.
    env = {key: value for key, value in os.environ.items() if not key.startswith("COV_CORE_")}
    start = time.monotonic()
    with outcome.log.open("w") as log:  # type: ignore[union-attr]
        while True:
            left = seconds - (time.monotonic() - start)
            if left < 1 or (outcome.runs and not restart):
                break
            command = [
                sys.executable, "-m", f"tests.fuzz.fuzz_{target}",
                f"-max_total_time={int(left)}", f"-timeout={INPUT_TIMEOUT}", "-print_final_stats=1",
                f"-artifact_prefix={crashes}/", str(corpus), str(seeds),
            ]  # fmt: skip
            if runs is not None:
                command.append(f"-runs={runs - outcome.executions}")
            result = subprocess.run(
                command,
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=left + STARTUP,
                check=False,
            )
            log.write(result.stdout + result.stderr)
            outcome.runs += 1
            outcome.executions += sum(int(n) for n in _EXECUTED_RE.findall(result.stderr))
            if result.returncode != 0:
                outcome.failures.append(f"exit status {result.returncode}:\n{result.stderr[-4000:]}")
            if runs is not None and outcome.executions >= runs:
                break
    outcome.seconds = time.monotonic() - start
    outcome.findings = sorted(path for path in crashes.iterdir() if path.name.startswith(_FINDINGS))
    outcome.corpus = sum(1 for _ in corpus.iterdir())
    return outcome


def main(argv: list[str] | None = None) -> int:
    """``make fuzz``: every target (or the ones named) for ``--seconds`` each; 1 if anything crashed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=600, help="fuzzing time per target (default 600)")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "artifacts" / "fuzz")
    parser.add_argument("targets", nargs="*", metavar="target", help=f"some of {', '.join(TARGETS)} (all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}: the targets are {', '.join(TARGETS)}")
    write(args.out / "seeds")
    crashed = False
    for target in args.targets or TARGETS:
        outcome = fuzz(target, args.out, seconds=args.seconds, restart=True)
        print(outcome.line(), flush=True)
        print(f"  log: {outcome.log}; crashes in {args.out / 'crashes' / target}", flush=True)
        crashed = crashed or bool(outcome.findings or outcome.failures)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
