"""Fit the chest-film detector on every real chest-film source and write it beside the models.

    python -m core.serving.fit_chest_check [--data ../shared/data] [--out checkpoints/detector]

The detector answers *is this a chest film at all*, for every model, so it is fitted on every chest-film source
we have, paediatric and adult (SOURCES). Each class folder of each source weighs the same in the fit (a film
weighs at most MAX_WEIGHT times another): 5,216 Kermany films would otherwise drown the 111 adult COVID-19
films, whose held-out films were then flagged one time in four. ``shared-data/tb/train`` is *not* a source:
its 300 images are smoothed noise textures, not films (whatever its README says), so they are scored as
images that are not chest films (NOT_FILMS) and their flag rate is recorded too.

Its threshold comes from cross-validation over all sources pooled: FOLDS folds that keep each patient
together (Kermany names carry the patient; the two DICOMs are one film) and spread each source over the
folds; every film is scored by a detector fitted on the other folds. The threshold is the lowest at which at
most FLAG_LIMIT of those held-out films are flagged, pooled *and* in every source of MIN_SOURCE_FILMS films or
more; the flag rate of each source is recorded in the detector's JSON. The detector that ships is then
fitted on every film. Deterministic: the same films give the same detector. Features take about 10 minutes
on 2 idle CPU cores the first time; the decode cache keeps them by each film's content (shared with training's
population checks, core.models.features.cached_features), so a refit on the same films costs seconds.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from core.config import settings
from core.films.folders import films_under
from core.models.features import FEATURE_LENGTH, GaussianScore, cached_features
from core.serving.chest_check import ChestFilmDetector, detector_dir
from core.training.data import patient_id
from core.wording import json_line
# (folder inside the data root, source name): every film under it, whatever its class.
SOURCES = (("kermany-224/train", "kermany-224"), ("covid-3class/train", "covid-3class"), ("films", "films"),
           ("dicom", "dicom"))
NOT_FILMS = "tb/train"  # smoothed noise textures (labelled adult TB-database films): must be flagged
COMPONENTS = 64  # measured: 256 axes separate no better (non-chest images and noise textures alike)
FOLDS = 5
FLAG_LIMIT = 0.01
MIN_SOURCE_FILMS = 100
MAX_WEIGHT = 20.0
SEED = 0


def chest_films(data: Path) -> tuple[list[Path], list[str]]:
    """Every film of every source (sorted), and its source."""
    paths, sources = [], []
    for folder, source in SOURCES:
        found = films_under(data / folder)
        paths += found
        sources += [source] * len(found)
    return paths, sources


def features_of(paths: list[Path]) -> np.ndarray:
    """Lite0 features of ``paths`` (N x 1280), through the app's own decoding; from the decode cache where the
    same film was seen before (every training's population check stores its films' features there)."""
    shown = 0

    def progress(done: int, total: int) -> None:
        nonlocal shown
        if done - shown >= 500 or done == total:
            shown = done
            print(f"  features {done}/{total} computed", flush=True)

    found = cached_features(paths, on_batch=progress)
    return np.stack([found[p] for p in paths]) if paths else np.zeros((0, FEATURE_LENGTH))


def folder_weights(paths: list[Path], sources: list[str]) -> np.ndarray:
    """One weight per film: every class folder of every source weighs the same, capped at MAX_WEIGHT."""
    folders = np.array([f"{source}/{path.parent.name}" for path, source in zip(paths, sources)])
    names, index, counts = np.unique(folders, return_inverse=True, return_counts=True)
    return np.minimum(len(paths) / len(names) / counts, MAX_WEIGHT)[index]


def fit_score(features: np.ndarray, paths: list[Path], sources: list[str]) -> GaussianScore:
    return GaussianScore.fit(features, COMPONENTS, folder_weights(paths, sources))


def held_out_scores(features: np.ndarray, paths: list[Path], sources: list[str]) -> np.ndarray:
    """Each film's score by a detector fitted on the other folds (grouped by patient, stratified by source)."""
    groups = [("dicom" if source == "dicom" else patient_id(path)) for path, source in zip(paths, sources)]
    folds = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    scores = np.zeros(len(paths))
    with warnings.catch_warnings():  # "the least populated class has 2 members": the two DICOMs, one film
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(folds.split(features, sources, groups))
    for fit_index, held_index in splits:
        score = fit_score(features[fit_index], [paths[i] for i in fit_index], [sources[i] for i in fit_index])
        scores[held_index] = score.scores(features[held_index])
    return scores


def choose_threshold(scores: np.ndarray, sources: list[str]) -> float:
    """The lowest threshold flagging at most FLAG_LIMIT of ``scores``, pooled and in each large source."""
    sources_array = np.asarray(sources)
    groups = [scores] + [scores[sources_array == s] for s in dict.fromkeys(sources)
                         if np.sum(sources_array == s) >= MIN_SOURCE_FILMS]
    # A film is flagged when its score is above the threshold: the (m+1)-th highest flags m films.
    return float(max(np.sort(group)[::-1][int(FLAG_LIMIT * len(group))] for group in groups))


def per_source(scores: np.ndarray, sources: list[str], threshold: float) -> dict[str, dict]:
    """Flag rate of real chest films per source at ``threshold``, from held-out scores."""
    sources_array = np.asarray(sources)
    table = {}
    for source in dict.fromkeys(sources):
        mine = scores[sources_array == source]
        table[source] = {"films": int(len(mine)), "flagged": int(np.sum(mine > threshold)),
                         "flag_rate": round(float(np.mean(mine > threshold)), 4),
                         "highest_score": round(float(mine.max()), 2)}
    return table


def fit(data: Path) -> ChestFilmDetector:
    paths, sources = chest_films(data)
    print(f"features of {len(paths)} chest films from {len(SOURCES)} sources", flush=True)
    features = features_of(paths)
    scores = held_out_scores(features, paths, sources)
    threshold = choose_threshold(scores, sources)
    score = fit_score(features, paths, sources)
    textures = films_under(data / NOT_FILMS)
    texture_scores = score.scores(features_of(textures))
    calibration = {
        "fitted_on": int(len(paths)), "components": COMPONENTS,
        "sources": {folder: source for folder, source in SOURCES},
        "weights": f"every class folder of every source weighs the same (a film at most {MAX_WEIGHT:g} times another)",
        "threshold_rule": f"the lowest threshold flagging at most {FLAG_LIMIT:.0%} of held-out real chest films, "
                          f"pooled and in every source of {MIN_SOURCE_FILMS} films or more, in {FOLDS}-fold "
                          "cross-validation over every source pooled (folds grouped by patient, stratified by "
                          "source)",
        "cross_validated": {"flag_rate": round(float(np.mean(scores > threshold)), 4),
                            "per_source": per_source(scores, sources, threshold)},
        "not_films": {NOT_FILMS: {"images": len(textures), "flagged": int(np.sum(texture_scores > threshold)),
                                  "what": "smoothed noise textures, not chest films"}},
        "highest_held_out": sorted(({"file": p.name, "source": s, "score": round(float(v), 2)}
                                    for p, s, v in zip(paths, sources, scores)), key=lambda row: -row["score"])[:10],
    }
    return ChestFilmDetector(score, threshold, calibration)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=settings().data)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    detector = fit(args.data)
    path = detector.save(args.out or detector_dir())
    print(json_line({"detector": str(path), "threshold": detector.threshold, **detector.calibration}, indent=1))


if __name__ == "__main__":
    main()
