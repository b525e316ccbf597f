"""bench/cpulimit.py: a cgroup that really holds a process to its CPU share, and is gone afterwards.

A busy loop runs for 1 s of wall time inside a group with 20 % of one CPU: it may use
about 0.2 s of CPU, far from the 1 s it would use free (timing noise of a shared
machine only lowers it).  Skipped, saying why, where no cgroup cpu controller is
writable (not root, a container without cpu delegated).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from cpulimit import CpuLimit, CpuLimitUnavailable, find_hierarchy

BUSY = "import time\nend = time.monotonic() + 1.0\nwhile time.monotonic() < end:\n    pass\n"


def limit_or_skip(share: float) -> CpuLimit:
    try:
        limit = CpuLimit(share)
        limit.create()
    except CpuLimitUnavailable as error:
        pytest.skip(str(error))
    return limit


def test_a_busy_loop_gets_its_share_and_the_group_is_removed() -> None:
    limit = limit_or_skip(0.2)
    try:
        args = limit.wrap([sys.executable, "-c", BUSY])
        before = os.times()
        child = subprocess.Popen(args)
        time.sleep(0.2)
        assert limit.pids() == [child.pid]  # the shell exec'd the command in place, inside the group
        assert child.wait(timeout=20) == 0
        after = os.times()
        used = (after.children_user + after.children_system) - (before.children_user + before.children_system)
        assert used < 0.5, f"the busy loop used {used:.2f} s of CPU in 1 s under a 20 % quota"
        assert limit.stat().get("nr_throttled", 0) > 0  # the kernel did hold it back
    finally:
        limit.remove()
    assert not limit.path.exists()


def test_what_is_left_inside_is_killed_on_removal() -> None:
    limit = limit_or_skip(0.5)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        limit.add(child.pid)
        assert limit.pids() == [child.pid]
        start = time.monotonic()
        limit.remove()
        assert child.wait(timeout=5) < 0  # killed by a signal
        assert time.monotonic() - start < 5
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        limit.remove()
    assert not limit.path.exists()


def test_no_cpu_controller_is_refused_saying_what_is_needed() -> None:
    mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n"
    with pytest.raises(CpuLimitUnavailable, match=r"cpu\.cfs_quota_us") as refused:
        find_hierarchy(mounts)
    assert "cgroup.controllers" in str(refused.value)


def test_a_share_beyond_the_machine_is_refused() -> None:
    with pytest.raises(ValueError, match="at most"):
        CpuLimit((os.cpu_count() or 1) + 1)
    with pytest.raises(ValueError, match="above 0"):
        CpuLimit(0)
