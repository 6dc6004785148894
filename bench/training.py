"""Training speed (issue 11), all in one run so the ratios compare like with like:

- the seed-style notebook loop (bench/seed_loop.py) on a seeded, class-balanced sample of kermany-224/train;
- `python -m core train` on the same folder, fp32 and bf16, each a fresh process with an empty decode cache,
  then bf16 again with that cache warm (decoded films and the population check's film features); into
  temporary checkpoint, job and cache folders (the repository's checkpoints/ is never written). Every
  `core train` fits its model's population check (ImageNet features of every training and validation film
  here), which the seed loop does not do;
- a bare training step (random tensors, no I/O) of the ResNet-18 core builds, fp32, fp32 + channels_last,
  bf16 autocast + channels_last with glibc's allocator as a notebook has it, then bf16 again with freed memory
  kept for reuse as `core train` asks on the CPU (core.models.host_memory): the step the 90 % target compares
  `core train`'s training phase with, so what it adds over pure compute shows;
- the same on CUDA when a GPU is present, then issue 11's GPU target: the default's recipe (three networks and
  their ensemble) retrained on the whole training folder, 12 epochs a member (bench/default_recipe.py).

Prints figures and rewrites the "training" section of docs/measurements.md; not a pass/fail test.
``--quick`` (64 films, 1 epoch, 64 px) checks the script in a minute and only prints. The GPU target alone, for a
short GPU session: bench/default_recipe.py.

    .venv/bin/python bench/training.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench.default_recipe import default_recipe, default_recipe_lines  # noqa: E402
from bench.measurements import cpu_times, steal_share, write_section  # noqa: E402
from bench.training_runs import SOURCE, Run, _rate, _s, last_json, run_process, targets  # noqa: E402
from core.models.build import build_model  # noqa: E402
from core.models.host_memory import keep_freed_memory  # noqa: E402

BF16 = "bf16 autocast + channels_last"
KEPT = "bf16 autocast + channels_last, freed memory kept (as core train runs it)"
STEAL = "steal"


@dataclass(frozen=True)
class Setup:
    films: int
    epochs: int
    image_size: int
    batch_size: int
    timed_steps: int
    quick: bool = False

    @classmethod
    def from_args(cls, args) -> "Setup":
        return cls(64, 1, 64, 32, 3, quick=True) if args.quick else cls(600, 2, 224, 32, 8)


def sample_folder(dest: Path, films: int, seed: int = 0) -> list[int]:
    """``dest/CLASS/`` symlinks to a seeded sample of ``films`` films, the same number from each class, each read once
    here so that every run after finds them in the page cache alike (the seed loop, run first, paid the cold reads
    alone: a review)."""
    rng, counts = np.random.default_rng(seed), []
    classes = sorted(d for d in SOURCE.iterdir() if d.is_dir())
    for class_dir in classes:
        paths = sorted(p for p in class_dir.iterdir() if p.is_file())
        chosen = sorted(rng.choice(len(paths), size=films // len(classes), replace=False))
        (dest / class_dir.name).mkdir(parents=True)
        for i in chosen:
            (dest / class_dir.name / paths[i].name).symlink_to(paths[i])
            paths[i].read_bytes()
        counts.append(len(chosen))
    return counts


def seed_loop(folder: Path, setup: Setup, device: str) -> Run:
    run = Run(f"seed-style loop ({device}): ImageFolder, PIL every epoch, fp32, Adam")
    command = [sys.executable, str(ROOT / "bench" / "seed_loop.py"), str(folder), "--epochs", str(setup.epochs),
               "--image-size", str(setup.image_size), "--batch-size", str(setup.batch_size), "--device", device]
    run.wall, done = run_process(command, dict(os.environ), run)
    out = last_json(done.stdout)
    if done.returncode or not out:
        run.problem = (done.stderr or done.stdout).strip()[-300:]
        return run
    run.phase_seconds, run.phase_films = out["loop_seconds"], out["films_trained"]
    return run


def core_train(folder: Path, setup: Setup, work: Path, label: str, flags: list[str], cache: Path,
               arch: str = "resnet18") -> Run:
    run = Run(f"core train {' '.join(flags)}".strip() + label)
    checkpoints = work / f"checkpoints-{len(list(work.glob('checkpoints-*')))}"
    env = {**os.environ, "CXR_MODELS": str(checkpoints), "CXR_JOBS": str(work / "jobs"),
           "CXR_DECODE_CACHE": str(cache), "CXR_AUDIT_LOG": str(work / "audit.jsonl")}  # not the site's log
    command = [sys.executable, "-m", "core", "train", str(folder), "--arch", arch, "--epochs",
               str(setup.epochs), "--image-size", str(setup.image_size), "--batch-size", str(setup.batch_size),
               *(["--no-pretrained"] if arch == "resnet18" else []), *flags]
    run.wall, done = run_process(command, env, run)
    out = last_json(done.stdout)
    if done.returncode or "checkpoint" not in out:
        run.problem = (out.get("error") or done.stderr.strip()[-300:] or f"exit {done.returncode}")
        return run
    record = json.loads(Path(out["checkpoint"]).with_suffix(".json").read_text())
    history, n_train = record["training"]["history"], record["data"]["train"]["n"]
    batch = min(setup.batch_size, n_train)
    run.total_seconds, run.phase_seconds = out["seconds"], history[-1]["seconds"]
    run.phase_films = len(history) * (n_train // batch) * batch
    if all(h.get("steps_seconds") is not None and h.get("validation_seconds") is not None for h in history):
        run.steps_seconds = sum(h["steps_seconds"] for h in history)
        run.validation_seconds = sum(h["validation_seconds"] for h in history)
    training = record["training"]
    entries = sum(1 for p in cache.rglob("*") if p.is_file()) if cache.is_dir() else 0
    checks = "; ".join(f"{step} {seconds:.1f} s" for step, seconds in training.get("checks_seconds", {}).items())
    run.recorded = (f"recorded: {training.get('device', '?')}, {training.get('precision', 'precision not recorded')}"
                    f"; decode cache now {entries} files" + (f"; after the last epoch: {checks}" if checks else ""))
    return run


def bare_steps(setup: Setup, device: torch.device,
               variants: tuple[str, ...] = ("fp32", "fp32 + channels_last", BF16)) -> dict[str, float]:
    """Films/s of one training step of core's ResNet-18 on random tensors, per variant (median step); under
    "steal", the share of CPU time the hypervisor took meanwhile (where /proc/stat tells)."""
    rates, ticks = {}, cpu_times()
    for variant in variants:
        torch.manual_seed(0)
        model = build_model("resnet18", 2, setup.image_size, False)[0].to(device).train()
        images = torch.rand(setup.batch_size, 1, setup.image_size, setup.image_size, device=device)
        labels = torch.randint(0, 2, (setup.batch_size,), device=device)
        if "channels_last" in variant:
            model = model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        optimiser, loss_fn = torch.optim.AdamW(model.parameters(), lr=1e-3), nn.CrossEntropyLoss()
        times = []
        for step in range(2 + setup.timed_steps):  # two warm-up steps: first calls allocate and pick kernels
            started = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant.startswith("bf16")):
                loss = loss_fn(model(images), labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            loss.item()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        rates[variant] = setup.batch_size / statistics.median(times[2:])
    if (stolen := steal_share(ticks)) is not None:
        rates[STEAL] = stolen
    return rates


def cpu_bf16() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    return ", ".join(f for f in ("avx512_bf16", "amx_bf16") if f in flags) or "none (bf16 is emulated)"


def run_table(runs: list[Run], seed: Run, setup: Setup) -> list[str]:
    films = setup.films * setup.epochs
    rows = ["| run | process wall | training phase | films/s end to end | films/s training phase | speed-up vs seed "
            "| per film trained |", "|---|---|---|---|---|---|---|"]
    for run in runs:
        if run.problem:
            rows.append(f"| {run.label} | failed: {run.problem.replace('|', '/')} | | | | | |")
            continue
        compared = seed.wall and not seed.problem
        speed_up = f"{seed.wall / run.wall:.2f}x" if compared else "—"
        # the ratio is end to end; `core train` trains on fewer films than the folder holds (its
        # patient-disjoint validation fifth and a last partial batch left out), so per film trained its speed-up
        # is smaller (a review): both are shown
        per_film = f"{(run.phase_films / run.wall) / (seed.phase_films / seed.wall):.2f}x" \
            if compared and run.phase_films and seed.phase_films else "—"
        rows.append(f"| {run.label} | {_s(run.wall)} | {_s(run.phase_seconds)} ({run.phase_films} films) "
                    f"| {_rate(films / run.wall)} | {_rate(run.phase_rate())} | {speed_up} | {per_film} |")
    notes = [f"- {run.label}: start-up, imports, shipping {_s(run.wall - run.total_seconds)}; decode, split, "
             f"build, final validation {_s(run.total_seconds - run.phase_seconds)}; {run.recorded}"
             for run in runs if run.total_seconds is not None and not run.problem]
    if any(run.steal is not None for run in runs):
        notes.append("- CPU time the hypervisor took during each run (steal): " + ", ".join(
            f"{run.label.split(':')[0]} {run.steal:.0%}" for run in runs if run.steal is not None))
    return rows + ([""] + notes if notes else [])


def bare_table(rates: dict[str, dict[str, float]], setup: Setup, after: dict[str, float]) -> list[str]:
    """The bare steps measured before every run, and the CPU's bf16 step again after them (``after``)."""
    devices = list(rates)
    rows = [f"| bare step, {setup.image_size} px, batch {setup.batch_size} | "
            + " | ".join(f"{d} films/s" for d in devices) + " |", "|---" * (1 + len(devices)) + "|"]
    for variant in (v for v in rates[devices[0]] if v != STEAL):
        rows.append(f"| {variant} | " + " | ".join(_rate(rates[d].get(variant)) for d in devices) + " |")
    blanks = " |" * (len(devices) - 1)  # the CPU's column alone: the other devices' cells stay empty
    again = KEPT if KEPT in rates[devices[0]] else BF16  # the process allocates as it did last
    for label, measured in ((None, rates[devices[0]]), (f"{again}, again after the core train runs", after)):
        if label and not measured:  # not measured again (the GPU session's table)
            continue
        if label:
            rows.append(f"| {label} | {_rate(measured[BF16])} |{blanks}")
        if STEAL in measured:
            rows.append(f"| CPU time taken by the hypervisor meanwhile | {measured[STEAL]:.0%} |{blanks}")
    return rows


