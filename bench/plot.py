"""The figure of bench/proxies.py's runs: failed calls and CPU per call against the offered rate.

Two panels side by side, drawn from the documents ``proxies.py --json`` writes: the share
of failed calls, and the proxy's CPU time per call (utime + stime of all its processes,
over the calls SIPp made), both against the offered calls/s of each step.  One line per
proxy, transport and run: colour by proxy, line style by run (e.g. the per-core run,
``--pin``, solid; the 2-core run dashed), marker by transport (UDP, TCP, TLS).  The title
gives each run's date and, when the document has it, the commit it measured.

``proxies.py --plot FILE.png`` draws its run after it; ``proxies.py --from-json A.json
B.json --plot FILE.png`` draws earlier runs together.  Matplotlib's Agg canvas only: no
display, no pyplot state.  A document without a field this needs is refused with a
:class:`RunDocumentError` naming the run, the step and the field.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

PROXY_NAMES = {"sipha": "sipha", "kamailio": "Kamailio", "direct": "no proxy"}
PROXY_COLOURS = {"sipha": "tab:blue", "kamailio": "tab:orange", "direct": "tab:gray"}
TRANSPORT_ORDER = ["udp", "tcp", "tls"]
TRANSPORT_MARKERS = {"udp": "o", "tcp": "s", "tls": "^"}
TRANSPORT_FILLED = {"udp": True, "tcp": False, "tls": False}  # hollow markers: told apart at a glance
RUN_STYLES = ["-", "--", ":", "-."]
JSON_KINDS: dict[type, str] = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    dict: "an object",
    list: "an array",
}
META_FIELDS = {"started": str, "pinned": bool, "machine_text": str}


T = TypeVar("T")


class RunDocumentError(ValueError):
    """A document that is not what ``proxies.py --json`` writes: names the run, step and field."""


@dataclass(frozen=True)
class Point:
    rate: int
    failed_pct: float
    cpu_ms_per_call: float


@dataclass(frozen=True)
class Line:
    """One proxy over one transport in one run."""

    proxy: str
    transport: str
    run: int
    """Index of the run in the documents drawn (its line style)."""
    label: str
    points: list[Point]


def _field(where: str, record: Mapping[str, Any], key: str, kind: type[T]) -> T:
    if key not in record:
        raise RunDocumentError(f"{where}: no {key!r} field (a document of bench/proxies.py --json has it)")
    value = record[key]
    if kind is float:  # an int is a valid float: JSON writes 5.0 CPU seconds as 5.0 but 0 as 0
        valid = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is int:  # a bool is an int to Python, not to JSON
        valid = isinstance(value, int) and not isinstance(value, bool)
    else:
        valid = isinstance(value, kind)
    if not valid:
        raise RunDocumentError(f"{where}: {key!r} is {value!r}, not {JSON_KINDS[kind]}")
    return cast(T, value)


def point(where: str, step: Mapping[str, Any]) -> Point:
    """A step's failed share and CPU per call, computed as ``Step.failed_pct`` and
    ``Step.cpu_per_1000`` of bench/proxies.py (CPU s per 1000 calls = ms per call)."""
    offered = _field(where, step, "offered_calls", int)
    created = _field(where, step, "created", int)
    successful = _field(where, step, "successful", int)
    proxy_cpu = _field(where, step, "proxy_cpu", float)
    # calls SIPp made that did not complete, and calls it never made (cut by its -timeout bound)
    failed = max(0, created - successful) + max(0, offered - created)
    return Point(
        rate=_field(where, step, "rate", int),
        failed_pct=100.0 * failed / offered if offered else 100.0,
        cpu_ms_per_call=1000.0 * proxy_cpu / max(created, 1),
    )


def started(meta: Mapping[str, Any]) -> str:
    """When the run started, to the minute ("2026-12-03 14:25 UTC"; proxies.py writes ISO 8601)."""
    text = str(meta["started"])
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return text
    return when.strftime("%Y-%m-%d %H:%M %Z").strip()


def run_name(meta: Mapping[str, Any], where: str) -> str:
    """The run's kind: "per core" for a ``--pin`` run; else the machine's cores ("2 cores")."""
    if _field(where, meta, "pinned", bool):
        return "per core"
    cpus = re.match(r"(\d+) CPUs", _field(where, meta, "machine_text", str))
    return f"{cpus.group(1)} cores" if cpus else "all cores"


def lines_of(documents: Sequence[Mapping[str, Any]], sources: Sequence[str] | None = None) -> list[Line]:
    """The lines to draw, checked: every field read exists and has its type."""
    names = list(sources) if sources is not None else [f"run {i + 1}" for i in range(len(documents))]
    if len(names) != len(documents):
        raise ValueError(f"{len(documents)} documents but {len(names)} sources")
    if not documents:
        raise RunDocumentError("no run to draw")
    runs = []
    for index, (document, source) in enumerate(zip(documents, names, strict=True)):
        if not isinstance(document, Mapping):
            raise RunDocumentError(f"{source}: not a JSON object but {type(document).__name__}")
        meta = _field(source, document, "meta", dict)
        for name, kind in META_FIELDS.items():
            _field(f"{source} meta", meta, name, kind)
        steps = _field(source, document, "steps", list)
        if not steps:
            raise RunDocumentError(f"{source}: no steps measured")
        runs.append((index, source, run_name(meta, f"{source} meta"), started(meta), steps))
    # two runs of the same kind (two per-core runs): their dates tell their lines apart
    kinds = [run_kind for _, _, run_kind, _, _ in runs]
    lines: dict[tuple[int, str, str], Line] = {}
    for index, source, run_kind, when, steps in runs:
        run_label = f"{run_kind} {when}" if kinds.count(run_kind) > 1 else run_kind
        for number, step in enumerate(steps):
            where = f"{source} step {number + 1}"
            if not isinstance(step, Mapping):
                raise RunDocumentError(f"{where}: not a JSON object but {type(step).__name__}")
            proxy, transport = _field(where, step, "proxy", str), _field(where, step, "transport", str)
            if transport not in TRANSPORT_MARKERS:
                raise RunDocumentError(f"{where}: transport {transport!r}, not one of {TRANSPORT_ORDER}")
            line_key = (index, proxy, transport)
            if line_key not in lines:
                label = f"{PROXY_NAMES.get(proxy, proxy)}, {run_label}, {transport.upper()}"
                lines[line_key] = Line(proxy, transport, index, label, [])
            lines[line_key].points.append(point(where, step))
    for line in lines.values():
        line.points.sort(key=lambda p: p.rate)  # --interleave measured by rate, not by proxy
    proxies = list(PROXY_NAMES)
    return sorted(
        lines.values(),
        key=lambda line: (
            line.run,
            TRANSPORT_ORDER.index(line.transport),
            proxies.index(line.proxy) if line.proxy in proxies else len(proxies),
        ),
    )


def title_of(documents: Sequence[Mapping[str, Any]]) -> str:
    """What was measured, and each run's date, commit and machine."""
    runs = []
    for document in documents:
        meta = document["meta"]
        commit = str(document.get("commit") or "")
        if commit.endswith("+"):  # proxies.git_commit(): the tree had changes not committed
            commit = f"{commit[:-1]} with changes"
        when = started(meta)
        cpus = str(meta["machine_text"]).split(", ", 1)[0]  # "2 CPUs (model)"
        build = str(meta.get("sipha_build", "")).split(" (", 1)[0]  # "compiled with mypyc"
        runs.append(
            f"{run_name(meta, 'meta')}: {when}"
            + (f", commit {commit}" if commit else "")
            + f"; {cpus}"
            + (f"; sipha {build}" if build else "")
        )
    return "\n".join(["sipha vs Kamailio: SIPp uac calls through the proxy, 127.0.0.1", *runs])


