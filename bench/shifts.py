"""Which acquisition change moves the shipped models the way the official Kermany test did (issue 13)?

Each shipped pneumonia model's films (its held-out batch when it has one, else its validation films: never
trained on) are re-rendered at the model's input size in ways another site's films could differ, and read at the
model's shipped threshold: AUC, sensitivity and specificity per change. The project's figures on the hidden test
(``measured_elsewhere``) are printed beside them. Prints a table; not a test, nothing rewritten.
``--models a,b`` limits it to some versions (the default ensemble takes about 50 s a change on 2 cores).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from core.evaluation.framing import framed_tighter, magnified  # noqa: E402
from core.films.tensor import load_tensors  # noqa: E402
from core.models.inference import probabilities_in_batches  # noqa: E402
from core.store.checkpoints import load_checkpoint  # noqa: E402
from core.store.manifest import shipped_dir  # noqa: E402
from core.store.registry import list_models  # noqa: E402
from core.training.calibrate import recorded_split  # noqa: E402


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = int(3 * sigma) * 2 + 1
    t = torch.arange(k, dtype=torch.float32) - k // 2
    g = torch.exp(-t ** 2 / (2 * sigma * sigma))
    g = g / g.sum()
    x = F.conv2d(F.pad(x, (k // 2, k // 2, 0, 0), mode="reflect"), g.view(1, 1, 1, k))
    return F.conv2d(F.pad(x, (0, 0, k // 2, k // 2), mode="reflect"), g.view(1, 1, k, 1))


def _contrast(x: torch.Tensor, gain: float) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * gain + mean


def _levels(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    lo, hi = (torch.quantile(flat, q, dim=1).view(-1, 1, 1, 1) for q in (0.01, 0.99))
    return (x - lo) / (hi - lo + 1e-6)


CHANGES = {  # float [0, 1] N x 1 x S x S -> the same films changed (clamped and rounded to 8 bits after)
    "as stored": lambda x: x,
    "gamma 0.7 (mid-tones brighter)": lambda x: x.clamp(0, 1) ** 0.7,
    "gamma 1.4": lambda x: x.clamp(0, 1) ** 1.4,
    "brightness +0.08": lambda x: x + 0.08,
    "brightness -0.08": lambda x: x - 0.08,
    "contrast x0.8": lambda x: _contrast(x, 0.8),
    "contrast x1.25": lambda x: _contrast(x, 1.25),
    "blur (sigma 1 % of the side)": lambda x: _blur(x, x.shape[-1] / 100),
    "sharpened": lambda x: x + (x - _blur(x, x.shape[-1] / 150)),
    "noise (sd 0.03)": lambda x: x + 0.03 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)),
    "levels (1st-99th percentile stretched)": _levels,
}
FRAMINGS = {  # uint8 films -> the same films framed otherwise, by core.evaluation.framing
    "framed 15 % tighter (the product's check)": framed_tighter,
    "framed 13 % wider": lambda films: magnified(films, 0.87, 0.87),
    "chest 13 % narrower": lambda films: magnified(films, 0.87, 1.0),
    "chest 15 % wider": lambda films: magnified(films, 1.15, 1.0),
}


def changed(films_uint8: torch.Tensor, change: str) -> torch.Tensor:
    if change in FRAMINGS:
        return FRAMINGS[change](films_uint8)
    x = CHANGES[change](films_uint8.float() / 255.0)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated versions (default: every shipped pneumonia model)")
    args = parser.parse_args()
    entries, _ = list_models(shipped_dir())
    wanted = args.models.split(",") if args.models else [e.name for e in entries if e.record.task == "pneumonia"]
    print("| model | films | change | AUC | sens | spec |\n|---|---|---|---|---|---|")
    for name in wanted:
        loaded = load_checkpoint(next(e for e in entries if e.name == name).json_path)
        val_set, held_out = recorded_split(loaded.record)
        films = held_out if held_out is not None else val_set
        which = f"{len(films)} {'held-out batch' if held_out is not None else 'validation'}"
        x = load_tensors(films, loaded.image_size)
        point = loaded.operating_point
        abnormal = np.asarray(films.labels) != point.normal_index
        for change in (*CHANGES, *FRAMINGS):
            score = 1 - probabilities_in_batches(loaded.model, changed(x, change))[:, point.normal_index]
            sens = (score[abnormal] >= point.threshold).mean()
            spec = (score[~abnormal] < point.threshold).mean()
            print(f"| {name} | {which} | {change} | {roc_auc_score(abnormal, score):.3f} | {sens:.1%} | {spec:.1%} |",
                  flush=True)
        for m in loaded.record.measured_elsewhere:
            print(f"| {name} | {m.n} {m.title} | (measured elsewhere) | {m.auc:.3f} | {m.sensitivity:.1%} | "
                  f"{m.specificity:.1%} |", flush=True)


if __name__ == "__main__":
    main()
