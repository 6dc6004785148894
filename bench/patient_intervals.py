"""Intervals per film or per patient: do the reports' 95 % intervals change when patients are resampled?

Every report resamples films (AUC, F1) or reads a Wilson interval from counts of films (sensitivity,
specificity), though a patient may have several films (in the shared validation split, 773 pneumonia films of
326 patients). If a model's errors cluster by patient, film intervals are too narrow. For each model named
(by default the default, the held-out ResNet pair, the ResNet-18 and the two pixel baselines), on its recorded
validation films and, when its run held a batch out, on that batch: the AUC's interval resampling films and resampling patients
(``core.evaluation.metrics.patient_weights``, one patient per film for the former, the same 1000 draws), and
sensitivity and specificity at the shipped threshold as the card gives them (Wilson), as a film bootstrap and as a
patient bootstrap. "Largest move" is how far any end of a patient interval lies from the film interval's, in
points: the clustering's effect alone (the Wilson interval differs from a bootstrap by method too).

    .venv/bin/python bench/patient_intervals.py [NAME ...] [--no-write]

Prints a table and rewrites the "patient-intervals" section of docs/measurements.md; not a pass/fail test.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measurements import write_section  # noqa: E402
from core.evaluation.metrics import patient_weights, resampled_aucs  # noqa: E402
from core.evaluation.shares import wilson_of  # noqa: E402
from core.films.folders import FilmSet  # noqa: E402
from core.films.tensor import load_tensors  # noqa: E402
from core.models.inference import probabilities_in_batches  # noqa: E402
from core.store.checkpoints import load_checkpoint  # noqa: E402
from core.store.manifest import shipped_dir  # noqa: E402
from core.training.calibrate import recorded_split  # noqa: E402
from core.training.data import patient_id  # noqa: E402

MODELS = ["pneumonia-resnet18-lite1-224-wide-all-ensemble-v1", "pneumonia-resnet18-224-wide-ensemble-v1",
          "pneumonia-resnet18-aug-v1", "pneumonia-mlp-v1", "pneumonia-logistic-v1"]
SEED = 0


class Intervals(NamedTuple):
    films: int
    patients: int
    auc: float
    auc_films: list[float]
    auc_patients: list[float]
    shares: dict[str, tuple[float, tuple[float, float], list[float], list[float]]]  # figure, Wilson, films, patients

    def largest_move(self) -> float:
        """Points between the ends of the patient and the film bootstrap intervals (the same method, so the
        difference is the clustering alone)."""
        moves = [abs(a - b) for a, b in zip(self.auc_patients, self.auc_films)]
        moves += [abs(a - b) for _, _, films, patients in self.shares.values() for a, b in zip(patients, films)]
        return 100 * max(moves)


def intervals(abnormal: np.ndarray, scores: np.ndarray, called: np.ndarray, patients: list[str]) -> Intervals:
    """The AUC of ``scores`` and the sensitivity and specificity of ``called`` (abnormal), each with its interval
    resampling films and resampling ``patients`` (one per film)."""
    abnormal, called = np.asarray(abnormal, dtype=bool), np.asarray(called, dtype=bool)
    by_film = patient_weights([str(k) for k in range(len(abnormal))], SEED)
    by_patient = patient_weights(patients, SEED)
    shares = {}
    for name, films, right in (("sensitivity", abnormal, called), ("specificity", ~abnormal, ~called)):
        hits, n = int(np.sum(right[films])), int(np.sum(films))
        shares[name] = (hits / n, wilson_of(hits, n), *(_percentiles((w[:, films] @ right[films]) / w[:, films].sum(1))
                                                        for w in (by_film, by_patient)))
    return Intervals(len(abnormal), len(set(patients)), float(roc_auc_score(abnormal, scores)),
                     _percentiles(resampled_aucs(abnormal, scores, by_film)),
                     _percentiles(resampled_aucs(abnormal, scores, by_patient)), shares)


def _percentiles(samples: np.ndarray) -> list[float]:
    samples = samples[np.isfinite(samples)]
    return [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]


def measure(name: str) -> list[tuple[str, Intervals]]:
    """(which films, their intervals) for the shipped model ``name``: validation, then its held-out batch."""
    loaded = load_checkpoint(shipped_dir() / f"{name}.json")
    record, point = loaded.record, loaded.record.operating_point
    validation, held_out, _ = recorded_split(record)
    found = []
    for which, films in (("validation", validation), ("held-out batch", held_out)):
        if films is None:
            continue
        probabilities = probabilities_in_batches(loaded.model, load_tensors(films, record.image_size))
        labels = np.asarray(films.labels)
        found.append((which, intervals(labels != point.normal_index, point.abnormal_scores(probabilities),
                                       point.decide(probabilities) != point.normal_index, _patients(films))))
    return found


def _patients(films: FilmSet) -> list[str]:
    return [patient_id(path) for path in films.paths]


def _range(values) -> str:
    return f"{100 * values[0]:.1f}-{100 * values[1]:.1f}"


def row(name: str, which: str, found: Intervals) -> str:
    cells = [f"{found.auc:.4f}: {found.auc_films[0]:.4f}-{found.auc_films[1]:.4f} · "
             f"{found.auc_patients[0]:.4f}-{found.auc_patients[1]:.4f}"]
    for figure, wilson, films, patients in found.shares.values():
        cells.append(f"{100 * figure:.1f} %: {_range(wilson)} · {_range(films)} · {_range(patients)}")
    return (f"| {name} | {which} | {found.films} ({found.patients}) | " + " | ".join(cells)
            + f" | {found.largest_move():.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=MODELS, help="shipped models (default: %(default)s)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/measurements.md alone")
    args = parser.parse_args()
    lines = ["95 % intervals resampling films against resampling patients (1000 draws each, seed 0), at each "
             "model's shipped threshold. AUC: the figure, then its interval per film · per patient. Sensitivity "
             "and specificity: the figure, then the card's Wilson interval · a film bootstrap · a patient "
             "bootstrap. Largest move: the farthest any end of a patient interval lies from the film "
             "bootstrap's, in points. Reproduce: `.venv/bin/python bench/patient_intervals.py "
             f"{' '.join(args.names)}`.", "",
             "| model | films | films (patients) | AUC: films · patients | sensitivity: Wilson · films · patients "
             "| specificity: Wilson · films · patients | largest move |",
             "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name in args.names:
        for which, found in measure(name):
            lines.append(row(name, which, found))
            print(lines[-1], flush=True)
    if not args.no_write:
        write_section("patient-intervals", "Intervals per film or per patient (bench/patient_intervals.py)", lines)


if __name__ == "__main__":
    main()
