"""What the training benches share: one timed process (:class:`Run`), how it is run, and how figures print."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measurements import cpu_times, steal_share  # noqa: E402
from core.config import settings  # noqa: E402

SOURCE = settings().data / "kermany-224" / "train"


@dataclass
class Run:
    label: str
    wall: float | None = None  # the whole process, start-up included
    phase_seconds: float | None = None  # the training phase (core train: fit, per-epoch validation included)
    phase_films: int | None = None  # films through an optimiser step in that phase
    total_seconds: float | None = None  # core train's own `seconds` (decode .. final validation)
    steps_seconds: float | None = None  # core train: of the phase, its optimiser steps (every epoch together)
    validation_seconds: float | None = None  # core train: of the phase, its per-epoch validation
    recorded: str = ""
    problem: str = ""
    steal: float | None = None  # the share of the machine's CPU time the hypervisor took during the process

    def phase_rate(self) -> float | None:
        return self.phase_films / self.phase_seconds if self.phase_films and self.phase_seconds else None


def run_process(command: list[str], env: dict[str, str],
                run: Run) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``command``; its wall time and result (``run.steal``: the CPU time stolen meanwhile)."""
    started, ticks = time.perf_counter(), cpu_times()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    run.steal = steal_share(ticks)
    return time.perf_counter() - started, done


def last_json(text: str) -> dict:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"
