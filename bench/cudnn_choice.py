"""Issue 11's open GPU question: does cuDNN's benchmark mode pay for itself in the default's 12-epoch runs?

On an H200 (2026-12-04) the EfficientNet-Lite1 member's first epoch spent 42.9 s in optimiser steps against
3.5-5.4 s in each later one: most likely benchmark mode, which `core train` turns on, timing every candidate
kernel of each convolution. This runs `core train` twice with the same arguments, as the product does and with
benchmark mode off (the only difference: the flag after `prepare_hardware` set it), and prints each run's wall
time and epoch history. Bench-only: the product's choice changes only when this says so. Needs a GPU.

    python bench/cudnn_choice.py DIR --arch efficientnet_lite1 --image-size 224 --epochs 3 ...   # core train's
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.training_runs import Run, _s, last_json, run_process  # noqa: E402

MODES = ("on", "off")


def train_with_benchmark(mode: str, argv: list[str]) -> int:
    """`core train argv` in this process, cuDNN's benchmark mode ``mode`` for the whole run."""
    import torch

    from core import cli
    from core.training import train

    chosen = train.prepare_hardware

    def prepare(*args, **kwargs):
        hardware = chosen(*args, **kwargs)
        torch.backends.cudnn.benchmark = mode == "on"
        return hardware
    train.prepare_hardware = prepare
    return cli.main(["train", *argv])


def history_lines(label: str, run: Run, record: dict) -> list[str]:
    training = record.get("training", {})
    rows = [f"benchmark mode {label}: {_s(run.wall)} process wall, core train's own {_s(training.get('seconds'))}; "
            f"after the last epoch {training.get('checks_seconds')}",
            "| epoch | optimiser steps s | validation s | epoch total s |", "|---|---|---|---|"]
    before = 0.0
    for epoch in training.get("history", []):
        rows.append(f"| {epoch['epoch']} | {epoch.get('steps_seconds')} | {epoch.get('validation_seconds')} "
                    f"| {epoch['seconds'] - before:.1f} |")
        before = epoch["seconds"]
    return rows


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--run":
        sys.exit(train_with_benchmark(sys.argv[2], sys.argv[3:]))
    argv, lines = sys.argv[1:], []
    with tempfile.TemporaryDirectory(prefix="cxr-bench-cudnn-") as tmp:
        for mode in MODES:
            env = {**os.environ, "CXR_MODELS": str(Path(tmp) / mode), "CXR_JOBS": str(Path(tmp) / "jobs"),
                   "CXR_DECODE_CACHE": str(Path(tmp) / "cache")}  # shared: the first run's decoding warms it
            run = Run(f"benchmark {mode}")
            device = [] if "--device" in argv else ["--device", "cuda"]  # `--device cpu`: a check of the script
            run.wall, done = run_process([sys.executable, __file__, "--run", mode, *argv, *device], env, run)
            out = last_json(done.stdout)
            if done.returncode or "checkpoint" not in out:
                lines.append(f"benchmark mode {mode}: failed: {out.get('error') or done.stderr.strip()[-300:]}")
                continue
            record = json.loads(Path(out["checkpoint"]).with_suffix(".json").read_text())
            lines += history_lines(mode, run, record) + [""]
    print("\n".join(lines + ["(one decode cache for both: the first run's decoding warms it for the second, so compare "
                              "the epochs, the first above all, not the process walls)"]))


if __name__ == "__main__":
    main()
