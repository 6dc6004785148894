"""Two models on the same films, film by film: paired differences and McNemar's test (core.evaluation.paired)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from core.evaluation.folder import read_folder
from core.evaluation.paired import FilmScores, paired_difference
from core.store.checkpoints import load_checkpoint


def _reading(positive, scores, threshold=0.5, keys=None):
    keys = keys or [f"f{i}" for i in range(len(positive))]
    return FilmScores(keys=tuple(keys), positive=tuple(bool(p) for p in positive),
                      scores=tuple(float(s) for s in scores), called=tuple(s >= threshold for s in scores))


def test_a_model_against_itself_differs_by_nothing():
    rng = np.random.default_rng(1)
    positive = rng.random(60) < 0.5
    one = _reading(positive, rng.random(60))
    same = paired_difference(one, one)
    assert same.n == 60 and same.abnormal == int(positive.sum())
    assert same.auc == 0 and same.auc_ci == (0, 0)
    assert same.sensitivity == 0 and same.specificity == 0 and same.specificity_ci == (0, 0)
    assert (same.first_only_right, same.second_only_right, same.p_value) == (0, 0, 1.0)


def test_a_perfect_model_against_chance_on_forty_films():
    positive = np.array([True] * 20 + [False] * 20)
    perfect = _reading(positive, np.where(positive, 0.9, 0.1))
    flat = _reading(positive, np.full(40, 0.6))  # every film urgent, no ranking at all
    diff = paired_difference(perfect, flat)
    assert diff.auc == pytest.approx(0.5)  # 1.0 - 0.5
    assert diff.auc_ci == pytest.approx((0.5, 0.5))  # every resample: a perfect ranking against ties
    assert diff.sensitivity == 0 and diff.specificity == 1.0
    assert (diff.first_only_right, diff.second_only_right) == (20, 0)
    assert diff.p_value == pytest.approx(2 * 0.5 ** 20)  # McNemar's exact, two-sided
    reverse = paired_difference(flat, perfect)
    assert reverse.auc == pytest.approx(-0.5) and reverse.second_only_right == 20


def test_one_film_apart_is_not_called_a_difference():
    positive = np.array([True, False] * 10)
    first = _reading(positive, np.where(positive, 0.7, 0.1))  # every film right
    second = dataclasses.replace(first, called=first.called[:-1] + (True,))  # the last normal film urgent
    diff = paired_difference(first, second)
    assert (diff.first_only_right, diff.second_only_right) == (1, 0)
    assert diff.p_value == 1.0  # one film either way says nothing
    assert diff.specificity == pytest.approx(0.1) and diff.sensitivity == 0
    low, high = diff.specificity_ci
    assert low == 0 < high  # a third of the resamples leave that film out


def test_films_line_up_by_name_and_only_shared_films_count():
    positive = [True, True, False, False]
    first = _reading(positive, [0.9, 0.8, 0.2, 0.7], keys=["a", "b", "c", "d"])
    second = _reading(positive[::-1][:3], [0.9, 0.1, 0.6], keys=["d", "c", "b"])  # "a" skipped, other order
    diff = paired_difference(first, second)
    assert diff.n == 3 and diff.abnormal == 1
    # first: b 0.8 (right), c 0.2 (right), d 0.7 (wrong); second: b 0.6 (right), c 0.1 (right), d 0.9 (wrong)
    assert (diff.first_only_right, diff.second_only_right) == (0, 0)
    assert diff.auc == pytest.approx(1.0 - 0.5)  # b above both normals; b between c and d
    assert paired_difference(first, _reading([True], [0.5], keys=["z"])) is None
    with pytest.raises(ValueError, match="label the same films differently"):
        paired_difference(first, _reading([False], [0.5], keys=["a"]))


def test_one_model_at_two_thresholds_on_real_films(trained_model, films_dir):
    loaded = load_checkpoint(trained_model.json_path)
    reading = read_folder(loaded, films_dir)
    films = reading.films
    assert len(films.keys) == reading.report.n == 16 and sum(films.positive) == 8
    everything = dataclasses.replace(films, called=(True,) * 16)  # the same scores, every film urgent
    diff = paired_difference(films, everything)
    assert diff.auc == 0 and diff.n == 16
    assert diff.sensitivity == pytest.approx(reading.report.sensitivity - 1.0)
    assert diff.specificity == pytest.approx(reading.report.specificity)
    normals_called_routine = round(reading.report.specificity * 8)
    assert (diff.first_only_right, diff.second_only_right) == (
        normals_called_routine, 8 - round(reading.report.sensitivity * 8))


def test_differences_in_words():
    from core.wording import signed_difference as signed

    assert signed(0.0123, (-0.004, 0.029), points=False) == "+0.012 (−0.004 to +0.029)"
    assert signed(-0.125, (-0.4, 0.0), points=True) == "−12.5 pts (−40.0 to 0.0)"
    assert signed(0.0, (0.0, 0.0), points=False) == "0.000 (the same in every resample of these films)"
    assert signed(None, None, points=True) == "—"


def test_evaluate_against_another_model_on_the_same_films(run_cli, films_dir, tmp_path):
    """The command line's paired comparison: each model's line, then the difference, as Compare gives them; JSON
    carries the differences under ``against``."""
    from e2e_support import quick_checkpoints

    models = quick_checkpoints(tmp_path / "checkpoints")
    args = ("evaluate", films_dir, "--model", "pneumonia-cnn5-v1", "--against", "pneumonia-mlp-v1")
    text = run_cli(*args, checkpoints=models)
    assert text.returncode == 0, text.stdout + text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("pneumonia-cnn5-v1 on 16 films") and lines[1].startswith("pneumonia-mlp-v1 on 16 films")
    assert lines[-1].startswith("pneumonia-cnn5-v1 − pneumonia-mlp-v1 on 16 films both read: AUC ")
    assert all(words in lines[-1] for words in (", sensitivity ", ", specificity ", "(McNemar p = "))
    data = json.loads(run_cli(*args, "--json", checkpoints=models).stdout)
    (against,) = data["against"]
    assert against["model"] == "pneumonia-mlp-v1" and against["n"] == 16 and against["abnormal"] == 8
    assert -1 <= against["auc"] <= 1 and against["auc_ci"][0] <= against["auc"] <= against["auc_ci"][1]
    assert f"{against['first_only_right']} and {against['second_only_right']}" in lines[-1]
    refused = run_cli(*args[:-1], "no-such-model-v1", checkpoints=models)
    assert refused.returncode == 1 and "no-such-model-v1" in json.loads(refused.stdout.splitlines()[-1])["error"]