def _draw(axes: Axes, lines: Sequence[Line], value: str) -> None:
    for line in lines:
        axes.plot(
            [p.rate for p in line.points],
            [getattr(p, value) for p in line.points],
            label=line.label,
            color=PROXY_COLOURS.get(line.proxy, "black"),
            linestyle=RUN_STYLES[line.run % len(RUN_STYLES)],
            marker=TRANSPORT_MARKERS[line.transport],
            markersize=6,
            markerfacecolor=None if TRANSPORT_FILLED[line.transport] else "white",
        )
    axes.set_xlabel("offered calls/s")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    axes.set_ylim(bottom=0)
    axes.grid(visible=True, alpha=0.3)


def plot_runs(
    documents: Sequence[Mapping[str, Any]],
    out: Path,
    *,
    sources: Sequence[str] | None = None,
    ok_failed_pct: float = 1.0,
) -> Path:
    """Draw ``documents`` (each as ``proxies.py --json`` writes it) into the PNG ``out``.

    ``sources`` name the documents in errors (their files); ``ok_failed_pct`` is drawn as
    the pass line of the failed panel.  Raises :class:`RunDocumentError` before drawing."""
    lines = lines_of(documents, sources)
    title = title_of(documents)
    figure = Figure(figsize=(12, 5.2 + 0.25 * len(documents)), layout="constrained")
    FigureCanvasAgg(figure)
    failed_axes, cpu_axes = figure.subplots(1, 2)
    _draw(failed_axes, lines, "failed_pct")
    failed_axes.axhline(ok_failed_pct, color="tab:red", linewidth=0.8, linestyle=(0, (4, 4)))
    failed_axes.annotate(
        f"{ok_failed_pct:g}% (pass)",
        xy=(0, ok_failed_pct),
        xycoords=("axes fraction", "data"),
        xytext=(4, 3),
        textcoords="offset points",
        color="tab:red",
        fontsize=8,
    )
    failed_axes.set_ylabel("failed calls (% of offered)")
    failed_axes.set_title("Failed calls")
    _draw(cpu_axes, lines, "cpu_ms_per_call")
    cpu_axes.set_ylabel("proxy CPU per call (ms, all its processes)")
    cpu_axes.set_title("CPU per call")
    handles, labels = failed_axes.get_legend_handles_labels()
    # as many columns as fit the figure's width (~7.5 px a character at 9 pt, 70 px the handle)
    columns = max(1, min(len(labels), 1150 // (70 + 15 * max(map(len, labels)) // 2)))
    figure.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize=9)
    figure.suptitle(title, fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png", dpi=100)
    return out
