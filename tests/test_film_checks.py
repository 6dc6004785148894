"""Triage's film checks are written once (core.serving.film_checks): Triage, ``evaluate`` and the training-source
and site-folder checks give every film the same verdict (a film whose grey levels look reversed apart: Triage's
call on it depends on the model, the others leave it out). A re-read found them written four times, and one copy
had drifted (without a chest-film detector, ``evaluate`` skipped the population check Triage still ran)."""
from __future__ import annotations

import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from core.errors import CheckpointError
from core.evaluation.folder import read_folder
from core.films.folders import discover
from core.films.read import read_film
from core.serving.chest_check import ChestFilmCheck
from core.serving.predict import Predictor
from core.training.source_check import untriaged


@pytest.fixture(scope="module")
def mixed(films_dir, dicom_dir, tmp_path_factory) -> Path:
    """Real paediatric films, an adult DICOM (the population check warns), a blank and a CT (not triaged)."""
    from tests.corpus import non_chest_images

    root = tmp_path_factory.mktemp("mixed")
    for name in ("NORMAL", "PNEUMONIA"):
        (root / name).mkdir()
        for path in sorted((films_dir / name).iterdir())[:2]:
            shutil.copy(path, root / name / path.name)
    shutil.copy(dicom_dir / "RG1_UNCI.dcm", root / "NORMAL")  # one of its two encodings: evaluate counts a film once
    Image.new("L", (900, 900), 128).save(root / "PNEUMONIA" / "blank.png")
    (root / "PNEUMONIA" / "CT_small.dcm").write_bytes(dict(non_chest_images())["CT_small.dcm"])
    return root


def _agree(predictor: Predictor, root: Path) -> dict[str, tuple[bool, bool]]:
    """Each film's (left untriaged, warned as unlike the training films) by Triage; asserts evaluate and the source
    check find the same."""
    films = discover(root)
    triage = {}
    for path in films.paths:
        prediction = predictor.predict(read_film(path))
        triage[path.name] = (prediction.priority is None, prediction.population_warning is not None)
    reading = read_folder(predictor.loaded, root)
    left_out = {Path(film.file).name for film in reading.report.skipped}
    assert left_out == {name for name, (untriaged_, _) in triage.items() if untriaged_}
    assert reading.atypical == sum(warned for _, warned in triage.values())
    verdicts = untriaged(films, list(range(len(films))), batch=3)  # batches that split the folder unevenly
    assert dict(zip((path.name for path in films.paths), verdicts.not_chest)) == {
        name: untriaged_ for name, (untriaged_, _) in triage.items()}
    return triage


def test_triage_evaluate_and_the_source_check_give_each_film_one_verdict(trained_model, mixed):
    from core.store.checkpoints import load_checkpoint

    triage = _agree(Predictor(load_checkpoint(trained_model.json_path)), mixed)
    assert {name for name, (left, _) in triage.items() if left} == {"blank.png", "CT_small.dcm"}
    assert [name for name, (_, warned) in triage.items() if warned] == ["RG1_UNCI.dcm"]  # measured: no Kermany film


def test_without_the_detector_all_three_still_agree_and_the_population_check_still_runs(trained_model, mixed,
                                                                                        monkeypatch):
    from core.store.checkpoints import load_checkpoint

    monkeypatch.setattr(ChestFilmCheck, "shared", mock.Mock(side_effect=CheckpointError("damaged")))
    triage = _agree(Predictor(load_checkpoint(trained_model.json_path)), mixed)
    assert {name for name, (left, _) in triage.items() if left} == {"blank.png"}  # the statistics alone
    assert sum(warned for _, warned in triage.values()) >= 1  # the adult at least; the CT may be warned on too


def test_the_learned_checks_give_a_film_the_same_features_alone_or_in_a_batch(trained_model, mixed):
    """Triage checks one film at a time, evaluate a batch: a film's verdict does not depend on which."""
    from core.serving.film_checks import FilmChecks
    from core.serving.population import ModelPopulation
    from core.store.checkpoints import load_checkpoint

    checks = FilmChecks(population=ModelPopulation.of(load_checkpoint(trained_model.json_path)))
    films = [read_film(path) for path in sorted(mixed.rglob("*")) if path.is_file() and path.name != "blank.png"]
    inputs = [checks.feature_input(film) for film in films]
    together = checks.learned(films, inputs)
    alone = [checks.learned([film], [tensor])[0] for film, tensor in zip(films, inputs)]
    assert together == alone and np.any([verdict.why for verdict in alone])


def test_a_chest_film_on_its_side_is_told_so_and_stays_untriaged(predictor, films_dir, tmp_path):
    """A browser review: a film turned a quarter turn was told only that it did not look like a chest film."""
    from core.films.film import Film
    from core.serving.film_checks import TURNED
    from core.serving.predict import NOT_TRIAGED

    film = read_film(next((films_dir / "PNEUMONIA").iterdir()))
    for turns in (1, 3):
        turned = predictor.predict(Film(np.ascontiguousarray(np.rot90(film.pixels, turns)), "PNG",
                                        film.original_size[::-1], 8))
        assert turned.priority is None and turned.warnings[-2:] == [TURNED, NOT_TRIAGED]
    from tests.corpus import non_chest_images

    ct = predictor.predict(read_film(dict(non_chest_images())["CT_small.dcm"], name="CT_small.dcm"))
    assert ct.priority is None and TURNED not in ct.warnings  # not a chest film, however turned


def test_a_batch_of_films_all_refused_by_the_image_statistics_is_answered_not_a_crash(tmp_path):
    """A re-read: four blank films (the Retrain page's sample, or a site folder's last batch) left the learned checks
    nothing to read, and they raised a ValueError."""
    (tmp_path / "NORMAL").mkdir()
    (tmp_path / "PNEUMONIA").mkdir()
    for n in range(4):
        Image.new("L", (300, 300), 128).save(tmp_path / ("NORMAL" if n < 2 else "PNEUMONIA") / f"blank{n}.png")
    films = discover(tmp_path)
    assert untriaged(films, list(range(4)), batch=3).not_chest == [True] * 4


def test_a_site_folder_s_inverted_films_are_left_out_as_evaluate_leaves_them_out(films_dir, tmp_path):
    """A re-read: the source and site-folder check kept films whose grey levels look reversed, which evaluate
    leaves out and whose routine calls Triage withholds, so a site threshold could be chosen on them."""
    from PIL import ImageOps

    for name in ("NORMAL", "PNEUMONIA"):
        (tmp_path / name).mkdir()
        for path in sorted((films_dir / name).iterdir())[:2]:
            with Image.open(path) as film:
                film.save(tmp_path / name / path.name)
                ImageOps.invert(film.convert("L")).save(tmp_path / name / f"inverted-{path.name}")
    films = discover(tmp_path)
    verdicts = untriaged(films, list(range(len(films)))).not_chest
    assert dict(zip((p.name for p in films.paths), verdicts)) == {p.name: p.name.startswith("inverted-")
                                                                  for p in films.paths}
