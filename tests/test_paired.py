"""Two models on the same films, film by film: paired differences and McNemar's test (core.evaluation.paired)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from core.evaluation.folder import read_folder
from core.evaluation.paired import FilmScores, paired_difference, verdict
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
    assert same.sensitivity == 0 and same.specificity == 0
    low, high = same.specificity_ci  # Newcombe's interval: 60 films bound a difference no better than each share
    assert low == pytest.approx(-high) and 0.03 < high < 0.1
    assert (same.first_only_right, same.second_only_right, same.p_value, same.specificity_p) == (0, 0, 1.0, 1.0)
    assert verdict(same, "a", "b") == "No difference shown on these films (which does not show the two are equal)"


def test_a_perfect_model_against_one_that_calls_every_film_urgent():
    positive = np.array([True] * 20 + [False] * 20)
    perfect = _reading(positive, np.where(positive, 0.9, 0.1))
    flat = _reading(positive, np.full(40, 0.6))  # every film urgent, no ranking at all
    diff = paired_difference(perfect, flat)
    assert diff.auc == pytest.approx(0.5)  # 1.0 - 0.5
    assert diff.auc_ci == pytest.approx((0.5, 0.5))  # every resample: a perfect ranking against ties
    assert diff.sensitivity == 0 and diff.specificity == 1.0
    assert diff.specificity_ci == pytest.approx((0.7721, 1.0), abs=1e-4)  # Newcombe: Wilson's of 20/20 and 0/20
    assert (diff.first_only_right, diff.second_only_right) == (20, 0)
    assert diff.p_value == diff.specificity_p == pytest.approx(2 * 0.5 ** 20)  # McNemar's exact, two-sided
    assert verdict(diff, "a", "b") == ("a ranks these films better (AUC); a calls more normal films routine "
                                       "(specificity, p = 1.9e-06)")
    reverse = paired_difference(flat, perfect)
    assert reverse.auc == pytest.approx(-0.5) and reverse.second_only_right == 20


def test_three_films_of_each_kind_show_no_difference():
    """A review: 3 + 3 films read "+0.500 (the same in every resample)" and "a ranks these films better", though a
    random ranking gives AUC 1 one time in twenty there. With fewer than 20 films of a kind the AUC interval is no
    narrower than Hanley-McNeil's, and three discordant films give McNemar p = 0.25."""
    positive = np.array([True] * 3 + [False] * 3)
    diff = paired_difference(_reading(positive, np.where(positive, 0.9, 0.1)), _reading(positive, np.full(6, 0.6)))
    assert diff.auc == pytest.approx(0.5) and diff.auc_ci[0] < 0 < 0.5 < diff.auc_ci[1]
    assert diff.specificity == 1.0 and diff.specificity_p == 0.25
    assert verdict(diff, "a", "b").startswith("No difference shown")


def test_a_trade_off_is_said_as_one():
    """A review: the same scores read at 0.22 and at 0.80 differ by 60 points of sensitivity and of specificity the
    other way, yet the verdict (the AUC and McNemar on all films only) said "No difference shown"."""
    rng = np.random.default_rng(2)
    positive = rng.random(300) < 0.4
    scores = np.clip(positive * 0.3 + rng.random(300) * 0.7, 0, 1)
    diff = paired_difference(_reading(positive, scores, 0.22), _reading(positive, scores, 0.8))
    assert diff.auc == 0 and diff.sensitivity > 0.5 and diff.specificity < -0.5
    assert diff.sensitivity_ci[0] > 0 and diff.specificity_ci[1] < 0
    words = verdict(diff, "low", "high")
    assert words.startswith("A trade-off: low calls more abnormal films urgent (sensitivity, p = ")
    assert "; high calls more normal films routine (specificity, p = " in words and "ranks" not in words


