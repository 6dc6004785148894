"""A film called the class a training set's shortcut gives is told so on its own reading, not only on the model
card (core.films.known_sets.SHORTCUT_CALLS)."""
from __future__ import annotations

import pytest
from conftest import REPO

from core.films.read import read_film
from core.serving.predict import Predictor
from core.store.checkpoints import load_checkpoint

SHIPPED = REPO / "checkpoints"
SHORTCUT = ("This model learnt COVID-19 from adults' films only, and normal and viral-pneumonia films from children's: "
            "it may call a film COVID-19 for being an adult's. Read this film yourself before acting on the call.")


@pytest.fixture(scope="module")
def covid():
    return Predictor(load_checkpoint(SHIPPED / "covid-efficientnet_lite0-v1.json"))


def test_an_adult_film_called_covid_19_says_the_shortcut_on_its_reading(covid, dicom_dir):
    """A browser review: an adult's DICOM of 2004 read "Urgent, COVID-19 71 %" with no warning on its card; the
    shortcut was said only on the model card in the sidebar."""
    reading = covid.predict(read_film(dicom_dir / "RG1_UNCI.dcm"))
    assert (reading.label, reading.priority) == ("COVID-19", "urgent")
    assert SHORTCUT in reading.doubts and SHORTCUT in reading.warnings and reading.atypical


def test_a_film_called_another_class_or_a_model_without_the_shortcut_says_nothing_of_it(covid, normal_film_path):
    reading = covid.predict(read_film(normal_film_path))
    assert reading.label != "COVID-19" and SHORTCUT not in reading.warnings
    pneumonia = Predictor(load_checkpoint(SHIPPED / "pneumonia-cnn5-v1.json"))
    assert pneumonia.shortcut_calls == {} and covid.shortcut_calls == {"COVID-19": SHORTCUT}
