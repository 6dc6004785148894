"""A tiny three-class model trained here on the real COVID films (#14): its operating point gives every abnormal
class the target with a film to spare, its report agrees with scikit-learn on its real probabilities, figures
per source on films of two sources, and evaluation of a folder holding two of the three classes."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from core.evaluation.metrics import evaluate_probabilities
from core.training.operating_point import choose_operating_point

from conftest import require


@pytest.fixture(scope="module")
def covid_model(data_dir, tmp_path_factory):
    """A cnn5 at 32 px, 2 epochs, 150 of the COVID set's films: real probabilities in seconds. Without the
    population check, whose ImageNet features of every training film would cost a minute on 2 CPU cores
    and are not what these tests measure."""
    from core.store.checkpoints import load_checkpoint
    from core.store.records import TrainConfig
    from core.training import train as training

    folder = require(data_dir / "covid-3class" / "train")
    directory = tmp_path_factory.mktemp("covid-tiny")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "try_fit_population_check", lambda *args, **kwargs: (None, None))
        record = training.train(folder, TrainConfig(arch="cnn5", epochs=2, image_size=32, max_films=150, seed=0),
                                directory=directory)
    return load_checkpoint(directory / f"{record.name}.json")


@pytest.fixture(scope="module")
def covid_validation(covid_model):
    from core.films.tensor import load_tensors
    from core.models.inference import probabilities_in_batches
    from core.training.calibrate import recorded_validation_split

    val_set = recorded_validation_split(covid_model.record)
    return val_set, probabilities_in_batches(covid_model.model, load_tensors(val_set, covid_model.image_size))


@pytest.mark.slow
def test_trained_three_class_point_gives_every_abnormal_class_its_target_and_a_film(covid_model, covid_validation):
    val_set, probs = covid_validation
    point = covid_model.operating_point
    classes = covid_model.classes
    normal = point.normal_index
    assert classes[normal].upper() == "NORMAL" and point.spare_films == 1
    scores = 1 - probs[:, normal]

    def every_class_has_a_film_to_spare(threshold: float) -> bool:
        """Missing one more film of any abnormal class would still reach the target (or all are flagged)."""
        for k in range(len(classes)):
            mine = scores[val_set.labels == k]
            flagged = int(np.sum(mine >= threshold))
            if k != normal and flagged < len(mine) and (flagged - 1) / len(mine) < point.target_sensitivity:
                return False
        return True

    for k, name in enumerate(classes):
        if k != normal:
            mine = scores[val_set.labels == k]
            assert point.validation_class_films[name] == len(mine) > 0
            assert point.validation_class_sensitivity[name] == pytest.approx(np.mean(mine >= point.threshold))
    assert every_class_has_a_film_to_spare(point.threshold)
    # the highest such threshold: at the next higher score some class loses its margin
    assert not every_class_has_a_film_to_spare(np.min(scores[scores > point.threshold + 1e-6]))
    again = choose_operating_point(val_set.labels, probs, classes, point.target_sensitivity)
    assert again.threshold == pytest.approx(point.threshold, abs=1e-6)
    assert again.validation_class_sensitivity == point.validation_class_sensitivity


@pytest.mark.slow
def test_trained_three_class_report(covid_model, covid_validation):
    val_set, probs = covid_validation
    report = covid_model.record.report
    point = covid_model.operating_point
    assert report.at_operating_point.flag_recall == pytest.approx(point.validation_class_sensitivity)
    assert report.at_argmax.accuracy == pytest.approx(np.mean(probs.argmax(1) == val_set.labels), abs=1e-9)
    assert set(report.class_auc) == set(covid_model.classes)
    for k, name in enumerate(covid_model.classes):
        assert report.class_auc[name] == pytest.approx(roc_auc_score(val_set.labels == k, probs[:, k]), abs=1e-6)
    assert report.auc == pytest.approx(np.mean(list(report.class_auc.values())), abs=1e-9)
    assert report.auc > 0.7  # a real, if tiny, model


@pytest.mark.slow
def test_real_films_from_two_sources(covid_model, data_dir):
    """The COVID model's normal class on the COVID set's normals and on Kermany normals, as two sources."""
    from core.films.folders import FilmSet
    from core.films.tensor import load_tensors
    from core.models.inference import probabilities_in_batches

    normal = covid_model.operating_point.normal_index
    paths = (sorted((data_dir / "covid-3class" / "train" / "Normal").iterdir())[:8]
             + sorted(require(data_dir / "kermany-224" / "train" / "NORMAL").iterdir())[:8])
    films = FilmSet(tuple(paths), np.full(16, normal), covid_model.classes)
    probs = probabilities_in_batches(covid_model.model, load_tensors(films, covid_model.image_size))
    sources = ["covid-3class"] * 8 + ["kermany-224"] * 8
    report = evaluate_probabilities(films.labels, probs, covid_model.classes, covid_model.operating_point,
                                    sources=sources)
    called = covid_model.operating_point.decide(probs) != normal
    for name, part in (("covid-3class", slice(0, 8)), ("kermany-224", slice(8, 16))):
        figures = report.by_source[name]
        assert figures.n == 8 and figures.class_counts == {covid_model.classes[normal]: 8}
        assert figures.flagged == pytest.approx(np.mean(called[part]))
        assert figures.accuracy == figures.recall[covid_model.classes[normal]] == pytest.approx(
            1 - np.mean(called[part]))
    assert report.auc is None and report.class_auc == {} and report.roc is None


@pytest.mark.slow
def test_evaluating_a_folder_of_two_of_the_three_classes(covid_model, data_dir, tmp_path):
    from core.evaluation.folder import evaluate_folder

    covid, normal = covid_model.classes[0], covid_model.classes[covid_model.operating_point.normal_index]
    for name, source in ((covid, "Covid"), (normal, "Normal")):
        (tmp_path / name).mkdir()
        for path in sorted((data_dir / "covid-3class" / "train" / source).iterdir())[-6:]:
            (tmp_path / name / path.name).symlink_to(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = evaluate_folder(covid_model, tmp_path, workers=1)
    # the set's Normal/093.jpeg and 094.jpeg are one file byte for byte, and Covid/COVID-00033.jpg and 00037.jpg one
    # film (its fine detail correlates 0.999): each counted once
    copy, again = report.skipped
    assert Path(copy.file).name == "094.jpeg" and "is a copy, byte for byte, of " in copy.error
    assert again.error == ("COVID-00037.jpg is the same film as COVID-19/COVID-00033.jpg at another size, contrast "
                           "or crop, so it is counted once.")
    assert report.n == 10 and report.auc is None and set(report.class_auc) == {covid, normal}
    assert report.class_counts == [5 if c in (covid, normal) else 0 for c in covid_model.classes]
    assert set(report.at_operating_point.flag_recall) == {covid}
    assert report.summary()["recall"].keys() == {covid, normal}
