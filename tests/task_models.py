"""Models of three and four classes for the dashboard's task tests (#14), trained once per session.

Two tiny CNNs at 32 px: a COVID-19 model on the real films of ``covid-3class/train`` (read through the alias
table: ``Covid`` -> COVID-19) and a four-class model on the shipped ``four-class`` manifest (400 of its films
drawn class by class, from three sources). That manifest reads TUBERCULOSIS from a ``tb-films`` data root a
site configures; here it links to ``shared-data/tb/train/Tuberculosis``, whose files in this environment are
noise textures, not films. So the four-class model is a stand-in for what the pages draw (its stored figures,
its classes), never a measure of anything, and every film uploaded or evaluated in the tests is a real chest
film. Tests read expected figures from each model's JSON file, not from the record the page formats.
"""
from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path
from unittest import mock

from conftest import environment
from e2e_support import SHARED_DATA, quick_checkpoints, require
from streamlit.testing.v1 import AppTest

from core.store.records import read_model_record

COVID_DIR = SHARED_DATA / "covid-3class" / "train"
KERMANY_DIR = SHARED_DATA / "kermany-224" / "train"
COVID, FOUR = "covid-cnn5-v1", "four-class-cnn5-v1"
CLASSES = {"covid": ["COVID-19", "NORMAL", "VIRAL PNEUMONIA"],
           "four-class": ["COVID-19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS"]}
MODEL_OF = {"covid": COVID, "four-class": FOUR}
TITLES = ["Pneumonia", "COVID-19", "Four classes (with tuberculosis)"]
# Real chest films, as a user would upload them.
FILMS = {"covid": [COVID_DIR / "Covid" / "01.jpeg", COVID_DIR / "Normal" / "01.jpeg",
                   COVID_DIR / "Viral Pneumonia" / "01.jpeg"],
         "four-class": [COVID_DIR / "Covid" / "01.jpeg", KERMANY_DIR / "NORMAL" / "IM-0115-0001.jpeg",
                        KERMANY_DIR / "PNEUMONIA" / "person1000_bacteria_2931.jpeg",
                        COVID_DIR / "Viral Pneumonia" / "01.jpeg"]}


def tb_films_roots(base: Path) -> Path:
    """A data-roots file naming a ``tb-films`` root whose ``Tuberculosis/`` links to the shared tb films (noise
    textures here: see the module docstring); the four-class manifest reads that class from it."""
    folder = base / "tb-films" / "Tuberculosis"
    folder.mkdir(parents=True)
    for film in sorted(require(SHARED_DATA / "tb" / "train" / "Tuberculosis", "the tb folder").iterdir()):
        (folder / film.name).symlink_to(film)
    roots = base / "roots.json"
    roots.write_text(json.dumps({"roots": {"tb-films": str(base / "tb-films")}}))
    return roots


@functools.cache
def _multi_template() -> Path:
    """The COVID-19 and four-class models, trained once per session into a template folder. Without their
    population checks (tests/test_population_check.py has those): ImageNet features of every training film
    would cost minutes here and no test of this file reads them."""
    from core.store.records import TrainConfig
    from core.training.train import train

    require(COVID_DIR, "the COVID-19 image set")
    folder, links = Path(tempfile.mkdtemp(prefix="cxr-test-tasks-")), Path(tempfile.mkdtemp(prefix="cxr-tb-"))
    for made in (folder, links):
        atexit.register(shutil.rmtree, made, ignore_errors=True)
    tiny = dict(arch="cnn5", epochs=1, image_size=32, seed=0)
    with mock.patch("core.training.train.try_fit_population_check", return_value=(None, None)):
        train(COVID_DIR, TrainConfig(**tiny, max_films=120), directory=folder)
        with environment(CXR_DATA_ROOTS=str(tb_films_roots(links))):
            train("four-class", TrainConfig(**tiny, max_films=400), directory=folder)
    return folder


def task_site(tmp_path: Path, settings_env) -> Path:
    """For a test's ``site`` fixture: the quick pneumonia models (cnn5 the default, mlp) beside the COVID-19 and four-class models."""
    folder = quick_checkpoints(tmp_path / "site")
    for path in _multi_template().iterdir():
        if path.is_file() and not path.name.startswith(".") and path.name != "registry.json":
            shutil.copy(path, folder)
    settings_env(CXR_MODELS=str(folder), CXR_JOBS=str(tmp_path / "jobs"))
    from core.store.registry import set_default
    for task, name in MODEL_OF.items():  # each the default of its task, as its first model would have become
        assert read_model_record(folder / f"{name}.json").task == task
        set_default(name, folder)
    return folder


def stored_json(folder: Path, name: str) -> dict:
    return json.loads((folder / f"{name}.json").read_text())


def choose_task(at: AppTest, task: str) -> None:
    at.sidebar.radio(key="task-choice").set_value(task)
    at.run()
    assert not at.exception


def sidebar_text(at: AppTest) -> str:
    return "\n".join([m.value for m in at.sidebar.markdown] + [c.value for c in at.sidebar.caption])
