"""bf16 against fp32 on one named configuration (issue 11: "no accuracy lost"): three seeds in fp32, the same
three seeds in bf16 autocast, each a full `core train` run (its patient-disjoint validation fifth, its
augmentation, early stopping), all in this process into a temporary registry.

The claim checked: every bf16 run's validation AUC lies within the range of the three fp32 seeds, or, where
it does not, by how much it misses. Prints figures and rewrites the "precision" section of
docs/measurements.md; ``--quick`` (200 films, 1 epoch, 64 px) checks the script and only prints.

    .venv/bin/python bench/precision.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measurements import write_section  # noqa: E402
from core.config import reload, settings  # noqa: E402

SEEDS = (0, 1, 2)
CONFIG = dict(arch="cnn5", image_size=128, epochs=6, max_films=1500, augment=True)
QUICK = dict(arch="cnn5", image_size=64, epochs=1, max_films=200, augment=True)


def run(source: Path, work: Path, precision: str, seed: int, config: dict) -> tuple[float, float]:
    from core.store.records import TrainConfig
    from core.training.train import train

    started = time.monotonic()
    record = train(source, TrainConfig(**config, seed=seed, precision=precision, device="cpu"),
                   name=f"precision-{precision}-{seed}", directory=work)
    return record.report.auc, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 films, 1 epoch, 64 px; prints only")
    args = parser.parse_args()
    config = QUICK if args.quick else CONFIG
    source = settings().data / "kermany-224" / "train"
    results: dict[str, list[tuple[int, float, float]]] = {"fp32": [], "bf16": []}
    with tempfile.TemporaryDirectory(prefix="cxr-bench-precision-") as tmp:
        # settings() was read above: reloaded, or the user's decode cache and audit log were used (a review)
        os.environ.setdefault("CXR_DECODE_CACHE", str(Path(tmp) / "decoded"))
        os.environ["CXR_AUDIT_LOG"] = str(Path(tmp) / "audit.jsonl")
        reload()
        for seed in SEEDS:  # interleaved, so a burst of other work on the machine hits both alike
            for precision in ("fp32", "bf16"):
                auc, seconds = run(source, Path(tmp) / "models", precision, seed, config)
                results[precision].append((seed, auc, seconds))
                print(f"{precision} seed {seed}: validation AUC {auc:.4f} ({seconds:.0f} s)", flush=True)
    low, high = min(a for _, a, _ in results["fp32"]), max(a for _, a, _ in results["fp32"])
    named = (f"`core train` {config['arch']}, {config['image_size']} px, {config['epochs']} epochs, augmentation, "
             f"a class-balanced {config['max_films']} films of kermany-224/train (its patient-disjoint fifth for "
             f"validation), seeds {', '.join(map(str, SEEDS))}, CPU")
    lines = [f"Configuration: {named}. The same seed gives the same split and initial weights in both "
             "precisions; validation AUC is computed in fp32 on the stored weights either way. Times are for comparing "
             f"seeds, not precisions: seed {SEEDS[0]}'s fp32 run decodes the films into a fresh cache, the others "
             "read them from it (bench/training.py times the precisions).", "",
             "| seed | fp32 AUC | bf16 AUC | bf16 - fp32 | bf16 inside the fp32 range | fp32 s | bf16 s |",
             "|---|---|---|---|---|---|---|"]
    for (seed, fp32, t32), (_, bf16, t16) in zip(results["fp32"], results["bf16"]):
        inside = "yes" if low <= bf16 <= high else f"no ({min(abs(bf16 - low), abs(bf16 - high)):.4f} outside)"
        lines.append(f"| {seed} | {fp32:.4f} | {bf16:.4f} | {bf16 - fp32:+.4f} | {inside} | {t32:.0f} | {t16:.0f} |")
    inside = sum(low <= a <= high for _, a, _ in results["bf16"])
    lines += ["", f"- fp32 range over {len(SEEDS)} seeds: {low:.4f}-{high:.4f}; bf16 runs inside it: {inside} of "
                  f"{len(SEEDS)} (target: a bf16 run inside the range)"]
    if args.quick:
        print("\n".join(lines) + "\n\n(--quick: figures printed only; docs/measurements.md left as it is)")
    else:
        write_section("precision", "bf16 against fp32, three seeds each (bench/precision.py)", lines)


if __name__ == "__main__":
    main()
