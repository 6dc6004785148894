"""Chest-film check figures: share of real chest films flagged, share of non-chest images flagged.

Real films: the detector's held-out side (Kermany validation patients, 20 % of the COVID set), the
full-resolution films and both DICOMs. Non-chest: the generated corpus in tests/corpus.py (photos,
maps, MR/CT/ultrasound test DICOMs, synthetic patterns). Prints figures; not a pass/fail test.
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
from core.films.quality import usability_problems  # noqa: E402
from core.films.read import read_film  # noqa: E402
from core.serving.chest_check import ChestFilmCheck  # noqa: E402
from core.films.folders import discover  # noqa: E402
from core.training.data import patient_split  # noqa: E402
from tests.corpus import non_chest_images  # noqa: E402

DATA = settings().data


def flagged(check: ChestFilmCheck, film) -> tuple[bool, float]:
    score = check.score(film)
    return bool(usability_problems(film)) or score > check.detector.threshold, score


def main() -> None:
    check = ChestFilmCheck.shared()
    _, kermany_val = patient_split(discover(DATA / "kermany-224" / "train"), 0.2, seed=0)
    covid = discover(DATA / "covid-3class" / "train")
    covid_held = np.random.default_rng(0).random(len(covid)) < 0.2  # the detector's held-out side
    chest = (list(kermany_val.paths) + [p for p, h in zip(covid.paths, covid_held) if h]
             + sorted((DATA / "films").rglob("*.jpeg")) + sorted((DATA / "dicom").glob("*.dcm")))
    chest_flags = [flagged(check, read_film(p)) for p in chest]
    n_flag = sum(f for f, _ in chest_flags)
    lines = [f"- threshold {check.detector.threshold:.2f}",
             f"- real chest films flagged: {n_flag}/{len(chest)} = {n_flag / len(chest):.2%} (target <= 1 %)"]
    for group, paths in (("full-resolution films", sorted((DATA / "films").rglob("*.jpeg"))),
                         ("adult DICOMs", sorted((DATA / "dicom").glob("*.dcm")))):
        scores = [flagged(check, read_film(p))[1] for p in paths]
        lines.append(f"  - {group}: max score {max(scores):.2f}")
    refused = caught = 0
    scores, missed = [], []
    for name, data in non_chest_images():
        try:
            film = read_film(data, name)
        except TriageError:
            refused += 1
            continue
        is_flagged, score = flagged(check, film)
        scores.append(score)
        caught += is_flagged
        if not is_flagged:
            missed.append(f"  - missed: {name} (score {score:.2f})")
    total = refused + caught + len(missed)
    lines.append(f"- non-chest images flagged or refused: {caught + refused}/{total} = "
                 f"{(caught + refused) / total:.2%} (target >= 95 %; {refused} refused as unreadable, "
                 f"lowest decodable score {min(scores):.2f})")
    write_section("chest-check", "Chest-film check (bench/ood.py)", lines + missed)

if __name__ == "__main__":
    main()
