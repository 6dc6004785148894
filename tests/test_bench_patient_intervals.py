"""Resampling patients instead of films (core.evaluation.metrics.patient_weights) and bench/patient_intervals.py's
comparison of the two (running it on the shipped models is the benchmark)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.patient_intervals import intervals  # noqa: E402
from core.evaluation.metrics import N_BOOTSTRAP, patient_weights  # noqa: E402


def test_a_patients_films_are_drawn_together_and_as_many_patients_as_there_are():
    patients = ["a", "a", "a", "b", "c", "c"]
    weights = patient_weights(patients, seed=1)
    assert weights.shape == (N_BOOTSTRAP, 6)
    assert np.all(weights[:, 0] == weights[:, 1]) and np.all(weights[:, 1] == weights[:, 2])
    assert np.all(weights[:, 4] == weights[:, 5])
    # each resample draws three patients: the films' weights add up to the films of the patients drawn
    per_patient = weights[:, [0, 3, 4]]
    assert np.all(per_patient.sum(axis=1) == 3)
    assert np.all(weights.sum(axis=1) == per_patient @ np.array([3, 1, 2]))
    # one patient per film: each resample draws as many films as there are, like the reports' film bootstrap
    assert np.all(patient_weights([str(k) for k in range(6)], seed=1).sum(axis=1) == 6)
    np.testing.assert_array_equal(weights, patient_weights(patients, seed=1))


def test_errors_that_cluster_by_patient_widen_the_patient_interval_and_spread_ones_do_not():
    """60 abnormal films of 10 patients (6 each), 6 missed: all of one patient's, or one each of six patients."""
    rng = np.random.default_rng(0)
    abnormal = np.r_[np.ones(60, bool), np.zeros(60, bool)]
    patients = [f"p{k // 6}" for k in range(60)] + [f"n{k}" for k in range(60)]
    scores = np.r_[rng.uniform(0.5, 1, 60), rng.uniform(0, 0.6, 60)]
    clustered = abnormal.copy()
    clustered[:6] = False
    spread = abnormal.copy()
    spread[0:60:10] = False
    together, apart = (intervals(abnormal, scores, called, patients) for called in (clustered, spread))
    for found in (together, apart):
        figure, wilson, films, _ = found.shares["sensitivity"]
        assert figure == 0.9 and found.films == 120 and found.patients == 70
        assert wilson[0] < 0.9 < wilson[1] and films[0] < 0.9 < films[1]
    width = {name: found.shares["sensitivity"][3][1] - found.shares["sensitivity"][3][0]
             for name, found in (("together", together), ("apart", apart))}
    film_width = together.shares["sensitivity"][2][1] - together.shares["sensitivity"][2][0]
    assert width["together"] > 1.5 * film_width  # one patient in ten missed whole: a tenth of the patients
    assert width["apart"] < 1.2 * film_width
    assert together.largest_move() > 5 and together.auc_films == apart.auc_films
