"""Training from any source (#14's loose ends): a manifest's name or file wherever a folder is taken (the job
check, the resumable run's identity, recalibration), the split's notes in the training record, and a
multi-class operating point recalibrated on a site's films keeping its per-class rule.

Two tiny real models, trained once per module: a logistic regression on a manifest (``ward-set``, named like a
shipped one) over 30 + 30 Kermany films of a configured data root, and one on the whole COVID-19 image set
(251 films, 5 pairs of near-copies). Their population checks are skipped (ImageNet features of every training
film would cost minutes here; tests/test_population_check.py has those).
"""
from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import pytest

from conftest import environment
from core.errors import DatasetError
from core.films import manifest as manifest_module
from core.films.manifest import find_manifest
from core.jobs.jobs import check_request
from core.store.registry import find_model
from core.store.records import TrainConfig
from core.training.calibrate import SITE, calibrate
from core.training.resume import run_identity
from core.training.train import split_films, train

MANIFEST = "ward-set"
TINY = dict(arch="logistic", epochs=1, image_size=32, augment=False)
COVID_ABNORMAL = ("COVID-19", "VIRAL PNEUMONIA")


def _link(folder: Path, films: list[Path]) -> None:
    folder.mkdir(parents=True)
    for film in films:
        (folder / film.name).symlink_to(film)


@pytest.fixture(scope="module")
def ward(tmp_path_factory, kermany_train) -> Path:
    """A folder holding a data root ``ward`` (30 normal and 30 pneumonia Kermany films), its roots file and a
    manifests folder with ``ward-set.toml`` over it."""
    where = tmp_path_factory.mktemp("ward")
    for folder, source in (("normals", "NORMAL"), ("pneumonias", "PNEUMONIA")):
        _link(where / "root" / folder, sorted((kermany_train / source).iterdir())[:30])
    (where / "roots.json").write_text(json.dumps({"roots": {"ward": str(where / "root")}}))
    (where / "manifests").mkdir()
    (where / "manifests" / f"{MANIFEST}.toml").write_text(
        'task = "pneumonia"\ndescription = "30 + 30 Kermany films"\n'
        '[[folder]]\nroot = "ward/normals"\nclass = "NORMAL"\n'
        '[[folder]]\nroot = "ward/pneumonias"\nclass = "PNEUMONIA"\n')
    return where


def _as_configured(stack: ExitStack, ward: Path) -> None:
    """The ward root configured and ``ward-set`` among the shipped manifests, for the length of ``stack``."""
    stack.enter_context(environment(CXR_DATA_ROOTS=str(ward / "roots.json")))
    stack.enter_context(mock.patch.object(manifest_module, "MANIFESTS", ward / "manifests"))


@pytest.fixture
def configured(ward):
    with ExitStack() as stack:
        _as_configured(stack, ward)
        yield ward


@pytest.fixture(scope="module")
def manifest_model(ward, tmp_path_factory):
    """(record, models folder) of a model trained on the manifest named by its name, as `train ward-set` does."""
    directory = tmp_path_factory.mktemp("manifest-models")
    with ExitStack() as stack, mock.patch("core.training.train.try_fit_population_check", return_value=(None, None)):
        _as_configured(stack, ward)
        record = train(MANIFEST, TrainConfig(**TINY, seed=0), directory=directory)
    return record, directory


@pytest.fixture(scope="module")
def covid_model(data_dir, tmp_path_factory):
    """(record, models folder) of a model of the COVID-19 task trained on the whole COVID-19 image set."""
    directory = tmp_path_factory.mktemp("covid-models")
    with mock.patch("core.training.train.try_fit_population_check", return_value=(None, None)):
        record = train(data_dir / "covid-3class", TrainConfig(**TINY, seed=0), directory=directory)
    return record, directory


def test_the_job_check_takes_a_manifest_by_name_or_file(configured):
    config = TrainConfig(**TINY)
    assert check_request(MANIFEST, config).arch == "logistic"
    assert check_request(configured / "manifests" / f"{MANIFEST}.toml", config).image_size == 32


def test_the_job_check_refuses_four_class_without_its_tuberculosis_root():
    with pytest.raises(DatasetError, match="four-class: tb-films/Tuberculosis is not a folder inside a configured"):
        check_request("four-class", TrainConfig(**TINY))


def test_a_runs_identity_knows_a_manifest_by_its_file_whatever_names_it(configured, kermany_train):
    config = TrainConfig(**TINY)
    _, train_set, val_set, _ = split_films(MANIFEST, config)
    by_name = run_identity(config, MANIFEST, train_set, val_set)
    by_file = run_identity(config, configured / "manifests" / f"{MANIFEST}.toml", train_set, val_set)
    assert by_name.data_dir == by_file.data_dir == str((configured / "manifests" / f"{MANIFEST}.toml").resolve())
    assert by_name.key == by_file.key  # `train ward-set --resume` finds a run started from the file, and back
    assert run_identity(config, kermany_train, train_set, val_set).data_dir == str(kermany_train.resolve())