def test_one_film_apart_is_not_called_a_difference():
    positive = np.array([True, False] * 10)
    first = _reading(positive, np.where(positive, 0.7, 0.1))  # every film right
    second = dataclasses.replace(first, called=first.called[:-1] + (True,))  # the last normal film urgent
    diff = paired_difference(first, second)
    assert (diff.first_only_right, diff.second_only_right) == (1, 0)
    assert diff.p_value == diff.specificity_p == 1.0  # one film either way says nothing
    assert diff.specificity == pytest.approx(0.1) and diff.sensitivity == 0
    low, high = diff.specificity_ci
    assert low < 0 < 0.1 < high
    assert verdict(diff, "a", "b").startswith("No difference shown")


def test_a_reading_must_name_each_film_once_with_a_finite_score():
    with pytest.raises(ValueError, match="names each film once"):
        _reading([True, False], [0.1, 0.2], keys=["a", "a"])
    with pytest.raises(ValueError, match="finite numbers"):
        _reading([True, False], [0.1, float("nan")])
    with pytest.raises(ValueError, match="a key, a label, a score and a call"):
        FilmScores(keys=("a",), positive=(True, False), scores=(0.1,), called=(True,))


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
    assert f"only pneumonia-cnn5-v1 right on {against['first_only_right']} film(s), only pneumonia-mlp-v1 on " \
           f"{against['second_only_right']} " in lines[-1]
    assert against["verdict"] in lines[-1].replace("no difference", "No difference")  # the text's own words
    assert against["figures"]["n"] == 16 and lines[1].startswith("pneumonia-mlp-v1 on 16 films")
    assert against["cautions"] == data["cautions"] == []
    refused = run_cli(*args[:-1], "no-such-model-v1", checkpoints=models)
    assert refused.returncode == 1 and "no-such-model-v1" in json.loads(refused.stdout.splitlines()[-1])["error"]
    itself = run_cli(*args[:-1], "pneumonia-cnn5-v1", "--json", checkpoints=models)  # a review: dropped unsaid
    assert itself.returncode == 1 and "the model evaluated" in json.loads(itself.stdout.splitlines()[-1])["error"]


def test_the_table_shows_the_exact_test_its_verdict_follows_and_the_chance_of_a_name():
    """A statistics review: 40 abnormal films both called urgent, 7 only the first, 1 only the second, 2 neither: the
    sensitivity cell read "+12.0 pts (+0.3 to +24.6)" beside "No difference shown" (McNemar p = 0.070), with no p
    in the table to say why; and the note promised one row in twenty named by chance where three checks a row name
    one in about ten."""
    from dashboard.components.paired_view import PAIRED_NOTE, paired_note, paired_table

    positive = np.array([True] * 50 + [False] * 20)
    first = np.array([True] * 47 + [False] * 3 + [False] * 20)
    second = np.array([True] * 40 + [False] * 7 + [True] + [False] * 2 + [False] * 20)
    readings = [(name, FilmScores(keys=tuple(f"f{i}" for i in range(70)), positive=tuple(positive.tolist()),
                                  scores=tuple(np.where(called, 0.9, 0.1).tolist()), called=tuple(called.tolist())))
                for name, called in (("a", first), ("b", second))]
    row = paired_table(readings).iloc[0]
    assert row["Sensitivity difference"] == "+12.0 pts (+0.3 to +24.6)" and row["Sensitivity: McNemar p"] == "0.07"
    assert "sensitivity" not in row["What the films show"]  # p 0.07: named by the AUC alone
    assert "about one row in ten" in PAIRED_NOTE and "one row in twenty" not in PAIRED_NOTE
    assert "the exact test is the stricter" in PAIRED_NOTE
    # the chance of a name by chance alone, for the table shown (a browser review: one row was told six rows' chance)
    assert paired_note(1).endswith("named in about one row in ten by chance.")
    assert paired_note(6).endswith("so in these 6 rows a name somewhere by chance alone is about as likely as not.")
    assert paired_note(3).endswith("so in these 3 rows a name somewhere by chance alone is about 27 % likely.")
    from core.evaluation.commands import paired_line

    diff = paired_difference(readings[0][1], readings[1][1])
    assert ", sensitivity +12.0 pts (+0.3 to +24.6) (McNemar p = 0.07), specificity " in paired_line("a", "b", diff)