def cpu_training(work: Path, setup: Setup) -> tuple[list[Run], Run]:
    """The seed loop, then core train fp32 and bf16 with empty decode caches, then bf16 with its cache warm."""
    runs = [seed_loop(work / "films", setup, "cpu")]
    for precision in ("fp32", "bf16"):
        runs.append(core_train(work / "films", setup, work, "", ["--device", "cpu", "--precision", precision],
                               work / f"cache-{precision}"))
    runs.append(core_train(work / "films", setup, work, " (decode cache warm)",
                           ["--device", "cpu", "--precision", "bf16"], work / "cache-bf16"))
    return runs, runs[2]


def cuda_training(work: Path, setup: Setup) -> list[Run]:
    """On a GPU: the seed loop and core train bf16 on the same folder."""
    return [seed_loop(work / "films", setup, "cuda"),
            core_train(work / "films", setup, work, "", ["--device", "cuda", "--precision", "bf16"],
                       work / "cache-cuda")]


def cuda_lines(runs: list[Run], rates: dict[str, float], setup: Setup) -> list[str]:
    return ["", f"CUDA ({torch.cuda.get_device_name()}):", *run_table(runs, runs[0], setup), "",
            *targets(runs[0], runs[1], rates[BF16], rates["fp32"], "On CUDA:")]


