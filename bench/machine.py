"""What the figures were measured on, and the process's memory."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE")


def machine() -> dict[str, Any]:
    """nproc, the CPU model, Python, and the load when asked (other work skews figures)."""
    model = ""
    with Path("/proc/cpuinfo").open(encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
        "implementation": platform.python_implementation(), "system": platform.platform(),
        "memory_gb": round(os.sysconf("SC_PHYS_PAGES") * _PAGE / 2**30, 1),
        "load_average": load_average(),
    }


def source_version(root: Path) -> dict[str, Any]:
    """The git commit measured and whether tracked files differed from it, when known."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True,  # noqa: S603, S607
                                  text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if commit is None:  # an exported tree (`git archive`) says which commit it is
        return {"commit": os.environ.get("BENCH_COMMIT"), "modified_files": None}
    changed = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "modified_files": changed.splitlines() if changed else []}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def rss_mb() -> float:
    """Resident set size now."""
    with Path("/proc/self/statm").open(encoding="utf-8") as statm:
        resident = int(statm.read().split()[1])
    return round(resident * _PAGE / 2**20, 1)


def peak_rss_mb() -> float:
    """The largest resident set size of this process image so far (VmHWM).

    Not getrusage's ru_maxrss: Linux carries that over from the parent across fork and
    exec, so a child started by a big parent would report the parent's size.
    """
    with Path("/proc/self/status").open(encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")
