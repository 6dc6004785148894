"""Both film checks' figures (issue 14 item 4). Prints them and rewrites their section of docs/measurements.md.

1. *Is this a chest film at all* (the shared detector, checkpoints/detector): the flag rate of real chest films
   per source, by cross-validation over every source pooled, as measured when it was fitted (re-measuring needs
   its 20-minute fit: ``python -m core.serving.fit_chest_check``), and the share of non-chest images flagged or
   refused (tests/corpus.py: photos, maps, MR/CT/ultrasound test DICOMs, synthetic patterns), measured here.
2. *Is this film from the population this model was trained on* (each shipped model's own check): the share
   of films warned on its own validation films (re-read here), on the two adult DICOMs (one real adult film)
   and on the Kaggle COVID-19 set (adult COVID-19 films; Kermany-type normal and viral films). Features are
   computed once per film and shared by every model. (shared-data/tb/train holds noise textures, not films:
   the chest-film check refuses them, see its "not films" line.)

Not a pass/fail test.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

from bench.measurements import write_section  # noqa: E402
from core.config import settings  # noqa: E402
from core.errors import TriageError  # noqa: E402
from core.films.folders import FilmSet, discover  # noqa: E402
from core.films.quality import usability_problems  # noqa: E402
from core.films.read import read_film  # noqa: E402
from core.films.tensor import load_tensors  # noqa: E402
from core.models.features import FEATURE_SIZE, FeatureExtractor  # noqa: E402
from core.serving.chest_check import ChestFilmCheck  # noqa: E402
from core.store.checkpoints import load_checkpoint  # noqa: E402
from core.store.registry import SHIPPED, list_models  # noqa: E402
from core.training.fit_population import recorded_training_split  # noqa: E402
from tests.corpus import non_chest_images  # noqa: E402

DATA = settings().data


def chest_check_lines(check: ChestFilmCheck) -> list[str]:
    detector = check.detector
    cv = detector.calibration.get("cross_validated", {})
    lines = [f"**Chest-film check** (threshold {detector.threshold:.2f}; "
             f"{detector.calibration.get('threshold_rule', 'threshold rule not recorded')}).", "",
             "| source | films | flagged (cross-validated) | highest held-out score |", "|---|---|---|---|"]
    for source, row in cv.get("per_source", {}).items():
        lines.append(f"| {source} | {row['films']} | {row['flagged']} ({row['flag_rate']:.2%}) | "
                     f"{row['highest_score']:.2f} |")
    if "flag_rate" in cv:
        lines.append(f"| all sources pooled | {sum(r['films'] for r in cv['per_source'].values())} | "
                     f"{cv['flag_rate']:.2%} (target <= 1 %) | |")
    for folder, row in detector.calibration.get("not_films", {}).items():
        lines += ["", f"- not films: shared-data/{folder} ({row['what']}): {row['flagged']}/{row['images']} flagged"]
    refused = caught = 0
    missed, scores = [], []
    for name, data in non_chest_images():
        try:
            film = read_film(data, name)
        except TriageError:
            refused += 1
            continue
        score = check.score(film)
        scores.append(score)
        if usability_problems(film) or score > detector.threshold:
            caught += 1
        else:
            missed.append(f"  - passed as a chest film: {name} (score {score:.2f})")
    total = refused + caught + len(missed)
    lines += ["", f"- non-chest images flagged or refused: {caught + refused}/{total} = "
              f"{(caught + refused) / total:.2%} (target >= 95 %; {refused} refused as unreadable, lowest "
              f"decodable score {min(scores):.2f})"]
    return lines + missed


def _features(paths: list[Path]) -> np.ndarray:
    films = FilmSet(tuple(paths), np.zeros(len(paths), dtype=np.int64), ("film",))
    return FeatureExtractor.shared().tensors(load_tensors(films, FEATURE_SIZE))


def population_lines() -> list[str]:
    entries = [e for e in list_models()[0] if e.tier == SHIPPED]
    covid = discover(DATA / "covid-3class" / "train")
    sets = {"dicom": sorted((DATA / "dicom").glob("*.dcm")),
            "covid": [p for p in covid.paths if p.parent.name == "Covid"],
            "covid-other": [p for p in covid.paths if p.parent.name != "Covid"]}
    features = {key: _features(paths) for key, paths in sets.items()}
    validation_features: dict[str, np.ndarray] = {}
    lines = ["", "**Population check** of each shipped model: share of films warned (its threshold is the 98th "
             "percentile of its validation films' scores; a warned film keeps its priority).", "",
             "| model | population | own validation films | adult DICOMs | COVID-19 set: adult COVID-19 films | "
             "COVID-19 set: normal and viral films |", "|---|---|---|---|---|---|"]
    for entry in entries:
        check = entry.record.population_check
        if check is None:
            lines.append(f"| {entry.name} | not checked | | | | |")
            continue
        score = load_checkpoint(entry.json_path).population
        _, val_set = recorded_training_split(entry.record)
        key = entry.record.data.validation.sha256
        if key not in validation_features:
            validation_features[key] = _features(list(val_set.paths))
        cells = [_rate(score.scores(validation_features[key]), check.threshold)]
        cells += [_rate(score.scores(features[name]), check.threshold) for name in ("dicom", "covid", "covid-other")]
        lines.append(f"| {entry.name} | {check.population} | " + " | ".join(cells) + " |")
    return lines


def _rate(scores: np.ndarray, threshold: float) -> str:
    warned = int(np.sum(scores > threshold))
    return f"{warned}/{len(scores)} ({warned / len(scores):.1%})"


def main() -> None:
    lines = chest_check_lines(ChestFilmCheck.shared()) + population_lines()
    write_section("chest-check", "Chest-film check and population checks (bench/chest_checks.py)", lines)


if __name__ == "__main__":
    main()
