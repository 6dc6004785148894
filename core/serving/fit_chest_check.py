"""Fit the chest-film detector on the real chest films and write it beside the models.

    python -m core.serving.fit_chest_check [--data ../shared/data] [--out checkpoints/detector]

Fitted on the Kermany train films of the patient-disjoint training side plus 80 % of the COVID set;
the threshold is set on the held-out side (Kermany validation patients, the rest of the COVID set, the
full-resolution films and the adult DICOMs), which therefore all count as "real chest films".
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from core.config import settings
from core.films.read import read_film
from core.films.tensor import as_float, film_to_tensor
from core.serving.chest_check import FEATURE_SIZE, FeatureExtractor, detector_dir, fit_detector
from core.films.folders import discover
from core.training.data import patient_split


def features_of(paths, extractor: FeatureExtractor, batch: int = 64) -> np.ndarray:
    out = []
    for i in range(0, len(paths), batch):
        tensors = [film_to_tensor(read_film(p), FEATURE_SIZE) for p in paths[i : i + batch]]
        out.append(extractor(as_float(torch.stack(tensors))))
        print(f"  {min(i + batch, len(paths))}/{len(paths)}", flush=True)
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=settings().data)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    kermany_train, kermany_val = patient_split(discover(args.data / "kermany-224" / "train"), 0.2, seed=0)
    covid = discover(args.data / "covid-3class" / "train")
    rng = np.random.default_rng(0)
    covid_held = rng.random(len(covid)) < 0.2
    fit_paths = list(kermany_train.paths) + [p for p, h in zip(covid.paths, covid_held) if not h]
    held_paths = (list(kermany_val.paths) + [p for p, h in zip(covid.paths, covid_held) if h]
                  + sorted((args.data / "films").rglob("*.jpeg")) + sorted((args.data / "dicom").glob("*.dcm")))
    extractor = FeatureExtractor()
    print(f"features of {len(fit_paths)} fitting films")
    fit_features = features_of(fit_paths, extractor)
    print(f"features of {len(held_paths)} held-out films")
    held_features = features_of(held_paths, extractor)
    detector = fit_detector(fit_features, held_features)
    scores = detector.scores(held_features)
    detector.calibration["highest_held_out"] = sorted(
        ({"file": p.name, "score": round(float(s), 2)} for p, s in zip(held_paths, scores)),
        key=lambda row: -row["score"])[:10]
    path = detector.save(args.out or detector_dir())
    print(json.dumps({"detector": str(path), "threshold": detector.threshold, **detector.calibration}, indent=1))


if __name__ == "__main__":
    main()