def cuda_only(setup: Setup) -> list[str]:
    """The CUDA figures alone (the GPU session's; the CPU ones take minutes a run on the device machine too)."""
    rates = bare_steps(setup, torch.device("cuda"))
    with tempfile.TemporaryDirectory(prefix="cxr-bench-training-") as tmp:
        work = Path(tmp)
        counts = sample_folder(work / "films", setup.films)
        runs = cuda_training(work, setup)
    return [f"{setup.films} films ({' + '.join(map(str, counts))} per class, a seeded sample of kermany-224/train), "
            f"ResNet-18 from scratch, {setup.image_size} px, {setup.epochs} epoch(s), batch {setup.batch_size}; "
            f"torch {torch.__version__}.", *bare_table({"CUDA": rates}, setup, {}), *cuda_lines(runs, rates, setup)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 films, 1 epoch, 64 px; prints only")
    parser.add_argument("--cuda-only", action="store_true",
                        help="only the CUDA figures (bare step, seed loop, core train), printed: a short GPU session")
    args = parser.parse_args()
    setup, cuda = Setup.from_args(args), torch.cuda.is_available()
    if args.cuda_only:
        print("\n".join(cuda_only(setup)) if cuda else "bench/training.py --cuda-only: torch sees no CUDA device")
        return
    rates = {"CPU": bare_steps(setup, torch.device("cpu"))}
    if keep_freed_memory():  # from here on this process allocates as core train does (the runs are processes)
        rates["CPU"][KEPT] = bare_steps(setup, torch.device("cpu"), (BF16,))[BF16]
    reference = KEPT if KEPT in rates["CPU"] else BF16
    if cuda:
        rates["CUDA"] = bare_steps(setup, torch.device("cuda"))
    with tempfile.TemporaryDirectory(prefix="cxr-bench-training-") as tmp:
        work = Path(tmp)
        counts = sample_folder(work / "films", setup.films)
        runs, best = cpu_training(work, setup)
        after = bare_steps(setup, torch.device("cpu"), (BF16,))  # the machine's own speed may have moved meanwhile
        cuda_runs = cuda_training(work, setup) if cuda else []
        recipe_runs = default_recipe(work, "cuda", setup.quick) if cuda else []
    seed = runs[0]
    lines = [f"{setup.films} films ({' + '.join(map(str, counts))} per class, a seeded sample of "
             f"kermany-224/train), ResNet-18 from scratch, {setup.image_size} px, {setup.epochs} epoch(s), batch "
             f"{setup.batch_size}; core train with its default augmentation and a patient-disjoint fifth held out "
             f"for validation. torch {torch.__version__}, {torch.get_num_threads()} threads; CPU bf16: {cpu_bf16()}. "
             "Films/s end to end = films in the folder x epochs / process wall time; training phase = the loop "
             "alone (core train: its epochs, per-epoch validation included).", "",
             *run_table(runs, seed, setup), "", *bare_table(rates, setup, after), "",
             *targets(seed, best, rates["CPU"][reference], rates["CPU"]["fp32"], "Targets (issue 11, CPU):",
                      after[BF16], "bare bf16 + channels_last step" + (", freed memory kept" if reference == KEPT
                                                                        else ""))]
    lines += ([*cuda_lines(cuda_runs, rates["CUDA"], setup), "", *default_recipe_lines(recipe_runs, "CUDA")]
              if cuda else ["- CUDA: no CUDA device, so the default's recipe was not retrained on one"])
    if setup.quick:
        print("\n".join(lines))
        print("\n(--quick: figures printed only; docs/measurements.md left as it is)")
    else:
        write_section("training", "Training speed: seed-style loop, core train, bare step (bench/training.py)",
                      lines)


if __name__ == "__main__":
    main()