def test_the_training_notes_say_how_many_near_copies_were_grouped(covid_model):
    record, _ = covid_model
    assert record.task == "covid" and record.data.train.n + record.data.validation.n == 251
    grouped = [note for note in record.training.notes if note.startswith("near-duplicates:")]
    assert grouped == ["near-duplicates: 10 films in 5 groups kept on one side of the split (perceptual hash, "
                       "confirmed by thumbnail correlation)"]


def test_a_model_trained_on_a_manifest_by_name_recalibrates_on_its_validation_films(manifest_model, configured):
    record, directory = manifest_model
    assert record.training.data_dir == MANIFEST and record.data.train.n + record.data.validation.n == 60
    new = calibrate(record.name, 0.9, directory=directory)
    assert new.calibration.source == "validation" and new.report.n == record.report.n
    assert new.report.auc == pytest.approx(record.report.auc, abs=1e-6)
    assert new.operating_point.validation_sensitivity >= 0.9
    again = calibrate(record.name, 0.8, directory=directory, data_dir=find_manifest(MANIFEST))  # --data FILE
    assert again.report.n == record.report.n


def _distinct(films: list[Path], count: int) -> list[Path]:
    """The first ``count`` of ``films`` that are no near-duplicate of one taken before (core.training.data)."""
    import numpy as np

    from core.films.folders import FilmSet
    from core.films.copies import copies_of

    def one_set(paths):
        return FilmSet(tuple(paths), np.zeros(len(paths), np.int64), ("film",))

    taken: list[Path] = []
    for film in films:
        if len(taken) < count and not (taken and copies_of(one_set([film]), one_set(taken))[0]):
            taken.append(film)
    return taken


def test_a_multi_class_point_chosen_on_site_films_keeps_its_per_class_rule(data_dir, tmp_path, settings_env):
    """The site films are films the model never drew (calibration refuses its own): a model of part of the set."""
    directory = tmp_path / "models"
    with mock.patch("core.training.train.try_fit_population_check", return_value=(None, None)):
        record = train(data_dir / "covid-3class", TrainConfig(**TINY, seed=0, max_films=150), directory=directory)
    drawn = {film.read_bytes() for film in split_films(data_dir / "covid-3class", record.training.config)[0].paths}
    site = tmp_path / "site-root" / "ward"
    for folder in ("Covid", "Normal", "Viral Pneumonia"):  # the set's own spellings, read through the aliases
        films = sorted((data_dir / "covid-3class" / "train" / folder).iterdir())
        # never drawn, nor a byte-for-byte copy of one drawn (the set holds three such pairs), nor a copy of one
        # chosen (a copy within the site folder counts once)
        _link(site / folder, _distinct([film for film in films if film.read_bytes() not in drawn], 4))
    roots = tmp_path / "roots.json"
    roots.write_text(json.dumps({"roots": {"ward-7": str(tmp_path / "site-root")}}))
    settings_env(CXR_DATA_ROOTS=str(roots), CXR_PROMOTION_MIN_FILMS_BY_TASK="covid=4")
    new = calibrate(record.name, 0.75, directory=directory, site_folder="ward-7/ward")
    point = new.operating_point
    assert point.policy == ("highest threshold at which each abnormal class (COVID-19, VIRAL PNEUMONIA) reaches "
                            "sensitivity >= 75% with 1 of its films to spare on the site folder ward-7/ward "
                            "(12 films)")
    # 4 films a class: 3 reach 75 %, and one to spare means all 4 of each abnormal class are flagged
    assert point.validation_class_films == {name: 4 for name in COVID_ABNORMAL}
    assert point.validation_class_sensitivity == {name: 1.0 for name in COVID_ABNORMAL}
    assert new.other_reports[SITE].n == 12 and new.other_reports[SITE].operating_point.policy == point.policy
    assert find_model(new.name, directory).record.operating_point.policy == point.policy  # as stored


def test_a_manifests_stamp_changes_when_films_come_to_the_folders_it_reads(configured, kermany_train):
    """Found by a review: the Retrain preview of a manifest was keyed on the manifest file's time alone."""
    from dashboard.training_source import source_stamp

    manifest = configured / "manifests" / f"{MANIFEST}.toml"
    before = source_stamp(manifest)
    extra = configured / "root" / "normals" / "extra.jpeg"
    extra.symlink_to(sorted((kermany_train / "NORMAL").iterdir())[40])
    try:
        assert source_stamp(manifest) not in (before, "")
    finally:
        extra.unlink()  # the ward is shared by this module's tests
    assert source_stamp(manifest) == before
