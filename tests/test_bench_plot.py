"""bench/plot.py: the figure of bench/proxies.py's runs, drawn from what ``--json`` writes.

The documents are built the way proxies.py's ``main`` builds them (its ``Step`` and
``Memory`` dataclasses, ``__dict__``, through JSON), so a renamed field fails here.  No
SIPp, no proxy: a figure from made-up measurements, about 2 s (importing matplotlib).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from plot import PROXY_COLOURS, RunDocumentError, lines_of, plot_runs, point  # noqa: E402
from proxies import OK_FAILED_PCT, Memory, Step  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BLANK_FIGURE_BYTES = 17_000  # the two empty panels of this size come to ~16.6 KB


def step(proxy: str, transport: str, rate: int, *, successful_share: float, cpu_ms: float) -> Step:
    """A 4-second step at ``rate``: SIPp made every call, ``successful_share`` of them completed."""
    calls = rate * 4
    successful = int(calls * successful_share)
    return Step(
        proxy=proxy,
        transport=transport,
        rate=rate,
        offered_calls=calls,
        created=calls,
        successful=successful,
        achieved_cps=successful / 4,
        proxy_cpu=cpu_ms * calls / 1000,
        uas_cpu=0.5,
        sipp_cpu=0.5,
        wall=4.0,
        load="0.10 0.20 0.30",
        p50=0.0,
        p95=4.0,
        p99=8.0,
        retransmissions=0,
        late_provisional=0,
        causes=Counter({"503 received": calls - successful}) if successful < calls else Counter(),
        proxy_drops=0,
        other_drops=0,
    )


def document(*, pinned: bool, started: str, commit: str | None = "9067f3b") -> dict[str, Any]:
    """A run as proxies.py's main writes it with --json: meta, commit, steps, memories."""
    steps = [
        step("sipha", "udp", 1000, successful_share=1.0, cpu_ms=0.45),
        step("sipha", "udp", 2000, successful_share=1.0, cpu_ms=0.47),
        step("sipha", "udp", 2500, successful_share=0.86, cpu_ms=0.41),
        step("kamailio", "udp", 1000, successful_share=1.0, cpu_ms=0.53),
        step("kamailio", "udp", 2000, successful_share=0.99, cpu_ms=0.49),
        step("kamailio", "udp", 2500, successful_share=0.63, cpu_ms=0.45),
        step("sipha", "tcp", 1000, successful_share=1.0, cpu_ms=0.59),
        step("kamailio", "tcp", 1000, successful_share=1.0, cpu_ms=0.61),
    ]
    memories = [Memory("sipha", 67_460, 94_212, 60_981, 87_502, 10_000, 0, 1)]
    meta: dict[str, Any] = {
        "command": ".venv/bin/python bench/proxies.py" + (" --pin" if pinned else ""),
        "started": started,
        "load_start": "0.10 0.20 0.30",
        "load_end": "0.40 0.50 0.60",
        "machine_text": "2 CPUs (Intel(R) Xeon(R) Processor), 24105 MiB RAM, Linux 6.18; Python 3.11.7",
        "sipha_workers": 1 if pinned else 2,
        "pinned": pinned,
        "sipha_build": "compiled with mypyc (.venv-compiled/bin/python)",
        "tls_sessions": {},
    }
    raw = {
        "meta": meta,
        "commit": commit,
        "steps": [s.__dict__ for s in steps],
        "memories": [m.__dict__ for m in memories],
    }
    loaded: dict[str, Any] = json.loads(json.dumps(raw))
    return loaded


def pixels_of(image: np.ndarray[Any, Any], colour: str) -> int:
    rgb = np.asarray(to_rgb(colour))
    return int((np.abs(image[:, :, :3] - rgb).max(axis=2) < 0.02).sum())


def test_draws_both_runs_into_a_png(tmp_path: Path) -> None:
    out = tmp_path / "figures" / "proxies.png"
    runs = [
        document(pinned=True, started="2026-12-03T14:25:35+00:00"),
        document(pinned=False, started="2026-11-22T03:25:52+00:00", commit="90f8260+"),
    ]
    assert plot_runs(runs, out, ok_failed_pct=OK_FAILED_PCT) == out
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", data[16:24])  # IHDR: the first chunk
    assert (width, height) == (1200, 570)
    assert len(data) > 3 * BLANK_FIGURE_BYTES
    # both proxies' lines are drawn, in their colours
    image = imread(out)
    assert pixels_of(image, PROXY_COLOURS["sipha"]) > 500
    assert pixels_of(image, PROXY_COLOURS["kamailio"]) > 500


