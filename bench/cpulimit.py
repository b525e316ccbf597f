"""A fixed share of CPU for the proxy under test: one cgroup per run, with a CFS quota.

``bench/overload.py`` gives the proxy a fraction of one core so that its capacity is low
enough for SIPp, on the other core, to offer twice of it (on a 2-core machine SIPp
saturates before a whole core's worth of proxy does).  Both cgroup layouts are supported:

* **v2** (a ``cgroup2`` mount whose ``cgroup.controllers`` lists ``cpu``): the group is made
  under the mount's root, the ``cpu`` controller enabled there for child groups, and
  ``cpu.max`` holds "quota period";
* **v1** (a ``cgroup`` mount with the ``cpu`` controller, e.g. ``/sys/fs/cgroup/cpu``):
  ``cpu.cfs_period_us`` and ``cpu.cfs_quota_us``.

The group's weight is also raised (:data:`WEIGHT_V1`, :data:`WEIGHT_V2`), so that other work on
a shared machine does not take the share from it: the quota alone limits it.

v2 is preferred when both exist (a hybrid machine's v2 mount usually has no ``cpu``: the
controller is bound to v1 there).  Neither usable (no controller, not root, a container
that does not delegate ``cpu``): :class:`CpuLimitUnavailable`, saying why.

A process enters the group with :meth:`CpuLimit.wrap` (a shell writes its own pid to
``cgroup.procs``, then execs the command: every process it forks later is born inside,
so sipha's workers and Kamailio's children are limited from their first instruction).
Leaving the block kills what is still inside (all of it started by the run) and removes
the group, also on error and Ctrl-C; groups left by a run that was killed (its pid in the
name is gone) are removed by the next one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

PREFIX = "sipha-bench-"
_STALE = re.compile(rf"{PREFIX}(\d+)-\d+$")
PERIOD_US = 100_000
"""The CFS period: 100 ms (the kernel's default); the quota is this times the share."""
MIN_QUOTA_US = 1_000
"""The kernel refuses a quota below 1 ms."""
WEIGHT_V1 = 10_240
WEIGHT_V2 = 1_000
"""cpu.shares (v1, default 1,024) and cpu.weight (v2, default 100): ten times the default, so that
on a shared machine the group gets its quota when it asks, whatever else runs on its core (the
quota, not the other work, is what limits it: its capacity stays the same from run to run)."""
REMOVE_TIMEOUT = 5.0


class CpuLimitUnavailable(RuntimeError):
    """No writable cgroup cpu controller on this machine (the message says why)."""


@dataclass(frozen=True)
class Hierarchy:
    version: int
    """1 or 2."""
    root: Path
    """Where the groups are made: the v2 mount, or the v1 ``cpu`` controller's mount."""


def _mounts(text: str) -> list[tuple[str, str, set[str]]]:
    """(mount point, file system type, options) per line of /proc/self/mounts."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            point = fields[1].replace("\\040", " ")
            out.append((point, fields[2], set(fields[3].split(","))))
    return out


def find_hierarchy(mounts_text: str | None = None) -> Hierarchy:
    """The cgroup hierarchy with the cpu controller: v2 if it has it, else v1; or raise, saying why."""
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/self/mounts").read_text()
        except OSError as error:
            raise CpuLimitUnavailable(f"cannot read /proc/self/mounts: {error}") from error
    mounts = _mounts(mounts_text)
    seen = []
    for point, kind, _options in mounts:
        if kind == "cgroup2":
            controllers = Path(point, "cgroup.controllers")
            with contextlib.suppress(OSError):
                if "cpu" in controllers.read_text().split():
                    return Hierarchy(2, Path(point))
            seen.append(f"cgroup v2 at {point} without the cpu controller")
    for point, kind, options in mounts:
        if kind == "cgroup" and "cpu" in options:
            if Path(point, "cpu.cfs_quota_us").exists():
                return Hierarchy(1, Path(point))
            seen.append(f"cgroup v1 cpu at {point} without cpu.cfs_quota_us (CONFIG_CFS_BANDWIDTH off)")
    found = "; ".join(seen) if seen else "no cgroup file system mounted"
    raise CpuLimitUnavailable(
        f"no cgroup cpu controller to limit the proxy's CPU ({found}): needs cgroup v2 with the cpu"
        " controller (/sys/fs/cgroup/cgroup.controllers lists cpu) or cgroup v1's cpu controller"
        " (/sys/fs/cgroup/cpu/cpu.cfs_quota_us)"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CpuLimit:
    """A cgroup holding at most ``share`` of one CPU (0.4: 40 ms of CPU time per 100 ms)."""

    _made = 0

    def __init__(self, share: float, hierarchy: Hierarchy | None = None) -> None:
        cpus = os.cpu_count() or 1
        if not 0 < share <= cpus:
            raise ValueError(f"CPU share {share}: must be above 0 and at most {cpus} (this machine's CPUs)")
        self.share = share
        self.quota_us = max(MIN_QUOTA_US, round(share * PERIOD_US))
        self.hierarchy = hierarchy or find_hierarchy()
        CpuLimit._made += 1
        self.path = self.hierarchy.root / f"{PREFIX}{os.getpid()}-{CpuLimit._made}"

    @property
    def version(self) -> int:
        return self.hierarchy.version

    @property
    def describe(self) -> str:
        setting = (
            f"cpu.max {self.quota_us} {PERIOD_US}, cpu.weight {WEIGHT_V2}"
            if self.version == 2
            else f"cpu.cfs_quota_us {self.quota_us} / cpu.cfs_period_us {PERIOD_US}, cpu.shares {WEIGHT_V1}"
        )
        return f"cgroup v{self.version} {self.path} ({setting}: {self.share:g} of one CPU)"

    def create(self) -> None:
        """Make the group and set its quota; raise :class:`CpuLimitUnavailable` if the kernel refuses."""
        root = self.hierarchy.root
        self._remove_stale()
        if self.version == 2:
            enabled = root / "cgroup.subtree_control"
            try:
                if "cpu" not in enabled.read_text().split():
                    enabled.write_text("+cpu")
            except OSError as error:
                raise CpuLimitUnavailable(
                    f"cannot enable the cpu controller for child groups of {root} ({error}): run as root on"
                    " the host, or in a container that delegates cpu to its cgroup"
                ) from error
        try:
            self.path.mkdir()
        except OSError as error:
            raise CpuLimitUnavailable(
                f"cannot create the cgroup {self.path}: {error} (run as root)"
            ) from error
        try:
            if self.version == 2:
                (self.path / "cpu.max").write_text(f"{self.quota_us} {PERIOD_US}")
                (self.path / "cpu.weight").write_text(str(WEIGHT_V2))
            else:
                (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
                (self.path / "cpu.shares").write_text(str(WEIGHT_V1))
        except OSError as error:
            self.remove()
            raise CpuLimitUnavailable(f"cannot set the CPU quota of {self.path}: {error}") from error

    def _remove_stale(self) -> None:
        """Groups of earlier runs that were killed before they could remove theirs (and are empty)."""
        with contextlib.suppress(OSError):
            for entry in self.hierarchy.root.iterdir():
                match = _STALE.match(entry.name)
                if match and not _alive(int(match.group(1))) and not _read_pids(entry):
                    with contextlib.suppress(OSError):
                        entry.rmdir()

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def wrap(self, args: list[str]) -> list[str]:
        """``args`` run inside the group: a shell puts itself in, then execs them (children inherit)."""
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.procs_file), *args]

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the group."""
        self.procs_file.write_text(str(pid))

    def pids(self) -> list[int]:
        """The processes in the group now."""
        return _read_pids(self.path)

    def stat(self) -> dict[str, int]:
        """cpu.stat: nr_periods, nr_throttled, and throttled_time (v1, ns) or throttled_usec (v2)."""
        out: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in (self.path / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = int(value)
        return out

    def throttled_s(self) -> float:
        """Time the group's processes were held back by the quota, s."""
        stat = self.stat()
        if "throttled_usec" in stat:
            return stat["throttled_usec"] / 1e6
        return stat.get("throttled_time", 0) / 1e9

    def remove(self) -> None:
        """Kill what is still inside (started by the run), wait for it to leave, remove the group."""
        if not self.path.exists():
            return
        deadline = time.monotonic() + REMOVE_TIMEOUT
        while True:
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if not pids:
                try:
                    self.path.rmdir()
                except OSError:
                    pass  # a process still leaving (a zombie not yet reaped): try again
                else:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cgroup {self.path} not removed: processes {pids} still inside")
            time.sleep(0.05)

    def __enter__(self) -> CpuLimit:
        self.create()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.remove()


def _read_pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []
