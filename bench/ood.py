"""Chest-film check figures: share of real chest films flagged, share of non-chest images flagged.

Real films: the detector's held-out side (Kermany validation patients, 20 % of the COVID set), the
full-resolution films and both DICOMs. Non-chest: the generated corpus in tests/corpus.py (photos,
maps, MR/CT/ultrasound test DICOMs, synthetic patterns). Prints figures; not a pass/fail test.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

from core.data import discover, patient_split  # noqa: E402
from core.errors import TriageError  # noqa: E402
from core.films import read_film  # noqa: E402
from core.ood import ChestFilmCheck  # noqa: E402
from core.quality import usability_problems  # noqa: E402
from tests.corpus import non_chest_images  # noqa: E402

DATA = Path(os.environ.get("CXR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


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
    print(f"threshold {check.detector.threshold:.2f}")
    print(f"real chest films flagged: {n_flag}/{len(chest)} = {n_flag / len(chest):.2%} (target <= 1 %)")
    for group, paths in (("full-resolution films", sorted((DATA / "films").rglob("*.jpeg"))),
                         ("adult DICOMs", sorted((DATA / "dicom").glob("*.dcm")))):
        scores = [flagged(check, read_film(p))[1] for p in paths]
        print(f"  {group}: max score {max(scores):.2f}")
    refused = caught = missed = 0
    scores = []
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
            missed += 1
            print(f"  missed: {name} (score {score:.2f})")
    total = refused + caught + missed
    print(f"non-chest images flagged or refused: {caught + refused}/{total} = {(caught + refused) / total:.2%} "
          f"(target >= 95 %; {refused} refused as unreadable, lowest decodable score {min(scores):.2f})")


if __name__ == "__main__":
    main()