def test_one_line_per_proxy_transport_and_run() -> None:
    runs = [
        document(pinned=True, started="2026-12-03T14:25:35+00:00"),
        document(pinned=False, started="2026-11-22T03:25:52+00:00"),
    ]
    labels = [line.label for line in lines_of(runs)]
    assert labels == [
        "sipha, per core, UDP",
        "Kamailio, per core, UDP",
        "sipha, per core, TCP",
        "Kamailio, per core, TCP",
        "sipha, 2 cores, UDP",
        "Kamailio, 2 cores, UDP",
        "sipha, 2 cores, TCP",
        "Kamailio, 2 cores, TCP",
    ]
    # two runs of one kind: told apart by their start
    twice = [runs[0], document(pinned=True, started="2026-12-03T12:54:10+00:00")]
    assert {line.label for line in lines_of(twice) if line.proxy == "sipha" and line.transport == "tcp"} == {
        "sipha, per core 2026-12-03 14:25 UTC, TCP",
        "sipha, per core 2026-12-03 12:54 UTC, TCP",
    }


def test_points_are_the_reports_figures() -> None:
    """Failed % and CPU per call as proxies.py's report computes them (Step.failed_pct, cpu_per_1000)."""
    steps = [
        step("kamailio", "udp", 2500, successful_share=0.63, cpu_ms=0.45),
        # SIPp made only part of the calls offered: those never made count as failed
        Step(**{**step("sipha", "udp", 3000, successful_share=0.9, cpu_ms=0.4).__dict__, "created": 11_000}),
    ]
    for made in steps:
        drawn = point("step", json.loads(json.dumps(made.__dict__)))
        assert drawn.rate == made.rate
        assert drawn.failed_pct == pytest.approx(made.failed_pct)
        assert drawn.cpu_ms_per_call == pytest.approx(made.cpu_per_1000)
    assert point("step", steps[1].__dict__).failed_pct == pytest.approx(100 * (1_000 + 200) / 12_000)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d["steps"][1].pop("proxy_cpu"), r"pin\.json step 2: no 'proxy_cpu' field"),
        (lambda d: d["meta"].pop("pinned"), r"pin\.json meta: no 'pinned' field"),
        (lambda d: d.pop("steps"), r"pin\.json: no 'steps' field"),
        (lambda d: d["steps"][0].update(rate="1000"), r"pin\.json step 1: 'rate' is '1000', not an integer"),
        (lambda d: d["steps"][0].update(transport="sctp"), r"pin\.json step 1: transport 'sctp'"),
        (lambda d: d.update(steps=[]), r"pin\.json: no steps measured"),
    ],
)
def test_a_document_not_from_the_bench_is_refused_by_name(tmp_path: Path, damage: Any, message: str) -> None:
    run = document(pinned=True, started="2026-12-03T14:25:35+00:00")
    damage(run)
    out = tmp_path / "proxies.png"
    with pytest.raises(RunDocumentError, match=message):
        plot_runs([run], out, sources=["pin.json"])
    assert not out.exists()


def test_from_json_draws_several_files(tmp_path: Path) -> None:
    """``proxies.py --from-json A B --plot F``: both reports printed, one figure; a bad file named."""
    pin, two = tmp_path / "pin.json", tmp_path / "two.json"
    pin.write_text(json.dumps(document(pinned=True, started="2026-12-03T14:25:35+00:00")))
    two.write_text(json.dumps(document(pinned=False, started="2026-11-22T03:25:52+00:00")))
    out = tmp_path / "both.png"
    args = [sys.executable, str(BENCH / "proxies.py"), "--from-json", str(pin), str(two), "--plot", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("## sipha vs Kamailio") == 2
    assert out.read_bytes()[:8] == PNG_SIGNATURE

    bad = document(pinned=True, started="2026-12-03T14:25:35+00:00")
    del bad["steps"][0]["created"]
    pin.write_text(json.dumps(bad))
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 1
    assert f"--plot: {pin} step 1: no 'created' field" in done.stderr
    assert "Traceback" not in done.stderr
