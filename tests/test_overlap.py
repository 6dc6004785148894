"""Whether an evaluation reads films a model learned from (core/evaluation/overlap.py), on the shipped models'
own records and the real folders beside the checkout."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.evaluation.overlap import trained_on, training_folders
from core.store.records import read_model_record

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"


@pytest.fixture(scope="module")
def pneumonia():
    return read_model_record(SHIPPED / "pneumonia-mlp-v1.json")  # trained on ../shared/data/kermany-224/train


def test_a_shipped_model_learned_from_its_training_folder_and_nothing_beside_it(pneumonia, data_dir, settings_env):
    settings_env(CXR_DATA=str(data_dir))
    assert training_folders(pneumonia) == [(data_dir / "kermany-224" / "train").resolve()]
    assert trained_on(pneumonia, data_dir / "kermany-224" / "train")
    assert trained_on(pneumonia, data_dir / "kermany-224" / "train" / "NORMAL")  # a part of it
    assert not trained_on(pneumonia, data_dir / "films")  # the 16 full-resolution films: never trained on
    assert not trained_on(pneumonia, data_dir / "covid-3class" / "train")
    covid = read_model_record(SHIPPED / "covid-efficientnet_lite0-v1.json")
    assert trained_on(covid, data_dir / "covid-3class" / "train")
    assert not trained_on(covid, data_dir / "kermany-224" / "train")


def test_a_tree_with_splits_is_read_at_its_test_split_and_a_manifest_by_its_folders(pneumonia, data_dir, tmp_path,
                                                                                       settings_env):
    settings_env(CXR_DATA=str(data_dir), XDG_CONFIG_HOME=str(tmp_path / "config"))
    tree = tmp_path / "kaggle"
    for split in ("train", "test"):
        (tree / split / "NORMAL").mkdir(parents=True)
    trained_here = pneumonia.model_copy(update={"training": pneumonia.training.model_copy(
        update={"data_dir": str(tree)})})
    assert training_folders(trained_here) == [(tree / "train").resolve()]
    assert not trained_on(trained_here, tree)  # evaluating the tree reads test/, which training never read
    assert trained_on(trained_here, tree, split="train")
    four = pneumonia.model_copy(update={"training": pneumonia.training.model_copy(update={"data_dir": "four-class"})})
    folders = training_folders(four)  # its folders inside the data roots; tb-films is not configured here
    assert (data_dir / "kermany-224" / "train" / "PNEUMONIA").resolve() in folders
    assert trained_on(four, data_dir / "kermany-224" / "train") and not trained_on(four, data_dir / "films")
    gone = pneumonia.model_copy(update={"training": pneumonia.training.model_copy(
        update={"data_dir": str(tmp_path / "moved-away")})})
    assert training_folders(gone) == [] and not trained_on(gone, data_dir / "films")


def test_a_site_calibrated_version_evaluated_on_its_calibration_folder_is_said_so(pneumonia, data_dir, tmp_path,
                                                                                  settings_env):
    """Compare showed a site-calibrated version's figures on the very films its threshold was chosen on."""
    import json

    from core.evaluation.overlap import calibrated_on, overlap_notes
    from core.store.records import Calibration

    site = tmp_path / "site-root" / "ward"
    for label in ("NORMAL", "PNEUMONIA"):
        (site / label).mkdir(parents=True)
    (tmp_path / "roots.json").write_text(json.dumps({"roots": {"ward-7": str(tmp_path / "site-root")}}))
    settings_env(CXR_DATA=str(data_dir), CXR_DATA_ROOTS=str(tmp_path / "roots.json"))
    calibration = {"from": "pneumonia-mlp-v1", "target_sensitivity": 0.95, "source": "site folder",
                   "folder": "ward-7/ward"}
    calibrated = pneumonia.model_copy(update={"calibration": Calibration(**calibration)})
    assert calibrated_on(calibrated, site) and calibrated_on(calibrated, site / "NORMAL")
    assert not calibrated_on(calibrated, data_dir / "films") and not calibrated_on(pneumonia, site)
    on_validation = Calibration(**{**calibration, "source": "validation", "folder": None})
    assert not calibrated_on(pneumonia.model_copy(update={"calibration": on_validation}), site)
    # a folder of links to the site films reads them too (a review: only trained_on followed links)
    (site / "NORMAL" / "a.png").write_bytes(b"")
    folders, films = tmp_path / "site-root" / "eval", tmp_path / "site-root" / "bed"
    folders.mkdir()
    for label in ("NORMAL", "PNEUMONIA"):
        (folders / label).symlink_to(site / label)
        (films / label).mkdir(parents=True)
    (films / "NORMAL" / "a.png").symlink_to(site / "NORMAL" / "a.png")
    assert calibrated_on(calibrated, folders) and calibrated_on(calibrated, films)
    assert any("threshold chosen on films in this folder" in note for note in overlap_notes(calibrated, folders))


def test_a_folder_of_links_to_the_training_films_is_a_folder_the_model_learned_from(pneumonia, data_dir, tmp_path,
                                                                                     settings_env):
    """Found by a review: a site folder whose class folders (or films) are links into the training folder read
    the films the model learned from, with no warning: only the folder's own place was compared."""
    settings_env(CXR_DATA=str(data_dir))
    train = data_dir / "kermany-224" / "train"
    linked_folders, linked_films, real = tmp_path / "ward", tmp_path / "bed", tmp_path / "own"
    linked_folders.mkdir()
    for cls in ("NORMAL", "PNEUMONIA"):
        (linked_folders / cls).symlink_to(train / cls)
        (linked_films / cls).mkdir(parents=True)
        (real / cls).mkdir(parents=True)
        film = sorted((train / cls).iterdir())[0]
        (linked_films / cls / "a.jpeg").symlink_to(film)
        (real / cls / "a.jpeg").symlink_to(sorted((data_dir / "films" / cls).iterdir())[0])  # never trained on
    assert trained_on(pneumonia, linked_folders) and trained_on(pneumonia, linked_films)
    assert not trained_on(pneumonia, real)


def test_the_shared_films_moved_by_cxr_data_are_still_the_ones_the_shipped_models_learned_from(pneumonia, data_dir,
                                                                                                tmp_path, settings_env):
    """The records say ../shared/data/...; with the films copied elsewhere and CXR_DATA pointing there, the copy of
    the training folder read as one the models never saw (a review: near-perfect figures, no word)."""
    moved = tmp_path / "srv-cxr"
    (moved / "kermany-224" / "train" / "NORMAL").mkdir(parents=True)
    source = next((data_dir / "kermany-224" / "train" / "NORMAL").iterdir())
    (moved / "kermany-224" / "train" / "NORMAL" / source.name).write_bytes(source.read_bytes())  # a copy, not a link
    settings_env(CXR_DATA=str(moved))
    assert training_folders(pneumonia) == [(moved / "kermany-224" / "train").resolve()]
    assert trained_on(pneumonia, moved / "kermany-224" / "train")
