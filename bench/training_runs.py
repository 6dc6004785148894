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


def drift(before: float, after: float) -> str:
    """The machine's own speed between two measurements of the same bare step: what a ratio across them is worth."""
    moved = after / before - 1
    return (f"the same bare bf16 step ran {abs(moved):.0%} {'faster' if moved > 0 else 'slower'} after the runs "
            f"than before them ({after:.1f} against {before:.1f} films/s)"
            + ("; with the machine's speed moving that much, ratios across the two are not a measurement of the code"
               if abs(moved) > 0.10 else ""))


def targets(seed: Run, best: Run, bare_bf16: float, bare_fp32: float, title: str,
            bare_after: float | None = None, bare_label: str = "bare bf16 + channels_last step") -> list[str]:
    lines = [title]
    if seed.phase_rate() and not seed.problem:
        lines.append(f"- the seed loop's training phase runs at {seed.phase_rate() / bare_fp32:.0%} of the bare "
                     "fp32 step")
    if best.problem or seed.problem:
        return lines + ["- core train bf16 vs the seed loop: not measured (see the failed run above)"]
    lines.append(f"- `{best.label}` end to end: {seed.wall / best.wall:.2f}x the seed-style loop (target >= 2.5x)")
    if best.phase_seconds:
        lines.append(f"- what 2.5x leaves: {_s(seed.wall / 2.5)} for the whole process, so with its training phase as "
                     f"measured ({_s(best.phase_seconds)}) {_s(seed.wall / 2.5 - best.phase_seconds)} for everything "
                     f"else (start-up, decoding, the checks after the last epoch), which took "
                     f"{_s(best.wall - best.phase_seconds)}; with nothing but the training phase the run would be "
                     f"{seed.wall / best.phase_seconds:.2f}x, and with nothing but bare steps "
                     f"{seed.wall * bare_bf16 / best.phase_films:.2f}x")
    lines.append(f"- its training phase: {best.phase_rate():.1f} films/s = {best.phase_rate() / bare_bf16:.1%} of the "
                 f"{bare_label}, {bare_bf16:.1f} films/s (target >= 90 %)"
                 + (f"; {best.phase_rate() / bare_after:.1%} of it measured again after the runs"
                    if bare_after else ""))
    if bare_after:
        lines.append(f"- {drift(bare_bf16, bare_after)}")
    if best.steps_seconds:
        rest = max(0.0, best.phase_seconds - best.steps_seconds - best.validation_seconds)
        steps_rate = best.phase_films / best.steps_seconds
        lines.append(f"- where that phase went: optimiser steps {_s(best.steps_seconds)} ({steps_rate:.1f} films/s = "
                     f"{steps_rate / bare_bf16:.0%} of the bare step; they also turn uint8 films into floats and "
                     f"augment them), per-epoch validation {_s(best.validation_seconds)}, saving the run's state and "
                     f"the rest {_s(rest)}")
    return lines
