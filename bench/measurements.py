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
    return f"_Measured {when} at commit {commit} on {platform.machine()} ({_cpu_model()}) with {_cpus()} CPU core(s)._"


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
    body = "\n".join(lines)
    print(body)
    block = f"<!-- begin {name} -->\n## {title}\n{_provenance()}\n\n{body}\n<!-- end {name} -->"
    text = path.read_text() if path.exists() else "# Measurements\n"
    pattern = re.compile(rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
