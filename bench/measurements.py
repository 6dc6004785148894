"""docs/measurements.md: the one home of measured figures. Each benchmark rewrites its own section, between
``<!-- begin NAME -->`` and ``<!-- end NAME -->``; text outside the sections is kept as written."""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEASUREMENTS = ROOT / "docs" / "measurements.md"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cpu_times() -> list[int] | None:
    """This machine's CPU time so far, all cores together, in clock ticks, by kind (the ``cpu`` line of
    /proc/stat: user, nice, system, idle, iowait, irq, softirq, steal, ...); None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    return [int(value) for value in fields[1:]] if fields and fields[0] == "cpu" else None


def steal_share(since: list[int] | None, now: list[int] | None = None) -> float | None:
    """The share of this machine's CPU time the hypervisor gave to other machines (steal) between two
    :func:`cpu_times` readings; None where it cannot be told. On a shared virtual machine it can reach half the
    time, and every speed figure measured then is slower and noisier than the same code on a quiet one."""
    now = cpu_times() if now is None else now
    if since is None or now is None or len(since) < 8 or len(now) < 8:
        return None
    spent = [after - before for before, after in zip(since, now)]
    return spent[7] / sum(spent) if sum(spent) > 0 else None


_STARTED = cpu_times()  # when this benchmark's process started: its figures are measured from here on


def _provenance() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += " with uncommitted changes" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    stolen = steal_share(_STARTED)
    steal = "" if stolen is None else (f"; the hypervisor took {stolen:.0%} of the machine's CPU time while it ran "
                                       "(steal: the more, the slower and noisier every figure)")
    return (f"_Measured {when} at commit {commit} on {platform.machine()} ({_cpu_model()}) with {_cpus()} CPU "
            f"core(s){steal}._")


def _cpu_model() -> str:
    """The CPU's name: figures differ between CPUs of one architecture (bf16 in AMX or only in AVX-512)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU model unknown"


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def write_section(name: str, title: str, lines: list[str], path: Path = MEASUREMENTS) -> None:
    """Print ``lines`` and store them as section ``name`` of ``path`` (docs/measurements.md)."""
    body, provenance = "\n".join(lines), _provenance()
    print(f"{provenance}\n\n{body}")
    block = f"<!-- begin {name} -->\n## {title}\n{provenance}\n\n{body}\n<!-- end {name} -->"
    text = path.read_text() if path.exists() else "# Measurements\n"
    pattern = re.compile(rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
